"""Success within 2.5 cm against the goal's start distance, per condition, from `jepa eval` reports.

    python research/ablations/success_vs_distance.py REPORT.json [REPORT.json ...] --out success_vs_distance.png
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

EDGES_M = np.array([0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.40])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('reports', nargs='+', type=Path)
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args()
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    centres = (EDGES_M[:-1] + EDGES_M[1:]) / 2 * 100
    for path in args.reports:
        for task, report in json.loads(path.read_text())['tasks'].items():
            for condition, result in report['conditions'].items():
                episodes = result['per_episode']
                start = np.array([e['start_distance_m'] for e in episodes])
                success = np.array([e['success'] for e in episodes], dtype=float)
                bins = np.digitize(start, EDGES_M) - 1
                rates = [success[bins == b].mean() if np.any(bins == b) else np.nan for b in range(len(centres))]
                counts = [int(np.sum(bins == b)) for b in range(len(centres))]
                label = f'{task} {condition} ({path.stem})'
                ax.plot(centres, np.array(rates) * 100, marker='o', label=label)
                print(f'{label}: ' + ', '.join(f'{EDGES_M[b] * 100:.0f}-{EDGES_M[b + 1] * 100:.0f} cm '
                                               f'{rates[b]:.0%} of {counts[b]}' for b in range(len(centres))
                                               if counts[b]))
    ax.set_xlabel('goal distance at the start (cm)')
    ax.set_ylabel('success within 2.5 cm (%)')
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
