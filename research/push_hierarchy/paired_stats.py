"""Paired comparison of two conditions on the same seeds: how often B ends nearer than A, the mean difference of
final distance with a bootstrap 90 % interval over seeds, success / within-5-cm counts, and the seeds where only one
of the two succeeded (won / lost by B) with a two-sided sign test on them.
    paired_stats.py A_NAME B_NAME results/X.json [...]       conditions of eval_library.py reports
    paired_stats.py --graph A.json:COND B.json:COND          conditions of `jepa eval` reports (task push)"""
import json
import sys
from math import comb

import numpy as np


def library_finals(name: str, path: str) -> dict:
    return {e['seed']: e['final_distance_m'] for e in json.load(open(path))[name]['per_episode']}


def graph_finals(spec: str) -> dict:
    path, _, condition = spec.rpartition(':')
    report = json.load(open(path))['tasks']['push']['conditions'][condition]
    return {e['seed']: e['final_distance_m'] for e in report['per_episode']}


if sys.argv[1] == '--graph':
    pairs = [(graph_finals(sys.argv[2]), graph_finals(sys.argv[3]))]
else:
    pairs = [(library_finals(sys.argv[1], path), library_finals(sys.argv[2], path)) for path in sys.argv[3:]]
a = np.array([fa[s] for fa, fb in pairs for s in sorted(set(fa) & set(fb))])
b = np.array([fb[s] for fa, fb in pairs for s in sorted(set(fa) & set(fb))])
diff = b - a
rng = np.random.default_rng(0)
boot = np.array([diff[rng.integers(len(diff), size=len(diff))].mean() for _ in range(10000)])
print(f'{len(a)} seeds: B nearer in {(diff < -0.005).sum()}, A nearer in {(diff > 0.005).sum()} (>5 mm); '
      f'mean B - A {diff.mean() * 100:+.1f} cm, 90 % bootstrap [{np.quantile(boot, .05) * 100:+.1f}, '
      f'{np.quantile(boot, .95) * 100:+.1f}] cm; success A {(a < .025).sum()} B {(b < .025).sum()}; '
      f'within 5 cm A {(a < .05).sum()} B {(b < .05).sum()}')
won, lost = int(((b < .025) & (a >= .025)).sum()), int(((a < .025) & (b >= .025)).sum())
tail = sum(comb(won + lost, i) for i in range(min(won, lost) + 1)) / 2 ** (won + lost)
print(f'success: B alone on {won} seeds, A alone on {lost} (two-sided sign test p = {min(1.0, 2 * tail):.3f})')
