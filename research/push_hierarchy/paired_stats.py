"""Paired comparison of two conditions of eval_library.py reports on the same seeds: how often B ends nearer than A,
the mean difference of final distance with a bootstrap 90 % interval over seeds, and success / within-5-cm counts.
    paired_stats.py A_NAME B_NAME results/X.json [...]"""
import json
import sys

import numpy as np

a_name, b_name, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
a, b = [], []
for path in paths:
    d = json.load(open(path))
    fa = {e['seed']: e['final_distance_m'] for e in d[a_name]['per_episode']}
    fb = {e['seed']: e['final_distance_m'] for e in d[b_name]['per_episode']}
    for s in sorted(set(fa) & set(fb)):
        a.append(fa[s])
        b.append(fb[s])
a, b = np.array(a), np.array(b)
diff = b - a
rng = np.random.default_rng(0)
boot = np.array([diff[rng.integers(len(diff), size=len(diff))].mean() for _ in range(10000)])
print(f'{len(a)} seeds: B nearer in {(diff < -0.005).sum()}, A nearer in {(diff > 0.005).sum()} (>5 mm); '
      f'mean B - A {diff.mean() * 100:+.1f} cm, 90 % bootstrap [{np.quantile(boot, .05) * 100:+.1f}, '
      f'{np.quantile(boot, .95) * 100:+.1f}] cm; success A {(a < .025).sum()} B {(b < .025).sum()}; '
      f'within 5 cm A {(a < .05).sum()} B {(b < .05).sum()}')
