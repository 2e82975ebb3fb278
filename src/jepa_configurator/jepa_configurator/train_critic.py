"""`jepa train-critic --bag BAG... --out CRITIC`: fit the critic (learned cost-to-go) from recorded episodes.

Reads bags written by the short-term memory (short_term_memory/save) or `jepa record` of the agent's topics
(/jepa/latent, /jepa/cost, /jepa/goal_latent; /jepa/action and /jepa/prediction optional). Transitions
without a cost or a goal are left out (counted in the report).

The configurator's retraining after surprise (`retrain_critic`) holds the most recent transitions out and keeps
the retrained critic only if it predicts them better than the critic in service, by the margin of
adjust_world_model.KeepIfBetter.

Under `torchrun --nproc_per_node N` (beside `jepa train` in one job) rank 0 fits and writes the critic, exactly as
one process does, and the other ranks end at once: the critic is a small MLP fitted in seconds, for which an
all-reduce of its gradients at every minibatch would cost more than the minibatch.
"""
import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jepa_common.cli import print_summary
from jepa_common.settings import setting
from jepa_configurator.adjust_world_model import AdjustmentError, KeepIfBetter
from jepa_cost.cost import Critic, CriticError, train_critic
from jepa_short_term_memory.bags import BagError, read_memory


class CriticDataError(ValueError):
    """The bags cannot train a critic (no usable transitions, mixed latent spaces)."""


@dataclass
class CriticTuning:
    """How the configurator retrains the critic after surprise: `epochs` of TD(0) fitted value iteration on the
    older transitions, the most recent `holdout` share held out to judge the result (KeepIfBetter)."""
    epochs: int = setting(100, 'training epochs of a critic retrained after surprise', (1, 100_000))
    holdout: float = setting(0.25, 'most recent share of the transitions held out to judge the retrained critic',
                             (0.0, 1.0))
    discount: float = setting(0.9, 'discount of the cost-to-go the critic learns (and is judged on)', (0.0, 1.0))

    def __post_init__(self):
        if self.epochs < 1 or not 0 < self.holdout < 1 or not 0 <= self.discount < 1:
            raise ValueError(f'critic tuning needs epochs >= 1, 0 < holdout < 1 and 0 <= discount < 1, got {self}')


def usable_episodes(memory) -> tuple[list[dict], int]:
    """Episodes restricted to transitions with finite cost and goal; returns (episodes, transitions left out)."""
    out, skipped = [], 0
    for episode in memory.episodes():
        keep = np.isfinite(episode['costs']) & np.all(np.isfinite(episode['goals']), axis=1)
        skipped += int((~keep).sum())
        if keep.any():
            out.append({k: v[keep] for k, v in episode.items()})
    return out, skipped


def episodes_from_bags(bags: list[str], log=print) -> tuple[list[dict], int, str]:
    """(usable episodes in time order, transitions left out, the model whose latents they are) of the bags;
    CriticDataError when they cannot train a critic."""
    memory = read_memory(bags, log=log)
    model_ids = sorted(m for m in memory.model_ids if m)
    if len(model_ids) > 1:
        raise CriticDataError(f'the bags hold latents of several models {model_ids}; a critic lives in one latent '
                              'space')
    episodes, skipped = usable_episodes(memory)
    if not episodes:
        raise CriticDataError(f'no usable transitions in {bags}: {len(memory)} transitions, {skipped} without a cost '
                              'or a goal (record /jepa/cost and /jepa/goal_latent with /jepa/latent)')
    return episodes, skipped, model_ids[0] if model_ids else ''


def split_recent(episodes: list[dict], holdout: float) -> tuple[list[dict], list[dict]]:
    """(older, most recent) episodes: the last `holdout` share of the transitions (at least one) held out, the
    episode they begin in cut in two."""
    total = sum(len(e['costs']) for e in episodes)
    cut = total - max(1, int(round(holdout * total)))
    older, recent, seen = [], [], 0
    for episode in episodes:
        n = len(episode['costs'])
        at = min(max(cut - seen, 0), n)
        if at:
            older.append({k: v[:at] for k, v in episode.items()})
        if at < n:
            recent.append({k: v[at:] for k, v in episode.items()})
        seen += n
    return older, recent


def bellman_errors(critic: Critic | None, episodes: list[dict], discount: float) -> np.ndarray:
    """Per-transition squared Bellman residual (V(z, g) - c - discount V(z', g))^2, in time order: how far a
    critic is from the cost-to-go its transitions show. No critic is V = 0, what the cost has without one."""
    costs = torch.as_tensor(np.concatenate([e['costs'] for e in episodes]), dtype=torch.float32)
    if critic is None:
        return (costs ** 2).numpy()
    cat = lambda key: torch.as_tensor(np.concatenate([e[key] for e in episodes]), dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        residual = critic(cat('states'), cat('goals')) - costs - discount * critic(cat('next_states'), cat('goals'))
    return (residual ** 2).numpy()


def critic_from_bags(bags: list[str], out: str, method: str = 'td', discount: float = 0.9, epochs: int = 200,
                     init: str | None = None, seed: int = 0, log=print, for_model: str = '') -> dict:
    """Read bags, fit, save the critic to out; returns a report dict. Raises CriticDataError, BagError or
    CriticError naming what is wrong. for_model: the model whose latent space the critic is for, when not the
    bags' own (a world model adjusted by adjust_world_model keeps its encoder, and so its latent space, under a
    new model_id)."""
    start = time.monotonic()
    episodes, skipped, model_id = episodes_from_bags(bags, log)
    initial = Critic.load(init, episodes[0]['states'].shape[1], model_id) if init else None
    critic, report = train_critic(episodes, critic=initial, method=method, discount=discount, epochs=epochs,
                                  model_id=model_id, seed=seed)
    if for_model:
        critic.model_id = model_id = for_model
    critic.save(out, _provenance(bags, method=method, discount=discount, epochs=epochs))
    return {'out': str(out), 'model_id': model_id, 'transitions': report.transitions, 'skipped': skipped,
            'episodes': report.episodes, 'method': method, 'final_loss': report.loss,
            'seconds': round(time.monotonic() - start, 2)}


def retrain_critic(bags: list[str], out: str, current: str | None = None, tuning: CriticTuning | None = None,
                   keep_if_better: KeepIfBetter | None = None, for_model: str = '', seed: int = 0,
                   log=print) -> dict:
    """Retrain the critic on the bags' older transitions, continuing from `current` (the critic in service; None:
    none is), and save it to `out` only if it predicts the most recent transitions, held out, better than
    `current` by the margin of `keep_if_better` (the errors: `bellman_errors`; no critic in service counts as
    V = 0). Returns a summary with the verdict's figures; raises AdjustmentError (nothing written, the critic in
    service stays), CriticDataError, BagError or CriticError. for_model: as critic_from_bags."""
    tuning, keep_if_better = tuning or CriticTuning(), keep_if_better or KeepIfBetter()
    start = time.monotonic()
    episodes, skipped, model_id = episodes_from_bags(bags, log)
    train, held_out = split_recent(episodes, tuning.holdout)
    held = sum(len(e['costs']) for e in held_out)
    keep_if_better.windows(held)  # before training: too few to judge is known now
    if not train:
        raise AdjustmentError(f'all {held} transitions are held out: none left to train on; the one in service stays')
    latent_dim = episodes[0]['states'].shape[1]
    in_service = Critic.load(current, latent_dim, model_id) if current else None
    initial = Critic.load(current, latent_dim, model_id) if current else None  # trained in place
    critic, report = train_critic(train, critic=initial, discount=tuning.discount, epochs=tuning.epochs,
                                  model_id=model_id, seed=seed)
    against = f'the critic {current}' if current else 'no critic'
    figures = keep_if_better.judge(bellman_errors(in_service, held_out, tuning.discount),
                                   bellman_errors(critic, held_out, tuning.discount),
                                   f'the retrained critic (against {against})')
    if for_model:
        critic.model_id = model_id = for_model
    critic.save(out, _provenance(bags, method='td', discount=tuning.discount, epochs=tuning.epochs,
                                 retrained_from=current or '', **figures))
    return {'out': str(out), 'model_id': model_id, 'retrained_from': current or '',
            'transitions': report.transitions, 'held_out': held, 'skipped': skipped, 'episodes': report.episodes,
            'final_loss': report.loss, **figures, 'seconds': round(time.monotonic() - start, 2)}


def relabel_critic(path: str, out: str, model_id: str) -> dict:
    """Save the critic at `path` again, for the latents of `model_id`: a world model adjusted by adjust_world_model
    has a new model_id but the same encoder, so the critic's latent space is unchanged."""
    critic = Critic.load(path)
    previous, critic.model_id = critic.model_id, model_id
    critic.save(out, {'relabelled_from': str(path), 'model_id_before': previous,
                      'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())})
    return {'out': str(out), 'model_id': model_id, 'relabelled_from': str(path)}


def _provenance(bags: list[str], **details) -> dict:
    return {'command': ' '.join(sys.argv), 'bags': [{'path': str(b), 'sha256': _bag_digest(b)} for b in bags],
            'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), **details}


def _bag_digest(bag: str) -> str:
    """sha256 over the bag's storage files (names and contents), for provenance."""
    digest = hashlib.sha256()
    path = Path(bag)
    for f in sorted(path.rglob('*') if path.is_dir() else [path]):
        if f.is_file() and f.suffix in ('.mcap', '.db3'):
            digest.update(f.name.encode())
            with open(f, 'rb') as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b''):
                    digest.update(chunk)
    return digest.hexdigest()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='jepa train-critic', description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', action='append', required=True, help='rosbag2 bag (repeatable)')
    parser.add_argument('--out', required=True, help='critic checkpoint to write')
    parser.add_argument('--method', choices=['td', 'mc'], default='td',
                        help='td: TD(0) fitted value iteration (default); mc: discounted Monte-Carlo returns')
    parser.add_argument('--discount', type=float, default=CriticTuning.discount)
    parser.add_argument('--epochs', type=int, default=200)
    parser.add_argument('--init', default=None, help='critic to continue training from')
    parser.add_argument('--seed', type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if int(os.environ.get('RANK', '0')) > 0:
        return 0    # a torchrun job's rank 0 fits the critic (see the module's docstring)
    return print_summary(parser.prog, lambda: critic_from_bags(args.bag, args.out, args.method, args.discount,
                                                               args.epochs, args.init, args.seed),
                         (CriticDataError, BagError, CriticError))


if __name__ == '__main__':
    sys.exit(main())
