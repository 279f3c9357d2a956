# Python counterpart of the v2 features (hashed n-grams, sub-linear tf x idf, n-grams in
# fewer than `mindf` training prompts dropped, plus the dense lexical signals) and a
# soft-target logistic regression, shared by the prototypes.
from data import *
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
def ngrams(P,Pt,bits=18,mindf=2,ng=2):
    """Hashed 1..ng-grams of train prompts P and test prompts Pt, idf fitted on P."""
    hv=HashingVectorizer(ngram_range=(1,ng),n_features=2**bits,alternate_sign=False,norm=None)
    X=hv.transform(P); Xt=hv.transform(Pt)
    df=np.asarray((X>0).sum(0)).ravel(); n=X.shape[0]
    idf=np.log((1+n)/(1+df))+1; idf[df<mindf]=0; D=sp.diags(idf)
    def t(A):
        A=A.tocsr().astype(float); A.data=1+np.log(A.data); return normalize(A@D)
    return t(X),t(Xt)
def fe(P,Pt,bits=18,mindf=2,lexw=1.0):
    X,Xt=ngrams(P,Pt,bits,mindf)
    return sp.hstack([X,lexw*lex(P)]).tocsr(), sp.hstack([Xt,lexw*lex(Pt)]).tocsr()
def soft_fit(X,y,C):
    # soft targets via sample duplication with weights
    n=X.shape[0]; XX=sp.vstack([X,X]); yy=np.r_[np.ones(n),np.zeros(n)]; sw=np.r_[y,1-y]
    return LogisticRegression(C=C,max_iter=3000).fit(XX,yy,sample_weight=sw)
