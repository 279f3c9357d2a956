from data import *
from features import *
import collections
from sklearn.model_selection import KFold
m=mmlu(); k=gsm8k()
tr=[x for x in m+k if x['split']!='test']
tests={'mmlu':[x for x in m if x['split']=='test'],'gsm8k':[x for x in k if x['split']=='test']}
def run(trn,tst,beta,C=0.3):
    X,Xt=fe([x['prompt'] for x in trn],[x['prompt'] for x in tst])
    hw=soft_fit(X,np.array([x['w'] for x in trn]),C); hs=soft_fit(X,np.array([x['s'] for x in trn]),C)
    heads=hs.predict_proba(Xt)[:,1]-hw.predict_proba(Xt)[:,1]
    nb=2**18
    subs=sorted(set(x['subj'] for x in trn)); si={s:i for i,s in enumerate(subs)}
    Y=sp.csr_matrix((np.ones(len(trn)),([si[x['subj']] for x in trn],np.arange(len(trn)))),shape=(len(subs),len(trn)))
    Cen=normalize(Y@X[:,:nb]); sim=(Xt[:,:nb]@Cen.T).toarray()
    g=collections.defaultdict(list)
    for x in trn: g[x['subj']].append(x['s']-x['w'])
    pv=np.array([np.mean(g[s]) for s in subs])
    out={'heads':heads}
    for b in beta:
        P=np.exp(b*(sim-sim.max(1,keepdims=True))); P/=P.sum(1,keepdims=True)
        src=P@pv; out[f'src{b}']=src
        out[f'mix{b}']=0.5*src/src.std()+0.5*heads/heads.std()
        out[f'add{b}']=src+heads
    return out
B=[10,30,100]
res=collections.defaultdict(list)
for a,b in KFold(5,shuffle=True,random_state=0).split(np.arange(len(tr))):
    tb=[tr[i] for i in b]; o=run([tr[i] for i in a],tb,B)
    for kk,v in o.items(): res[kk].append(apgr(v,[x['w'] for x in tb],[x['s'] for x in tb]))
for kk,v in res.items(): print('CV',kk,round(np.mean(v),4))
for name,te in tests.items():
    o=run(tr,te,B)
    print(name,{kk:round(apgr(v,[x['w'] for x in te],[x['s'] for x in te]),4) for kk,v in o.items()})
