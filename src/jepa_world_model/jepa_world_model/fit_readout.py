"""`jepa fit-readout --bag PLAY... [--checkpoint CKPT] [--out READOUT] [--arm PRESET]`: fit the push skill's cube
read-out (latent -> cube x, y) from play bags, without labels (jepa_world_model.readout says how).

The bags are play data as `jepa collect` records it (camera, joint states, actions); the latents are CKPT's
(default: the shipped model), the hand's position comes from the arm's kinematics. The bags are decoded as the arm
the checkpoint was trained on, or as --arm's preset (bag_layout.layout_for_checkpoint). Where the bags also hold the
simulator's privileged cube pose, the read-out's error against it is reported, for reference only: the fit never
sees it.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from jepa_common.cli import print_summary
from jepa_world_model.bag_layout import BagLayout, add_arm_arguments
from jepa_world_model.readout import ReadoutError, default_readout_path, fit_cube_readout
from jepa_rosbag.reader import BagError
from jepa_world_model.dataset import Ticks, bag_kinematics
from jepa_world_model.model import CheckpointError, encoder_id
from jepa_world_model.train import bags_for_checkpoint, encode_ticks


def hand_positions(ticks: Ticks, layout: BagLayout) -> np.ndarray:
    """The hand's position (N, 3) at every tick: the forward kinematics of the recorded arm joints, with the
    kinematics each bag was decoded with (the layout's URDF, or where that file is absent the bag's own
    /robot_description)."""
    arm = len(layout.arm_joints)
    hands, row = [], 0
    for source in ticks.sources:
        kinematics = bag_kinematics(source['path'], layout)
        hands.append(kinematics.fk(ticks.proprio[row:row + source['ticks'], :arm].astype(np.float64)))
        row += source['ticks']
    return np.concatenate(hands).reshape(-1, 3)


def readout_from_bags(args: argparse.Namespace) -> dict:
    start = time.monotonic()
    _, model, _, layout, ticks = bags_for_checkpoint(args, 'jepa fit-readout')
    hand = hand_positions(ticks, layout)
    opening = ticks.proprio[:, len(layout.arm_joints):].sum(axis=1)
    latents = encode_ticks(model, ticks.images).cpu().numpy()
    readout = fit_cube_readout(latents, hand, opening, ticks.segment, encoder_id(model))
    out = Path(args.out) if args.out else default_readout_path() if args.checkpoint is None else \
        Path(args.checkpoint).with_name(f'{Path(args.checkpoint).stem}_cube_readout.npz')
    readout.save(out)
    summary = {'out': str(out), 'model_id': model.model_id, 'encoder_id': readout.encoder_id,
               'arm': layout.describe(), 'ticks': len(ticks), **vars(readout.fit),
               'seconds': round(time.monotonic() - start, 1)}
    known = np.isfinite(ticks.cube[:, :2]).all(axis=1)
    if known.any():
        errors = np.linalg.norm(readout(latents[known]) - ticks.cube[known, :2], axis=1)
        summary['privileged_check_cm'] = {'median': round(float(np.median(errors)) * 100, 2),
                                          'mean': round(float(errors.mean()) * 100, 2), 'ticks': int(known.sum())}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='jepa fit-readout', description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', action='append', required=True, help='play bag (repeat for several)')
    parser.add_argument('--checkpoint', default=None, help='world model whose latents to read (default: shipped)')
    parser.add_argument('--out', default=None, help='read-out file (default: next to the checkpoint, '
                                                    '<checkpoint>_cube_readout.npz)')
    add_arm_arguments(parser, for_checkpoint=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    return print_summary('jepa fit-readout', lambda: readout_from_bags(args),
                         (ReadoutError, BagError, CheckpointError, OSError, ValueError))
