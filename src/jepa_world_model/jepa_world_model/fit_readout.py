"""`jepa fit-readout --bag PLAY... [--checkpoint CKPT] [--out READOUT]`: fit the push skill's cube read-out
(latent -> cube x, y) from play bags, without labels (jepa_world_model.readout says how).

The bags are play data as `jepa collect` records it (camera, joint states, actions); the latents are CKPT's
(default: the shipped model), the hand's position comes from the arm's kinematics. Where the bags also hold the
simulator's privileged cube pose, the read-out's error against it is reported, for reference only: the fit
never sees it.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from jepa_common.cli import print_summary
from jepa_common.kinematics import ArmKinematics
from jepa_world_model.readout import ReadoutError, default_readout_path, fit_cube_readout
from jepa_rosbag.reader import BagError
from jepa_world_model.dataset import load_bags
from jepa_world_model.model import CheckpointError, default_checkpoint_path, encoder_id, load_checkpoint
from jepa_world_model.train import encode_ticks


def readout_from_bags(bags: list[str], checkpoint: str | None, out: str | None) -> dict:
    start = time.monotonic()
    model = load_checkpoint(checkpoint or default_checkpoint_path())
    ticks = load_bags(bags, image_size=model.image_size)
    kinematics = ArmKinematics()
    arm = len(kinematics.arm_joints)
    hand = np.array([kinematics.fk(q) for q in ticks.proprio[:, :arm].astype(np.float64)])
    opening = ticks.proprio[:, arm:].sum(axis=1)
    latents = encode_ticks(model, ticks.images).cpu().numpy()
    readout = fit_cube_readout(latents, hand, opening, ticks.segment, encoder_id(model))
    out = Path(out) if out else default_readout_path() if checkpoint is None else \
        Path(checkpoint).with_name(f'{Path(checkpoint).stem}_cube_readout.npz')
    readout.save(out)
    summary = {'out': str(out), 'model_id': model.model_id, 'encoder_id': readout.encoder_id, 'ticks': len(ticks),
               **vars(readout.fit), 'seconds': round(time.monotonic() - start, 1)}
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
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    return print_summary('jepa fit-readout', lambda: readout_from_bags(args.bag, args.checkpoint, args.out),
                         (ReadoutError, BagError, CheckpointError, OSError))
