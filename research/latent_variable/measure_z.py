"""How much the world model's latent variable z carries, and whether the predictor uses it, on held-out play.

For every transition (tick t -> t+1 within one segment or episode) of held-out play:
- information: KL(q(z | s_t, s_{t+1}) || N(0, I)) in nats (the posterior's rate, an upper bound on I(z; s' | s, a));
- use: the one-step normalized prediction error (WorldModel.normalized_error) of predict(s_t, a_t, z) against
  s_{t+1}, with z = the posterior mean and with z = 0 (the prior mean, what planning uses), beside copy-last (s_t),
  and how far a draw z ~ N(0, I) moves the prediction from z = 0 (whether the predictor responds to z at all);
each split by what the cube did between the two ticks (privileged /sim/cube_pose, Ticks.cube): free (moved less
than --free-mm), contact (moved more than --contact-mm), and all transitions.

  .venv/bin/python research/latent_variable/measure_z.py (--bag BAG [--bag BAG ...] | --latents NPZ)
      [--checkpoint CKPT] [--last-segments N] [--json OUT]

--bag decodes play bags with load_bags and encodes them with encode_ticks; --latents reads play already encoded with
the checkpoint's encoder (z, a, cube, ep per frame, as research23's gen_play.py writes it).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from jepa_world_model.bag_layout import add_arm_arguments, layout_for_checkpoint
from jepa_world_model.dataset import load_bags
from jepa_world_model.model import (default_checkpoint_path, kl_to_standard_normal, model_from_checkpoint,
                                    read_checkpoint)
from jepa_world_model.train import encode_ticks


def transitions(segment: np.ndarray, last_segments: int | None) -> np.ndarray:
    """Indices t with t and t+1 in one segment, restricted to the last `last_segments` segments (None: all)."""
    same = np.flatnonzero(segment[1:] == segment[:-1])
    if last_segments is not None:
        kept = np.unique(segment)[-last_segments:]
        same = same[np.isin(segment[same], kept)]
    return same


@torch.no_grad()
def per_transition(model, state: torch.Tensor, target: torch.Tensor, actions: np.ndarray) -> dict:
    """Per-transition KL and normalized errors of states s_t (T, D), next states s_{t+1} (T, D), actions (T, A)."""
    action = torch.as_tensor(actions, dtype=state.dtype, device=state.device)
    mean, logvar = model.infer_latent_var(state, target)
    zero = model.predict(state, action, None)
    prior_draw = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0)).to(mean)
    return {
        'kl': kl_to_standard_normal(mean, logvar),
        'error_posterior': model.normalized_error(model.predict(state, action, mean), target),
        'error_zero': model.normalized_error(zero, target),
        'error_copy_last': model.normalized_error(state, target),
        # Whether the predictor responds to z at all: how far a draw z ~ N(0, I) moves the prediction from z = 0.
        'prior_draw_shift': model.normalized_error(model.predict(state, action, prior_draw), zero),
        'z_mean_abs': mean.abs().mean(dim=1),
        'z_std': (0.5 * logvar).exp().mean(dim=1),
    }


def summary(values: dict, mask: np.ndarray) -> dict:
    kl = values['kl'][mask]
    out = {'n': int(mask.sum())}
    if not out['n']:
        return out
    out.update({'kl_mean': float(kl.mean()), 'kl_p90': float(np.percentile(kl, 90)), 'kl_max': float(kl.max())})
    for name in ('error_posterior', 'error_zero', 'error_copy_last', 'prior_draw_shift', 'z_mean_abs', 'z_std'):
        out[name] = float(values[name][mask].mean())
    out['posterior_better_share'] = float((values['error_posterior'][mask] < values['error_zero'][mask]).mean())
    return out


def bag_chunks(args, checkpoint, model):
    """(chunks of (s_t, s_{t+1}, a_t), cube moved in mm per transition, source description) of --bag: the ticks
    decoded by load_bags, encoded chunk by chunk (a tick shared by two transitions is encoded twice)."""
    layout, note = layout_for_checkpoint(args, checkpoint['provenance'], args.checkpoint)
    if note:
        print(note, file=sys.stderr)
    ticks = load_bags(args.bag, args.cache, model.image_size, layout=layout)
    overlap = {b['path'] for b in checkpoint['provenance'].get('bags', [])} & {s['path'] for s in ticks.sources}
    if overlap:
        print(f'warning: {sorted(overlap)} are among the checkpoint\'s training bags', file=sys.stderr)
    index = transitions(ticks.segment, args.last_segments)

    def chunks():
        for start in range(0, len(index), args.chunk):
            rows = index[start:start + args.chunk]
            states = encode_ticks(model, ticks.images, np.concatenate([rows, rows + 1]))
            yield states[:len(rows)], states[len(rows):], ticks.actions[rows]

    moved_mm = np.linalg.norm(ticks.cube[index + 1] - ticks.cube[index], axis=1) * 1000.0
    return chunks(), moved_mm, {'bags': ticks.sources, 'segments_used': int(len(np.unique(ticks.segment[index])))}


def latent_chunks(args):
    """The same from --latents: an npz of per-frame latents already encoded with the checkpoint's encoder (z), the
    actions taken after each frame (a), the privileged cube position (cube) and the episode of each frame (ep)."""
    data = np.load(args.latents)
    missing = [k for k in ('z', 'a', 'cube', 'ep') if k not in data.files]
    if missing:
        raise SystemExit(f'{args.latents}: lacks {missing} (has {data.files})')
    index = transitions(data['ep'], args.last_segments)
    z = torch.from_numpy(data['z'])
    moved_mm = np.linalg.norm(data['cube'][index + 1] - data['cube'][index], axis=1) * 1000.0
    chunks = ((z[rows], z[rows + 1], data['a'][rows]) for rows in np.array_split(index, max(1, len(index) // args.chunk)))
    return chunks, moved_mm, {'latents': args.latents, 'segments_used': int(len(np.unique(data['ep'][index])))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument('--bag', action='append', help='held-out play bag (repeatable)')
    source.add_argument('--latents', help='npz of held-out play already encoded with the checkpoint (z, a, cube, ep)')
    p.add_argument('--checkpoint', default=str(default_checkpoint_path()))
    p.add_argument('--cache', default=None, help='decoded-bag cache folder (default: the user cache)')
    p.add_argument('--last-segments', type=int, default=None,
                   help='use only the last N segments (episodes) (default: all)')
    p.add_argument('--free-mm', type=float, default=0.5, help='free motion: the cube moved less than this (mm)')
    p.add_argument('--contact-mm', type=float, default=2.0, help='contact: the cube moved more than this (mm)')
    p.add_argument('--chunk', type=int, default=2048, help='transitions evaluated at a time')
    p.add_argument('--json', default=None, help='write the summary here')
    add_arm_arguments(p, for_checkpoint=True)
    args = p.parse_args(argv)
    if args.last_segments is not None and args.last_segments < 1:
        p.error(f'--last-segments must be >= 1, got {args.last_segments}')
    if not 0 <= args.free_mm <= args.contact_mm:
        p.error(f'need 0 <= --free-mm ({args.free_mm}) <= --contact-mm ({args.contact_mm})')
    if args.chunk < 1:
        p.error(f'--chunk must be >= 1, got {args.chunk}')

    checkpoint, model_id = read_checkpoint(args.checkpoint)
    model = model_from_checkpoint(checkpoint, args.checkpoint, model_id)
    chunks, moved_mm, described = bag_chunks(args, checkpoint, model) if args.bag else latent_chunks(args)
    if not len(moved_mm):
        print('no transition within a segment in the data', file=sys.stderr)
        return 1
    values: dict[str, list] = {}
    for state, target, actions in chunks:
        for name, value in per_transition(model, state, target, actions).items():
            values.setdefault(name, []).append(value.cpu().numpy())
    values = {k: np.concatenate(v) for k, v in values.items()}

    known = np.isfinite(moved_mm)
    groups = {
        f'free (cube moved < {args.free_mm:g} mm)': known & (moved_mm < args.free_mm),
        f'contact (cube moved > {args.contact_mm:g} mm)': known & (moved_mm > args.contact_mm),
        'all': np.ones(len(moved_mm), dtype=bool),
    }
    result = {'checkpoint': args.checkpoint, 'model_id': model_id, **described, 'transitions': int(len(moved_mm)),
              'cube_unknown': int((~known).sum()), 'free_mm': args.free_mm, 'contact_mm': args.contact_mm,
              'groups': {k: summary(values, m) for k, m in groups.items()}}

    print(f'{model_id} on {", ".join(args.bag or [args.latents])}: {result["transitions"]} transitions in '
          f'{result["segments_used"]} segments ({result["cube_unknown"]} without a cube pose)')
    print('| transitions | n | KL nats mean | KL p90 | KL max | error, z = posterior mean | error, z = 0 | '
          'copy-last | posterior better | shift, z ~ N(0, I) |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for name, s in result['groups'].items():
        if not s['n']:
            print(f'| {name} | 0 | | | | | | | | |')
            continue
        print(f'| {name} | {s["n"]} | {s["kl_mean"]:.2g} | {s["kl_p90"]:.2g} | {s["kl_max"]:.2g} | '
              f'{s["error_posterior"]:.5f} | {s["error_zero"]:.5f} | {s["error_copy_last"]:.5f} | '
              f'{100 * s["posterior_better_share"]:.0f} % | {s["prior_draw_shift"]:.2g} |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == '__main__':
    sys.exit(main())
