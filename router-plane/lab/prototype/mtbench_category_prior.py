from data import *
import collections
# MT-Bench items (first turn; each model's mean judge score / 10), as data.mtbench() loads them.
items=mtbench()
W=[x['w'] for x in items]; S=[x['s'] for x in items]; cat=[x['subj'] for x in items]
print(len(items), np.mean(W), np.mean(S))
g=collections.defaultdict(list)
for c,w,s in zip(cat,W,S): g[c].append(s-w)
print({c:(len(v),round(np.mean(v),3)) for c,v in g.items()})
print('category oracle prior', apgr([np.mean(g[c]) for c in cat],W,S))
hard={'math':2,'reasoning':2,'coding':2,'stem':1,'extraction':1}
print('hand prior', apgr([hard.get(c,0) for c in cat],W,S))
print('len', apgr([len(x['prompt']) for x in items],W,S))
print('oracle', apgr(np.array(S)-np.array(W),W,S))
