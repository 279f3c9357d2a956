from data import *
from features import *
rows=list(csv.DictReader(open(f'{R}/gsm8k/gsm8k_responses.csv')))
bad=contaminated('gsm8k')
it=[]
for r in rows:
    p=r['prompt']
    if p in bad: continue
    it.append(dict(prompt=p,resp=r['mistralai/Mixtral-8x7B-Instruct-v0.1_response'],w=float(r['mistralai/Mixtral-8x7B-Instruct-v0.1']=='True'),s=float(r['gpt-4-1106-preview']=='True'),split=split(p)))
tr=[x for x in it if x['split']!='test']; te=[x for x in it if x['split']=='test']
print(repr(tr[0]['resp'][:600]))
W=[x['w'] for x in te]; S=[x['s'] for x in te]
print('resp len', apgr([len(x['resp']) for x in te],W,S))
for C in [0.1,0.3,1,3]:
    X,Xt=fe([x['resp'] for x in tr],[x['resp'] for x in te])
    h=soft_fit(X,np.array([x['w'] for x in tr]),C)
    pc=h.predict_proba(Xt)[:,1]
    from sklearn.metrics import roc_auc_score
    print(C,'verifier APGR', round(apgr(-pc,W,S),4), 'AUROC', round(roc_auc_score(W,pc),3))
