from features import *
import sys
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import KFold
bench=sys.argv[1]
m=mmlu() if bench=='mmlu' else (gsm8k() if bench=='gsm8k' else mmlu()+gsm8k())
tr=[x for x in m if x['split']!='test']
tests={'mmlu':[x for x in mmlu() if x['split']=='test'],'gsm8k':[x for x in gsm8k() if x['split']=='test']}
def feats(cfg,P,Pt):
    bits,mindf,ng=cfg
    if bits==0:
        vec=TfidfVectorizer(ngram_range=(1,ng),min_df=mindf,sublinear_tf=True); return vec.fit_transform(P),vec.transform(Pt)
    return ngrams(P,Pt,bits,mindf,ng)
def run(cfg,trn,tst,C):
    X,Xt=feats(cfg,[x['prompt'] for x in trn],[x['prompt'] for x in tst])
    w=np.array([x['w'] for x in trn]); s=np.array([x['s'] for x in trn])
    hw=LogisticRegression(C=C,max_iter=3000).fit(X,w); hs=LogisticRegression(C=C,max_iter=3000).fit(X,s)
    return hs.predict_proba(Xt)[:,1]-hw.predict_proba(Xt)[:,1]
cfgs=[(0,2,2),(14,2,2),(16,2,2),(18,2,2),(18,1,2),(18,3,2),(18,2,1),(18,2,3)]
for cfg in cfgs:
  for C in [0.3]:
    kf=KFold(5,shuffle=True,random_state=0); cv=[]
    for a,b in kf.split(np.arange(len(tr))):
        tb=[tr[i] for i in b]; cv.append(apgr(run(cfg,[tr[i] for i in a],tb,C),[x['w'] for x in tb],[x['s'] for x in tb]))
    line=f'{bench} {cfg} C={C} CV {np.mean(cv):.4f}'
    for name,te in tests.items():
        if bench in (name,'both'):
            line+=f' TEST[{name}] {apgr(run(cfg,tr,te,C),[x["w"] for x in te],[x["s"] for x in te]):.4f}'
    print(line,flush=True)
