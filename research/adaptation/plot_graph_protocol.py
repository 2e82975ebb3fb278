"""Success per episode of `jepa eval --perturb NAME --perturb-from K` runs through the graph, one row per run, with
the perturbation's start and the configurator's adjustments marked (installed: triangle up; refused: cross), and a
table of success before and after the change, and over the last 10 episodes.

    .venv/bin/python research/adaptation/plot_graph_protocol.py --out protocol.png on=cam_on.json off=cam_off.json
"""
import argparse
import json

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', help='NAME=REPORT.json')
    parser.add_argument('--out', required=True, help='PNG to write')
    parser.add_argument('--task', default='reach')
    args = parser.parse_args()
    fig, axes = plt.subplots(len(args.runs), 1, figsize=(10, 1.8 * len(args.runs) + 0.6), sharex=True, squeeze=False)
    print('| run | nominal | perturbed | last 10 | adjustments (installed / refused) |\n|---|---|---|---|---|')
    for ax, item in zip(axes[:, 0], args.runs):
        name, _, path = item.partition('=')
        report = json.load(open(path))
        episodes = report['tasks'][args.task]['conditions']['mode2']['per_episode']
        success = [int(e['success']) for e in episodes]
        # A run without --perturb-from: perturbed throughout if it was perturbed at all, else nominal throughout.
        whole = bool(report['provenance'].get('perturbation', {}).get('names'))
        perturbed = [e.get('perturbed', whole) for e in episodes]
        ax.bar(range(len(success)), success, color=['tab:green' if s else 'tab:red' for s in success], width=0.8)
        start = perturbed.index(True) if True in perturbed else len(perturbed)
        if 0 < start < len(perturbed):
            ax.axvline(start - 0.5, color='k', linestyle='--')
        installed = refused = 0
        for i, e in enumerate(episodes):
            for a in e.get('adjustments', []):
                installed += a['installed']
                refused += not a['installed']
                ax.plot(i, 1.15, marker='^' if a['installed'] else 'x', color='tab:blue', markersize=9)
        ax.set_ylim(0, 1.3)
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha='right')
        before, after = success[:start], success[start:]
        print(f'| {name} | {sum(before)} / {len(before)} | {sum(after)} / {len(after)} | {sum(success[-10:])} / 10 | '
              f'{installed} / {refused} |')
    axes[-1, 0].set_xlabel('episode (dashed: the world changes; ^ adjustment installed, x refused)')
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
