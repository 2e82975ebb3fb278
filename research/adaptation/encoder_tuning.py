"""Re-calibrating perception offline: the episodes adapt_in_process.py saved, fine-tuned on and measured.

The method is jepa_configurator.adjust_encoder's (`jepa adjust-encoder`; its docstring says what and why), moved
there from this file: commit e668917 holds the research version with the variants LOG.md §5 tried (hand steps
instead of positions, VICReg instead of the anchor).

    # offline, on the episodes adapt_in_process.py --save-episodes kept:
    ../../.venv/bin/python encoder_tuning.py data/camera_moved_off.npz --train 10 --steps 1200
    # or on a play bag the graph recorded: learn from its first 120 s of play, measure on the next 60 s
    ../../.venv/bin/python encoder_tuning.py PLAY_BAG --learn-seconds 120 --test-seconds 60 --steps 400
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from jepa_configurator.adjust_encoder import (EncoderTuning, Episode, episodes_from_ticks, fine_tune_encoder,
                                              prediction_errors, reading_errors, reading_offset, readings)
from jepa_configurator.adjust_world_model import AdjustmentError, KeepIfBetter
from jepa_world_model.dataset import bag_kinematics, expand_bags
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
from jepa_world_model.train import bags_for_checkpoint


def save_played(episodes: list, path: Path) -> None:
    np.savez_compressed(path, lengths=[len(e.actions) for e in episodes],
                        frames=np.concatenate([e.frames for e in episodes]),
                        actions=np.concatenate([e.actions for e in episodes]),
                        hand_positions=np.concatenate([e.hand_positions for e in episodes]))


def load_played(path: Path) -> list:
    data = np.load(path)
    episodes, f, a = [], 0, 0
    for n in data['lengths']:
        episodes.append(Episode(data['frames'][f:f + n + 1], data['actions'][a:a + n],
                                data['hand_positions'][f:f + n + 1]))
        f, a = f + n + 1, a + n
    return episodes


def episodes_by_seconds(bag: str, checkpoint: Path, learn_seconds: float, test_seconds: float, window: int):
    """(learn, test): a play bag's stretches that start within its first `learn_seconds` of stamps, and those that
    start in the `test_seconds` after them."""
    args = argparse.Namespace(bag=[bag], checkpoint=str(checkpoint), arm=None, urdf=None, camera_topic=None)
    _, _, _, layout, ticks = bags_for_checkpoint(args, 'encoder_tuning.py')
    episodes = episodes_from_ticks(ticks, bag_kinematics(expand_bags(bag)[0], layout), window)
    starts = [ticks.stamps[ticks.segment == s].min() for s in np.unique(ticks.segment)
              if (ticks.segment == s).sum() >= window]
    offsets = np.asarray(starts) - min(starts)
    learn = [e for e, t in zip(episodes, offsets) if t < learn_seconds]
    test = [e for e, t in zip(episodes, offsets) if learn_seconds <= t < learn_seconds + test_seconds]
    print(f'{bag}: {len(episodes)} stretches over {offsets.max():.0f} s; learning from {len(learn)} '
          f'({sum(len(e.actions) for e in learn)} ticks), measuring on {len(test)}')
    return learn, test


def main() -> int:
    parser = argparse.ArgumentParser(description='the encoder fine-tuned offline on saved perturbed episodes')
    parser.add_argument('episodes', type=Path, help='episodes saved by adapt_in_process.py (.npz) or a play bag')
    parser.add_argument('--train', type=int, default=5, help='episodes to learn from (the next ones judge)')
    parser.add_argument('--test', type=int, default=10, help='episodes after them to measure on')
    parser.add_argument('--learn-seconds', type=float, default=120.0,
                        help='a play bag: s of its play to learn from (the next --test-seconds measure)')
    parser.add_argument('--test-seconds', type=float, default=60.0)
    parser.add_argument('--steps', type=int, default=EncoderTuning.steps)
    parser.add_argument('--lr', type=float, default=EncoderTuning.lr)
    parser.add_argument('--anchor', type=float, default=EncoderTuning.anchor)
    parser.add_argument('--checkpoint', type=Path, default=default_checkpoint_path())
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_checkpoint(args.checkpoint)
    tuning = EncoderTuning(args.steps, args.lr, anchor=args.anchor)
    if args.episodes.suffix == '.npz':
        episodes = load_played(args.episodes)
        learn, test = episodes[:args.train], episodes[args.train:args.train + args.test]
    else:
        learn, test = episodes_by_seconds(str(args.episodes), args.checkpoint, args.learn_seconds,
                                          args.test_seconds, tuning.window)
    try:
        candidate, record = fine_tune_encoder(model, learn, tuning, KeepIfBetter())
        print('kept', json.dumps(record))
    except AdjustmentError as exc:
        print('refused', exc)
        return 0
    for name, m in (('in service', model), ('fine-tuned', candidate)):
        errors = reading_errors(m, reading_offset(m, learn), test)
        start_read = [np.linalg.norm(r[0] - r[-1]) for r in readings(m, test)]
        start_true = [np.linalg.norm(e.hand_positions[0] - e.hand_positions[-1]) for e in test]
        print(f'{name}: test reading error RMS {100 * np.sqrt(errors.mean()):.2f} cm; first-to-last distance read / '
              f'measured {np.sum(start_read) / np.sum(start_true):.2f}; prediction error '
              f'{prediction_errors(m, test).mean():.4f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
