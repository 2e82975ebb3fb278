"""Outcomes of eval_library.py reports by condition: success / within 5 cm / mean final, the §13 classes (as
classify_trace.py: success, untouched, pushed away, reached 2.5 cm then left, stalled short, other) from the recorded
cube-to-goal distances, and the successful seeds.   classify_eval.py results/X.json [...]"""
import json
import sys
from collections import Counter

from jepa_bringup.episodes import push_outcome


def outcome(e):
    return push_outcome(e['trace_start'], e['trace_end'], e['trace_min'], e['last_2s_change'])


for path in sys.argv[1:]:
    d=json.load(open(path))
    for n in d:
        per=d[n]['per_episode']
        print(path, n, 'success', sum(e['success'] for e in per), '/', len(per), '<5cm', sum(e['final_distance_m']<0.05 for e in per),
              'mean %.3f' % (sum(e['final_distance_m'] for e in per)/len(per)), dict(Counter(outcome(e) for e in per).most_common()),
              'plan p50 med %.0f' % sorted(e['plan_ms_p50'] for e in per)[len(per)//2])
        print('   success seeds', [e['seed'] for e in per if e['success']])
