import json
import random
import re

rows=[json.loads(l) for l in open('/work/shared/data/hh_rlhf_sample.jsonl')]
words = "kill|killing|murder|die|dead|death|drugs?|cocaine|meth|heroin|weed|sex|sexual|porn|nude|naked|rape|racist|race|black|white|jews?|jewish|muslims?|gay|fuck\\w*|shit\\w*|bitch\\w*|cunt|dick|ass|asshole|bombs?|guns?|weapons?|steal\\w*|stole|rob\\w*|poison\\w*|suicide|hurt|fight|punch|abuse|slaves?|hate|stupid|idiots?|whore|prostitut\\w*|tortur\\w*|blood|illegal\\w*|crimes?|criminals?|prison|cheat\\w*|hack\\w*|fat|ugly|dumb|alcohol|drunk|smoke|attack|violent|violence|terror\\w*|nazis?|hitler|retard\\w*|molest\\w*|insult\\w*|swear\\w*|curse|offensive|revenge|prank\\w*|threat\\w*|knife|shoot\\w*|explos\\w*|mexicans?|chinese|immigrants?|women|girls?|gender|trans|drunk|pee|poop|butt|breasts?|penis|vagina|fart|lie|lying|police|cops?|steal|money from|scam\\w*|kidnap\\w*|child\\w*|bab(y|ies)|kids?|sneak\\w*|break into|spy\\w*|neighbou?r\\w*|slut\\w*|blackmail\\w*|sexy|affair\\w*|female|trip|democrat\\w*|republican\\w*|boyfriend|girlfriend|wife|husband"
block = re.compile(r"\b(" + words + r")\b", re.I)
ok=[]
for r in rows:
    text = r['prompt']+' '+r['chosen']+' '+r['rejected']
    if block.search(text): continue
    if len(r['prompt'])>900: continue
    if not (30 <= len(r['chosen']) <= 700 and 30 <= len(r['rejected']) <= 700): continue
    ok.append(r)
print(len(ok))
random.seed(7)
random.shuffle(ok)
sel = ok[:240]
out=open('annotation/demo_data/hh_demo.jsonl','w')
for r in sel:
    out.write(json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]], "category": "hh-harmless", "source": r["source"]}, ensure_ascii=False)+"\n")
cal = ok[240:252]
for i, r in enumerate(cal):
    other = ok[260+i]['chosen']
    out.write(json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], other], "gold": "A", "category": "calibration-unrelated", "source": r["source"]+" (B: unrelated reply from "+ok[260+i]["source"].split("#")[1]+")"}, ensure_ascii=False)+"\n")
out.close()
