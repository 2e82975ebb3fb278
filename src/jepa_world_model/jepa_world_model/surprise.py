"""Surprise over an episode: how far the world model's one-step prediction lands from the state that came.

`jepa surprise --ckpt CKPT --bag BAG --out PNG` plots, for every control tick, the normalized error between
predict(s_t, a_t) (z = 0) and the embedding of the next frame, next to the copy-last error (how much the
state changed at all). Peaks the model did not expect (a pushed cube, a collision) stand out against
transitions it explains. The bag is decoded as the arm the checkpoint was trained on, or as --arm's preset
(bag_layout.layout_for_checkpoint).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from jepa_world_model.bag_layout import add_arm_arguments, layout_for_checkpoint
from jepa_world_model.dataset import BagError, Ticks, load_bags
from jepa_world_model.model import CheckpointError, WorldModel, model_from_checkpoint, read_checkpoint
from jepa_world_model.train import encode_ticks


@torch.no_grad()
def one_step_surprise(model: WorldModel, ticks: Ticks) -> dict:
    """Per transition t -> t+1 inside a segment: time (s from the first tick), normalized prediction error
    and normalized copy-last error (both divided by the model's training embedding variance)."""
    states = encode_ticks(model, ticks.images)
    valid = np.flatnonzero(ticks.segment[1:] == ticks.segment[:-1])
    actions = torch.from_numpy(ticks.actions[valid]).to(model.device)
    current, following = states[valid], states[valid + 1]
    predicted = model.predict(current, actions)
    return {'time': ticks.stamps[valid] - ticks.stamps[0],
            'error': model.normalized_error(predicted, following).cpu().numpy(),
            'copy_last': model.normalized_error(current, following).cpu().numpy(),
            'segment': ticks.segment[valid]}


def plot_surprise(curves: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4))
    for segment in np.unique(curves['segment']):
        pick = curves['segment'] == segment
        first = segment == curves['segment'][0]
        ax.plot(curves['time'][pick], curves['copy_last'][pick], color='0.6', lw=0.8,
                label='copy-last (state change)' if first else None)
        ax.plot(curves['time'][pick], curves['error'][pick], color='C3', lw=1.0,
                label='one-step prediction error (surprise)' if first else None)
    ax.set_xlabel('time in bag (s)')
    ax.set_ylabel('error / embedding variance')
    ax.set_yscale('log')
    ax.set_title(title)
    ax.legend(loc='upper right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='jepa surprise', description=__doc__.split('\n\n')[0])
    parser.add_argument('--ckpt', required=True)
    parser.add_argument('--bag', required=True)
    parser.add_argument('--out', required=True, help='PNG to write')
    parser.add_argument('--cache', default=None, help='decoded-bag cache directory')
    parser.add_argument('--device', default='cpu')
    add_arm_arguments(parser, for_checkpoint=True)
    args = parser.parse_args(argv)
    try:
        checkpoint, model_id = read_checkpoint(args.ckpt)
        model = model_from_checkpoint(checkpoint, args.ckpt, model_id, args.device)
        layout, note = layout_for_checkpoint(args, checkpoint['provenance'], args.ckpt)
        if note:
            print(f'jepa surprise: {note}', file=sys.stderr)
        ticks = load_bags([args.bag], args.cache, model.image_size, layout=layout)
    except (BagError, CheckpointError, ValueError) as exc:
        print(f'jepa surprise: {exc}', file=sys.stderr)
        return 2
    curves = one_step_surprise(model, ticks)
    if len(curves['error']) == 0:
        print(f'jepa surprise: {args.bag} has no two consecutive control ticks', file=sys.stderr)
        return 2
    ratio = float(np.mean(curves['error']) / max(np.mean(curves['copy_last']), 1e-12))
    plot_surprise(curves, Path(args.out), f'{Path(args.bag).name} with {model.model_id}: mean surprise '
                  f'{np.mean(curves["error"]):.3f}, {ratio:.2f} x copy-last')
    print(f'mean one-step surprise {np.mean(curves["error"]):.4f} (copy-last {np.mean(curves["copy_last"]):.4f}), '
          f'95th percentile {np.percentile(curves["error"], 95):.4f}; wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
