from data import *
import json
k=gsm8k(); te=[x for x in k if x['split']=='test']
gold={json.loads(l)['question']:json.loads(l)['answer'] for l in open(f'{R}/gsm8k/test.jsonl')}
hit=[x for x in te if x['prompt'] in gold]; print(len(hit),len(te))
w=[x['w'] for x in hit]; s=[x['s'] for x in hit]
print('true steps', apgr([gold[x['prompt']].count('<<') for x in hit],w,s))
print('true lines', apgr([len(gold[x['prompt']].split('\n')) for x in hit],w,s))
print('true anslen', apgr([len(gold[x['prompt']]) for x in hit],w,s))
print('len', apgr([len(x['prompt']) for x in hit],w,s))
