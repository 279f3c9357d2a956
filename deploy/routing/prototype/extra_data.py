from data import *
import sys
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize
import scipy.sparse as sp
def lex(ps):
    f=[]
    for p in ps:
        n=max(len(p),1)
        f.append([np.log1p(len(p))/10,np.log1p(len(p.split()))/10,sum(c.isdigit() for c in p)/n,sum(c.isupper() for c in p)/n,sum(c in '=+-*/^<>%' for c in p)/n,sum(c in '{}[]();`' for c in p)/n,np.log1p(p.count('\n'))/5,np.log1p(p.count('?')),float('```' in p or 'def ' in p or 'fn ' in p)])
    return sp.csr_matrix(np.array(f))
def fe(P,Pt,bits=18,mindf=2,lexw=1.0):
    hv=HashingVectorizer(ngram_range=(1,2),n_features=2**bits,alternate_sign=False,norm=None)
    X=hv.transform(P); Xt=hv.transform(Pt)
    df=np.asarray((X>0).sum(0)).ravel(); n=X.shape[0]
    idf=np.log((1+n)/(1+df))+1; idf[df<mindf]=0; D=sp.diags(idf)
    def t(A):
        A=A.tocsr().astype(float); A.data=1+np.log(A.data); return normalize(A@D)
    return sp.hstack([t(X),lexw*lex(P)]).tocsr(), sp.hstack([t(Xt),lexw*lex(Pt)]).tocsr()
def soft_fit(X,y,C):
    # soft targets via sample duplication with weights
    n=X.shape[0]; XX=sp.vstack([X,X]); yy=np.r_[np.ones(n),np.zeros(n)]; sw=np.r_[y,1-y]
    return LogisticRegression(C=C,max_iter=3000).fit(XX,yy,sample_weight=sw)
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
