"""`jepa train-critic --bag BAG... --out CRITIC`: fit the critic (learned cost-to-go) from recorded episodes.

Reads bags written by the short-term memory (/short_term_memory/save) or `jepa record` of the agent's topics
(/jepa/latent, /jepa/cost, /jepa/goal_latent; /jepa/action and /jepa/prediction optional). Transitions
without a cost or a goal are left out (counted in the report).
"""
import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from jepa_common.cli import print_summary
from jepa_short_term_memory.bags import BagError, read_memory
from jepa_cost.cost import Critic, CriticError, train_critic


class CriticDataError(ValueError):
    """The bags cannot train a critic (no usable transitions, mixed latent spaces)."""


def usable_episodes(memory) -> tuple[list[dict], int]:
    """Episodes restricted to transitions with finite cost and goal; returns (episodes, transitions left out)."""
    out, skipped = [], 0
    for episode in memory.episodes():
        keep = np.isfinite(episode['costs']) & np.all(np.isfinite(episode['goals']), axis=1)
        skipped += int((~keep).sum())
        if keep.any():
            out.append({k: v[keep] for k, v in episode.items()})
    return out, skipped


def critic_from_bags(bags: list[str], out: str, method: str = 'td', discount: float = 0.9, epochs: int = 200,
                     init: str | None = None, seed: int = 0, log=print, for_model: str = '') -> dict:
    """Read bags, fit, save the critic to out; returns a report dict. Raises CriticDataError, BagError or
    CriticError naming what is wrong. for_model: the model whose latent space the critic is for, when not the
    bags' own (a world model adjusted by adjust_world_model keeps its encoder, and so its latent space, under a
    new model_id)."""
    start = time.monotonic()
    memory = read_memory(bags, log=log)
    model_ids = sorted(m for m in memory.model_ids if m)
    if len(model_ids) > 1:
        raise CriticDataError(f'the bags hold latents of several models {model_ids}; a critic lives in one latent space')
    episodes, skipped = usable_episodes(memory)
    if not episodes:
        raise CriticDataError(f'no usable transitions in {bags}: {len(memory)} transitions, {skipped} without a cost '
                              'or a goal (record /jepa/cost and /jepa/goal_latent with /jepa/latent)')
    model_id = model_ids[0] if model_ids else ''
    initial = Critic.load(init, episodes[0]['states'].shape[1], model_id) if init else None
    critic, report = train_critic(episodes, critic=initial, method=method, discount=discount, epochs=epochs,
                                  model_id=model_id, seed=seed)
    if for_model:
        critic.model_id = model_id = for_model
    provenance = {'command': ' '.join(sys.argv), 'bags': [{'path': str(b), 'sha256': _bag_digest(b)} for b in bags],
                  'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'method': method, 'discount': discount,
                  'epochs': epochs}
    critic.save(out, provenance)
    summary = {'out': str(out), 'model_id': model_id, 'transitions': report.transitions, 'skipped': skipped,
               'episodes': report.episodes, 'method': method, 'final_loss': report.loss,
               'seconds': round(time.monotonic() - start, 2)}
    return summary


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
    parser.add_argument('--discount', type=float, default=0.9)
    parser.add_argument('--epochs', type=int, default=200)
    parser.add_argument('--init', default=None, help='critic to continue training from')
    parser.add_argument('--seed', type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return print_summary(parser.prog, lambda: critic_from_bags(args.bag, args.out, args.method, args.discount,
                                                               args.epochs, args.init, args.seed),
                         (CriticDataError, BagError, CriticError))


if __name__ == '__main__':
    sys.exit(main())
