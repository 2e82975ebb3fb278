"""Re-calibrating perception offline: the episodes adapt_in_process.py saved, fine-tuned on and measured.

The method is jepa_configurator.adjust_encoder's (`jepa adjust-encoder`; its docstring says what and why), moved
there from this file: commit e668917 holds the research version with the variants LOG.md §5 tried (hand steps
instead of positions, VICReg instead of the anchor).

    # offline, on the episodes adapt_in_process.py --save-episodes kept:
    ../../.venv/bin/python encoder_tuning.py data/camera_moved_off.npz --train 10 --steps 1200
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

from jepa_configurator.adjust_encoder import (EncoderTuning, Episode, fine_tune_encoder, prediction_errors,
                                              reading_errors, reading_offset, readings)
from jepa_configurator.adjust_world_model import AdjustmentError, KeepIfBetter
from jepa_world_model.model import default_checkpoint_path, load_checkpoint


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


def main() -> int:
    parser = argparse.ArgumentParser(description='the encoder fine-tuned offline on saved perturbed episodes')
    parser.add_argument('episodes', type=Path)
    parser.add_argument('--train', type=int, default=5, help='episodes to learn from (the next ones judge)')
    parser.add_argument('--test', type=int, default=10, help='episodes after them to measure on')
    parser.add_argument('--steps', type=int, default=EncoderTuning.steps)
    parser.add_argument('--lr', type=float, default=EncoderTuning.lr)
    parser.add_argument('--anchor', type=float, default=EncoderTuning.anchor)
    parser.add_argument('--checkpoint', type=Path, default=default_checkpoint_path())
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = load_checkpoint(args.checkpoint)
    episodes = load_played(args.episodes)
    learn, test = episodes[:args.train], episodes[args.train:args.train + args.test]
    tuning = EncoderTuning(args.steps, args.lr, anchor=args.anchor)
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
