"""`jepa adjust-world-model --bag BAG... --checkpoint CKPT --out OUT`: correct the world model where its
predictions failed (the configurator's world-model adjustment after repeated surprise).

The bags are the short-term memory's (state, action, actual next state) transitions, latents of CKPT. Only
the predictor is fine-tuned, on the latent prediction loss the model was trained with: the encoder, and so the
latent space every other module works in (goal latents, memory, critic inputs), is unchanged. The adjusted model
is written only if it predicts the most recent transitions, held out from fine-tuning, better than the current
one by a margin that noise cannot produce (`KeepIfBetter`); otherwise nothing is written and the current model
stays in service. The configurator retrains its critic under the same check (train_critic.retrain_critic).
"""
import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from jepa_common.cli import print_summary
from jepa_common.settings import setting
from jepa_short_term_memory.bags import BagError, read_memory
from jepa_world_model.model import CheckpointError, model_from_checkpoint, read_checkpoint, save_checkpoint

MIN_TRANSITIONS = 20


class AdjustmentError(ValueError):
    """The bags cannot adjust this model (no usable transitions, other latent space), or adjusting did not help."""


@dataclass
class FineTuning:
    """How the predictor is fine-tuned: `steps` Adam steps at learning rate `lr` on batches of the older
    transitions, the most recent `holdout` share held out to judge the result (`KeepIfBetter`)."""
    steps: int = setting(200, 'Adam steps of the predictor\'s fine-tuning', (1, 1_000_000))
    lr: float = setting(1e-4, 'learning rate of the fine-tuning (small: corrections to a trained model)', (0.0, 1.0))
    holdout: float = setting(0.25, 'most recent share of the transitions held out to judge the fine-tuned model',
                             (0.0, 1.0))

    def __post_init__(self):
        if not 0 < self.holdout < 1 or self.steps < 1 or not self.lr > 0:
            raise ValueError(f'fine-tuning needs 0 < holdout < 1, steps >= 1 and lr > 0, got {self}')


@dataclass
class KeepIfBetter:
    """When an adjusted model (the fine-tuned world model, a retrained critic) may replace the one in service: the
    held-out transitions are cut into windows of `window` consecutive ones, and the mean of the per-window
    differences of error (in service - adjusted) must exceed `k` standard errors of those differences and also
    `min_improvement` of the error of the one in service.

    Windows, not single transitions: consecutive transitions share a scene and a motion, so their differences
    are correlated and a per-transition standard error would be too small; the mean of 5 (0.5 s at the 10 Hz
    camera) is closer to independent. k = 3: an adjustment that changed nothing real passes by chance (one-sided)
    about 1 time in 740 where the normal approximation holds, as it does for the hundreds of windows a full
    short-term memory holds out; with the fewest windows allowed (`min_windows`, below which the one in service
    stays) the estimated standard error makes it about 1 in 50 (Student's t, 4 degrees of freedom), and there
    `min_improvement` is the stronger bar. min_improvement: a model hot-swapped into every module (goal re-encoded,
    plans restarted) for a sliver of error would be noise-chasing even when the sliver is real.
    """
    k: float = setting(3.0, 'the improvement must exceed this many standard errors of the per-window differences',
                       (0.0, 100.0))
    min_improvement: float = setting(0.1, '...and this share of the error of the one in service', (0.0, 1.0))
    window: int = setting(5, 'consecutive held-out transitions per window (about one motion)', (1, 100_000))
    min_windows: int = setting(5, 'fewer held-out windows than this: too few to judge, the one in service stays',
                               (2, 100_000))

    def __post_init__(self):
        if self.k < 0 or not 0 <= self.min_improvement < 1 or self.window < 1 or self.min_windows < 2:
            raise ValueError(f'keep_if_better needs k >= 0, 0 <= min_improvement < 1, window >= 1 and '
                             f'min_windows >= 2, got {self}')

    def windows(self, held_out: int) -> int:
        """How many windows `held_out` transitions make; AdjustmentError when too few to judge."""
        windows = held_out // self.window
        if windows < self.min_windows:
            raise AdjustmentError(f'{held_out} held-out transitions make {windows} windows of {self.window}; '
                                  f'need {self.min_windows} to tell an improvement from noise; the one in service '
                                  'stays')
        return windows

    def judge(self, before: np.ndarray, after: np.ndarray, what: str = 'the fine-tuned model') -> dict:
        """Per-transition held-out errors (time order) of the one in service (before) and of `what` (after) -> the
        verdict's figures; AdjustmentError when `what` is not better by the margin."""
        windows = self.windows(len(before))
        cut = windows * self.window
        differences = (np.asarray(before[:cut]) - np.asarray(after[:cut])).reshape(windows, self.window).mean(axis=1)
        gain = float(differences.mean())
        standard_error = float(differences.std(ddof=1) / math.sqrt(windows))
        error_before = float(np.mean(before))
        figures = {'held_out_error_before': error_before, 'held_out_error_after': float(np.mean(after)),
                   'improvement': gain, 'standard_error': standard_error, 'windows': windows}
        margin = max(self.k * standard_error, self.min_improvement * error_before)
        if not gain > margin:
            raise AdjustmentError(f'{what} did not predict the held-out transitions better by the margin (error '
                                  f'{error_before:.4g} -> {figures["held_out_error_after"]:.4g}: improvement '
                                  f'{gain:.4g}, needed > {margin:.4g} = max({self.k} x standard error '
                                  f'{standard_error:.3g} over {windows} windows, {self.min_improvement:.0%} of the '
                                  f'error before)); the one in service stays')
        return figures


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


def fine_tune_predictor(model, data: dict, tuning: FineTuning | None = None,
                        keep_if_better: KeepIfBetter | None = None, seed: int = 0) -> dict:
    """Fine-tune `model`'s predictor in place (the encoder, and so the latent space, untouched) on `data`: tensors
    'states', 'actions', 'next_states' of transitions in time order, the most recent `tuning.holdout` share held
    out. Returns the verdict's figures (KeepIfBetter.judge) with the transitions, held-out count, steps and lr;
    AdjustmentError when too few are held out to judge or the fine-tuned predictor is not better by the margin
    (the model is then left fine-tuned: the caller keeps the one in service)."""
    tuning, keep_if_better = tuning or FineTuning(), keep_if_better or KeepIfBetter()
    n = len(data['states'])
    n_val = max(1, int(round(tuning.holdout * n)))
    keep_if_better.windows(n_val)  # before fine-tuning: too few to judge is known now
    if n_val >= n:
        raise AdjustmentError(f'holding out {tuning.holdout:.0%} of {n} transitions leaves none to fine-tune on')
    train = {k: data[k][:n - n_val] for k in ('states', 'actions', 'next_states')}
    held_out = {k: data[k][n - n_val:] for k in ('states', 'actions', 'next_states')}

    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.predictor.parameters():
        p.requires_grad_(True)

    def errors(batch) -> torch.Tensor:
        """Per-transition normalized one-step errors."""
        return model.normalized_error(model.predict(batch['states'], batch['actions']), batch['next_states'])

    model.eval()
    with torch.no_grad():
        before = errors(held_out).numpy()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.predictor.parameters(), lr=tuning.lr)
    model.train()
    for _ in range(tuning.steps):
        idx = torch.randint(0, len(train['states']), (min(64, len(train['states'])),), generator=generator)
        loss = errors({k: v[idx] for k, v in train.items()}).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = errors(held_out).numpy()
    figures = keep_if_better.judge(before, after, 'the fine-tuned world model')
    return {'transitions': n - n_val, 'held_out': n_val, 'steps': tuning.steps, 'lr': tuning.lr, **figures}


def adjust_world_model(bags: list[str], checkpoint: str, out: str, tuning: FineTuning | None = None, seed: int = 0,
                       keep_if_better: KeepIfBetter | None = None, log=print) -> dict:
    """Fine-tune the predictor of `checkpoint` on the bags' transitions and write it to `out`; returns a
    summary dict. Raises AdjustmentError (also when held-out prediction did not improve by the margin of
    `keep_if_better`), BagError or CheckpointError naming what is wrong."""
    start = time.monotonic()
    original, adjusted_from = read_checkpoint(checkpoint)
    model = model_from_checkpoint(original, checkpoint, adjusted_from)
    data = transitions_for(read_memory(bags, log=log), adjusted_from)
    figures = fine_tune_predictor(model, data, tuning, keep_if_better, seed)
    adjustment = {'adjusted_from': adjusted_from, 'bags': [str(b) for b in bags], **figures,
                  'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
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
    parser.add_argument('--steps', type=int, default=FineTuning.steps)
    parser.add_argument('--lr', type=float, default=FineTuning.lr)
    parser.add_argument('--holdout', type=float, default=FineTuning.holdout, help='most recent share kept for validation')
    args = parser.parse_args(argv)
    try:
        tuning = FineTuning(args.steps, args.lr, args.holdout)
    except ValueError as exc:
        parser.error(str(exc))
    return print_summary(parser.prog, lambda: adjust_world_model(args.bag, args.checkpoint, args.out, tuning),
                         (AdjustmentError, BagError, CheckpointError))


if __name__ == '__main__':
    sys.exit(main())
