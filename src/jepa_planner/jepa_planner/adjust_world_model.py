"""`jepa adjust-world-model --bag BAG... --checkpoint CKPT --out OUT`: correct the world model where its
predictions failed (the configurator's world-model adjustment after repeated surprise).

The bags are the short-term memory's (state, action, actual next state) transitions, latents of CKPT. Only
the predictor is fine-tuned, on the latent prediction loss the model was trained with: the encoder, and so the
latent space every other module works in (goal latents, memory, critic inputs), is unchanged. The adjusted model
is written only if it predicts the most recent transitions, held out from fine-tuning, better than the current
one; otherwise nothing is written and the current model stays in service.
"""
import argparse
import sys
import time

import numpy as np
import torch

from jepa_common.cli import print_summary
from jepa_planner.bags import BagError, read_memory
from jepa_world_model.model import CheckpointError, model_from_checkpoint, read_checkpoint, save_checkpoint

MIN_TRANSITIONS = 20


class AdjustmentError(ValueError):
    """The bags cannot adjust this model (no usable transitions, other latent space), or adjusting did not help."""


def transitions_for(memory, model_id: str) -> dict:
    """States, actions and next states (time order) of the transitions that have an action, all finite."""
    ids = sorted(i for i in memory.model_ids if i)
    if ids != [model_id]:
        raise AdjustmentError(f'the bags hold latents of {ids or "no model"}, not of the model to adjust ({model_id})')
    arrays = memory.to_arrays()
    if not arrays:
        raise AdjustmentError('the bags hold no transitions')
    keep = np.all(np.isfinite(arrays['actions']), axis=1) & np.all(np.isfinite(arrays['states']), axis=1) \
        & np.all(np.isfinite(arrays['next_states']), axis=1)
    if keep.sum() < MIN_TRANSITIONS:
        raise AdjustmentError(f'{int(keep.sum())} transitions with an action (of {len(keep)}); need at least '
                              f'{MIN_TRANSITIONS}')
    return {k: torch.as_tensor(arrays[k][keep], dtype=torch.float32) for k in ('states', 'actions', 'next_states')}


def adjust_world_model(bags: list[str], checkpoint: str, out: str, steps: int = 200, lr: float = 1e-4,
                       holdout: float = 0.25, seed: int = 0, log=print) -> dict:
    """Fine-tune the predictor of `checkpoint` on the bags' transitions and write it to `out`; returns a
    summary dict. Raises AdjustmentError (also when held-out prediction did not improve), BagError or
    CheckpointError naming what is wrong."""
    start = time.monotonic()
    original, adjusted_from = read_checkpoint(checkpoint)
    model = model_from_checkpoint(original, checkpoint, adjusted_from)
    data = transitions_for(read_memory(bags, log=log), adjusted_from)
    n = len(data['states'])
    n_val = max(1, int(round(holdout * n)))
    train = {k: v[:n - n_val] for k, v in data.items()}
    held_out = {k: v[n - n_val:] for k, v in data.items()}

    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.predictor.parameters():
        p.requires_grad_(True)

    def error(batch) -> torch.Tensor:
        return model.normalized_error(model.predict(batch['states'], batch['actions']), batch['next_states']).mean()

    with torch.no_grad():
        before = float(error(held_out))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.predictor.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(train['states']), (min(64, len(train['states'])),), generator=generator)
        loss = error({k: v[idx] for k, v in train.items()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = float(error(held_out))
    if not after < before:
        raise AdjustmentError(f'fine-tuning did not predict the held-out transitions better (normalized error '
                              f'{before:.4f} -> {after:.4f}); the current model stays')
    adjustment = {'adjusted_from': adjusted_from, 'bags': [str(b) for b in bags], 'transitions': n - n_val,
                  'held_out': n_val, 'steps': steps, 'lr': lr, 'held_out_error_before': before,
                  'held_out_error_after': after, 'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    provenance = {**original['provenance'], 'adjustments': [*original['provenance'].get('adjustments', []),
                                                             adjustment]}
    model_id = save_checkpoint(model, out, provenance, original['metrics'])
    return {'out': str(out), 'model_id': model_id, **{k: v for k, v in adjustment.items() if k != 'date'},
            'seconds': round(time.monotonic() - start, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='jepa adjust-world-model', description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', action='append', required=True, help='short-term memory bag (repeatable)')
    parser.add_argument('--checkpoint', required=True, help='the world model whose latents the bags hold')
    parser.add_argument('--out', required=True, help='adjusted checkpoint to write')
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--lr', type=float, default=1e-4)
    parser.add_argument('--holdout', type=float, default=0.25, help='most recent share kept for validation')
    args = parser.parse_args(argv)
    if not 0 < args.holdout < 1 or args.steps < 1:
        parser.error('--holdout must be in (0, 1) and --steps >= 1')
    return print_summary(parser.prog, lambda: adjust_world_model(args.bag, args.checkpoint, args.out, args.steps,
                                                                 args.lr, args.holdout),
                         (AdjustmentError, BagError, CheckpointError))


if __name__ == '__main__':
    sys.exit(main())
