from data import *
import collections
D=f'{R}/mt_bench'
bad=set(json.loads(l)['eval_prompt'].strip() for l in open(f'{D}/contaminated_prompts.jsonl'))
qs={}
for l in open(f'{D}/question.jsonl'):
    j=json.loads(l)
    if j['turns'][0].strip() in bad: continue
    qs[j['question_id']]=j
sc=collections.defaultdict(lambda: collections.defaultdict(list))
for l in open(f'{D}/judgements.jsonl'):
    j=json.loads(l)
    if j['question_id'] in qs and j['score']>=0: sc[j['question_id']][j['model']].append(j['score'])
ids=sorted(qs); W=[np.mean(sc[i]['mistralai/Mixtral-8x7B-Instruct-v0.1'])/10 for i in ids]; S=[np.mean(sc[i]['gpt-4-1106-preview'])/10 for i in ids]
print(len(ids), np.mean(W), np.mean(S))
cat=[qs[i]['category'] for i in ids]
g=collections.defaultdict(list)
for c,w,s in zip(cat,W,S): g[c].append(s-w)
print({c:(len(v),round(np.mean(v),3)) for c,v in g.items()})
print('category oracle prior', apgr([np.mean(g[c]) for c in cat],W,S))
hard={'math':2,'reasoning':2,'coding':2,'stem':1,'extraction':1}
print('hand prior', apgr([hard.get(c,0) for c in cat],W,S))
print('len', apgr([len(qs[i]['turns'][0]) for i in ids],W,S))
print('oracle', apgr(np.array(S)-np.array(W),W,S))
