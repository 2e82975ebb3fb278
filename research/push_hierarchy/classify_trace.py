"""Sort trace_push.py's episodes into outcomes: success (< 2.5 cm at the end), untouched (the cube never moved
3 mm closer or farther), pushed away (ended > 1 cm farther than it started), reached 2.5 cm then left (closest
< 2.5 cm, end not), stalled short (ended 2.5-8 cm away, still over the last 2 s), other."""
import json
import sys
from collections import Counter

from jepa_bringup.episodes import push_outcome


def outcome(e):
    return push_outcome(e['start'], e['end'], e['min'], e['last_2s_change'])


episodes = [e for path in sys.argv[1:] for e in json.load(open(path))['summary']]
counts = Counter(outcome(e) for e in episodes)
print(f'{len(episodes)} episodes:', ', '.join(f'{k} {v}' for k, v in counts.most_common()))
