"""Sort trace_push.py's episodes into outcomes: success (< 2.5 cm at the end), untouched (the cube never moved
3 mm closer or farther), pushed away (ended > 1 cm farther than it started), reached 2.5 cm then left (closest
< 2.5 cm, end not), stalled short (ended 2.5-8 cm away, still over the last 2 s), other."""
import json
import sys
from collections import Counter


def outcome(e):
    if e['end'] < 0.025:
        return 'success'
    if abs(e['end'] - e['start']) < 0.003 and e['min'] > e['start'] - 0.003:
        return 'untouched'
    if e['end'] > e['start'] + 0.01:
        return 'pushed away'
    if e['min'] < 0.025:
        return 'reached 2.5 cm, then left'
    if e['end'] < 0.08 and abs(e['last_2s_change']) < 0.005:
        return 'stalled short'
    return 'other'


episodes = [e for path in sys.argv[1:] for e in json.load(open(path))['summary']]
counts = Counter(outcome(e) for e in episodes)
print(f'{len(episodes)} episodes:', ', '.join(f'{k} {v}' for k, v in counts.most_common()))
