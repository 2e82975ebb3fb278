"""Diagnostic: cube-to-goal distance over each push episode (privileged, never on the decision path): the closest
the cube came, where it ended, and how much it moved in the last 2 s (still progressing at the time limit?).
Same arguments as `python -m jepa_bringup.sim_episodes`; writes --trace FILE (JSON)."""
import json
import sys

import numpy as np

from jepa_bringup import sim_episodes
from jepa_bringup.sim_episodes import SimWorkbench

trace_path = sys.argv[sys.argv.index('--trace') + 1]
del sys.argv[sys.argv.index('--trace'):sys.argv.index('--trace') + 2]
episodes, current = [], None
original_start, original_advance = SimWorkbench.start_episode, SimWorkbench.advance


def start_episode(self, task, seed):
    global current
    current = None   # the reset's own settling steps are not the episode's
    goal, latent = original_start(self, task, seed)
    current = {'seed': seed, 'goal': goal.target[:2].tolist(), 'cube': [], 'ee': []}
    episodes.append(current)
    return goal, latent


def advance(self, seconds):
    original_advance(self, seconds)
    if seconds > 0 and current is not None:
        current['cube'].append(np.asarray(self.cube[:2]).round(4).tolist())
        current['ee'].append(np.asarray(self.ee).round(4).tolist())


SimWorkbench.start_episode, SimWorkbench.advance = start_episode, advance
code = sim_episodes.main()
summary = []
for e in episodes:
    d = np.linalg.norm(np.array(e['cube']) - e['goal'], axis=1)
    tail = min(20, len(d) - 1)
    summary.append({'seed': e['seed'], 'start': round(float(d[0]), 3), 'min': round(float(d.min()), 3),
                    'min_at_s': round(float(d.argmin()) * 0.1, 1), 'end': round(float(d[-1]), 3),
                    'last_2s_change': round(float(d[-1] - d[-1 - tail]), 3), 'steps': len(d)})
    print(summary[-1])
json.dump({'summary': summary, 'episodes': episodes}, open(trace_path, 'w'))
sys.exit(code)
