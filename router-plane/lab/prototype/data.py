import csv, glob, json, hashlib, os, re
import numpy as np
csv.field_size_limit(10**9)
import os
DATA=os.environ.get('SWITCHBACK_ROUTING_DATA', os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../../../shared/data/routing'))
R=f'{DATA}/routellm'
def split(p):
    b=hashlib.sha256(p.encode()).digest()[0]%10
    return 'train' if b<2 else ('cal' if b==2 else 'test')
def contaminated(d):
    s=set()
    for l in open(f'{R}/{d}/contaminated_prompts.jsonl'):
        j=json.loads(l); s.add(j.get('eval_prompt') or j.get('prompt') or '')
    return s
def mmlu():
    bad=contaminated('mmlu'); out=[]
    for f in sorted(glob.glob(f'{R}/mmlu/responses/*.csv')):
        subj=os.path.basename(f)[5:-4]
        for r in csv.DictReader(open(f)):
            p=r['prompt']
            if p in bad: continue
            out.append(dict(prompt=p,subj=subj,w=float(r['mistralai/Mixtral-8x7B-Instruct-v0.1']=='True'),s=float(r['gpt-4-1106-preview']=='True'),split=split(p)))
    return out
def gsm8k():
    bad=contaminated('gsm8k'); out=[]
    for r in csv.DictReader(open(f'{R}/gsm8k/gsm8k_responses.csv')):
        p=r['prompt']
        if p in bad: continue
        out.append(dict(prompt=p,subj='gsm8k',w=float(r['mistralai/Mixtral-8x7B-Instruct-v0.1']=='True'),s=float(r['gpt-4-1106-preview']=='True'),split=split(p)))
    return out
def apgr(score, w, s):
    # trapezoid over distinct thresholds; items with score above threshold go to strong
    score=np.asarray(score,float); w=np.asarray(w,float); s=np.asarray(s,float)
    n=len(score); rw=w.mean(); rs=s.mean()
    order=np.argsort(-score,kind='stable'); sc=score[order]; g=(s-w)[order]
    cg=np.concatenate([[0],np.cumsum(g)])
    # group boundaries
    idx=[0]+[i for i in range(1,n) if sc[i]!=sc[i-1]]+[n]
    cs=np.array(idx)/n; q=rw+cg[idx]/n
    pgr=(q-rw)/(rs-rw)
    return np.trapezoid(pgr,cs)
def dcrouter():
    out=[]
    for part in ['train','test']:
        for x in json.load(open(f'{DATA}/llmrouter/data/dcrouter_preprocessed/{part}.json')):
            p=x['question']; sc=x['scores']
            out.append(dict(prompt=p,subj='dc',w=sc['mistral-7b-instruct-v0.3'],s=sc['llama-3.1-nemotron-51b-instruct'],split=split(p)))
    return out
def arena():
    by={}
    import glob
    for f in glob.glob(f'{DATA}/routerarena/cached_results/*.jsonl'):
        m='w' if 'haiku' in f else 's'
        for l in open(f):
            if not l.strip(): continue
            v=json.loads(l); sc=(v.get('evaluation_result') or {}).get('score')
            if sc is None: continue
            it=by.setdefault(v['global_index'],dict(prompt=v['question'],subj='arena',split=split(v['question'])))
            it[m]=min(max(float(sc),0),1)
    return [x for x in by.values() if 'w' in x and 's' in x]
def mtbench():
    D=f'{R}/mt_bench'
    bad=set(json.loads(l)['eval_prompt'].strip() for l in open(f'{D}/contaminated_prompts.jsonl'))
    import collections
    qs={}
    for l in open(f'{D}/question.jsonl'):
        j=json.loads(l)
        if j['turns'][0].strip() in bad: continue
        qs[j['question_id']]=j
    sc=collections.defaultdict(lambda: collections.defaultdict(list))
    for l in open(f'{D}/judgements.jsonl'):
        j=json.loads(l)
        if j['question_id'] in qs and j['score']>=0: sc[j['question_id']][j['model']].append(j['score'])
    return [dict(prompt=qs[i]['turns'][0],subj=qs[i]['category'],w=np.mean(sc[i]['mistralai/Mixtral-8x7B-Instruct-v0.1'])/10,s=np.mean(sc[i]['gpt-4-1106-preview'])/10,split='test') for i in sorted(qs)]
