"""`jepa train-high-level --bag PLAY... [--weight BAG=N]... [--checkpoint CKPT] [--out FILE] [--set NAME=VALUE]...`:
train the higher level's macro-action predictor (jepa_world_model.high_level) on play bags, in CKPT's latent space.

The bags are play as `jepa collect` records it, or the agent's own episodes as `jepa record --topics
camera/image_raw joint_states [jepa/action]` keeps them beside `jepa eval`: without jepa/action their actions are
derived from the joint motion; with it they are the actor's commands, which come when a plan is ready rather than
exactly once per control period, so the episodes are cut into shorter stretches where a plan came late (the
shipped level's own pushes were recorded both ways: checkpoints/README.md). Their frames are encoded by CKPT's
frozen encoder (default: the shipped model) and the predictor learns what each macro-action of the bag's actions
does to the latent. `--weight BAG=N` counts the episodes of BAG (one of the --bag arguments) N times in training
and in the library of play sequences: a few minutes of the agent's own pushes teach the level what its plans
really do only if they are not drowned by an hour of babbling. The bags are decoded as the arm the checkpoint was
trained on, or as --arm's preset. The actor loads the result as its `high_level_path` (levels 2).
"""
import argparse
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from jepa_common.cli import print_summary
from jepa_rosbag.reader import BagError
from jepa_world_model.bag_layout import add_arm_arguments
from jepa_world_model.dataset import bag_kinematics, expand_bags
from jepa_world_model.high_level import HighLevelConfig, default_high_level_path, episode_rows, \
    split_episodes, train_high_level
from jepa_world_model.model import CheckpointError, encoder_id
from jepa_world_model.train import bags_for_checkpoint, encode_ticks, git_commit, now_iso


def parse_settings(items: list[str]) -> HighLevelConfig:
    """--set NAME=VALUE items -> a HighLevelConfig (ValueError naming an unknown or refused setting)."""
    defaults = asdict(HighLevelConfig())
    values = {}
    for item in items:
        name, sep, value = item.partition('=')
        if not sep or name not in defaults:
            raise ValueError(f'--set {item!r}: expected NAME=VALUE with NAME one of {sorted(defaults)}')
        values[name] = type(defaults[name])(value)
    return HighLevelConfig(**values)


def parse_weights(items: list[str], bags: list[str]) -> dict[Path, int]:
    """--weight BAG=N items -> {resolved bag path: N} for every bag BAG names (ValueError naming an item that is
    not BAG=N with N a whole number >= 1, or whose BAG is none of the --bag arguments)."""
    given = {path.resolve() for path in expand_bags(bags)}
    weights = {}
    for item in items:
        bag, sep, count = item.rpartition('=')
        if not sep or not count.isdigit() or int(count) < 1:
            raise ValueError(f'--weight {item!r}: expected BAG=N with N a whole number >= 1')
        paths = {path.resolve() for path in expand_bags([bag])}
        if not paths <= given:
            raise ValueError(f'--weight {item!r}: {bag} is not among the --bag arguments')
        weights.update(dict.fromkeys(paths, int(count)))
    return weights


def tick_weights(sources: list[dict], weights: dict[Path, int]) -> np.ndarray:
    """The weight of every tick of bags loaded one after the other (`sources`, each with its path and ticks)."""
    return np.repeat([weights.get(Path(source['path']).resolve(), 1) for source in sources],
                     [source['ticks'] for source in sources])


def ticks_in_windows(sources: list[dict], segment: np.ndarray, length: int) -> list[tuple[int, int, float]]:
    """Per bag of bags loaded one after the other (`sources`, each with its ticks; `segment`: their continuous
    stretches): (ticks in stretches of at least `length` ticks, the stretches, their median length in ticks)."""
    counts, start = [], 0
    for source in sources:
        _, sizes = np.unique(segment[start:start + source['ticks']], return_counts=True)
        counts.append((int(sizes[sizes >= length].sum()), len(sizes), float(np.median(sizes)) if len(sizes) else 0.0))
        start += source['ticks']
    return counts


def check_windows(sources: list[dict], segment: np.ndarray, config: HighLevelConfig) -> dict[str, str]:
    """Notes in each source how many of its ticks lie in stretches one training window long (macro_steps x
    rollout_macros + 1 ticks) and returns them per bag; ValueError naming a bag that has none, which training
    would silently drop, with what cut it."""
    length = config.window_ticks
    usable = {}
    for source, (inside, stretches, median) in zip(sources, ticks_in_windows(sources, segment, length)):
        source['ticks_in_windows'] = inside
        usable[source['path']] = f'{inside} / {source["ticks"]}'
        if inside:
            continue
        why = (' (its /jepa/action messages are the actor\'s commands, which come only when a plan is ready: '
               'a plan slower than the control period cuts the episode; recorded without jepa/action, its actions '
               'would be derived from the joint motion)' if source.get('actions') == 'recorded' else '')
        raise ValueError(f'bag {source["path"]}: none of its {source["ticks"]} control ticks is in a continuous '
                         f'stretch of the {length} ticks a training window needs (macro_steps {config.macro_steps} '
                         f'x rollout_macros {config.rollout_macros} + 1): they are cut into {stretches} stretches, '
                         f'median {median:g} ticks{why}')
    return usable


def train_from_bags(args: argparse.Namespace) -> dict:
    start = time.monotonic()
    config = parse_settings(args.set)
    weights = parse_weights(args.weight, args.bag)
    path, model, model_id, layout, ticks = bags_for_checkpoint(args, 'jepa train-high-level')
    usable = check_windows(ticks.sources, ticks.segment, config)
    max_step = bag_kinematics(ticks.sources[0]['path'], layout).max_step
    latents = encode_ticks(model, ticks.images).cpu().numpy()
    episodes = split_episodes(latents, ticks.actions, ticks.segment)
    per_tick = tick_weights(ticks.sources, weights)
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else (lambda line: None)
    high_level, report = train_high_level(episodes, config, encoder_id(model), max_step,
                                          float(model.latent_var.mean()), log=log,
                                          repeats=[int(per_tick[r[0]]) for r in episode_rows(ticks.segment)])
    out = Path(args.out) if args.out else default_high_level_path(path)
    provenance = {'command': ' '.join(sys.argv), 'git_commit': git_commit(), 'date': now_iso(),
                  'world_model': {'path': str(path), 'model_id': model_id}, 'bags': ticks.sources,
                  'bag_weights': {str(bag): count for bag, count in weights.items()},
                  'config': asdict(config), 'report': report, 'load_end': list(os.getloadavg()),
                  'cores': len(os.sched_getaffinity(0))}
    high_level.save(out, provenance)
    return {'out': str(out), 'encoder_id': high_level.encoder_id, 'ticks': len(ticks),
            'max_step': max_step, 'ticks_in_windows': usable, **report,
            'total_seconds': round(time.monotonic() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='jepa train-high-level', description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', action='append', required=True, help='play bag (repeat for several)')
    parser.add_argument('--weight', action='append', default=[], metavar='BAG=N',
                        help='count the episodes of BAG (one of the --bag arguments) N times (repeatable)')
    parser.add_argument('--checkpoint', default=None, help='world model whose latents to predict (default: shipped)')
    parser.add_argument('--out', default=None, help='model file (default: beside the checkpoint, '
                                                    '<checkpoint>_high_level.pt)')
    parser.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                        help='a HighLevelConfig setting (repeatable): '
                             + ', '.join(f.name for f in fields(HighLevelConfig)))
    parser.add_argument('--verbose', action='store_true', help='log every epoch on stderr')
    add_arm_arguments(parser, for_checkpoint=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    return print_summary('jepa train-high-level', lambda: train_from_bags(args),
                         (BagError, CheckpointError, OSError, ValueError))
