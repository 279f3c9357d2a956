from features import *
import sys
sets={'mmlu':mmlu(),'gsm8k':gsm8k(),'dc':dcrouter(),'arena':arena()}
for k,v in sets.items(): print(k,len(v),np.mean([x['w'] for x in v]),np.mean([x['s'] for x in v]))
tests={'mmlu':[x for x in sets['mmlu'] if x['split']=='test'],'gsm8k':[x for x in sets['gsm8k'] if x['split']=='test'],'mt':mtbench()}
for combo in sys.argv[1:]:
    trn=[x for k in combo.split('+') for x in sets[k] if x['split']!='test']
    C=0.3
    X,_=fe([x['prompt'] for x in trn],['x'])
    line=f'{combo} n={len(trn)}'
    P=[x['prompt'] for x in trn]
    for name,te in tests.items():
        X,Xt=fe(P,[x['prompt'] for x in te])
        hw=soft_fit(X,np.array([x['w'] for x in trn]),C); hs=soft_fit(X,np.array([x['s'] for x in trn]),C)
        sc=hs.predict_proba(Xt)[:,1]-hw.predict_proba(Xt)[:,1]
        line+=f' {name} {apgr(sc,[x["w"] for x in te],[x["s"] for x in te]):.4f}'
    print(line,flush=True)
