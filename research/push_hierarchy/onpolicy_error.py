"""How wrong a higher level is on its own closed-loop push episodes against play: normalized open-loop error per
macro-action (as train_high_level's held-out error) on every window of collect_onpolicy.py's npz, against a
held-out-like play file, and on the windows where the cube moved > 2 cm in the 3 s (privileged selection only).
    onpolicy_error.py --high-level data/high_pkg_230.pt --npz data/onpolicy_230.npz data/play_contact4.npz"""
import argparse

import numpy as np
import torch

from jepa_world_model.high_level import HighLevelModel, rollout_windows, split_episodes
from jepa_world_model.model import default_checkpoint_path, load_checkpoint

ap = argparse.ArgumentParser()
ap.add_argument('--high-level', required=True)
ap.add_argument('--npz', nargs='+', required=True)
a = ap.parse_args()
torch.set_num_threads(1)
model = load_checkpoint(default_checkpoint_path())
scale = float(model.latent_var.mean())
high = HighLevelModel.load(a.high_level)
K, H = high.macro_steps, high.config.rollout_macros
for path in a.npz:
    d = dict(np.load(path))
    S, M, T = rollout_windows(split_episodes(d['z'], d['a'], d['ep']), high.config, 0.03, stride=2)
    cube_eps = split_episodes(d['cube'], d['a'], d['ep'])
    moved = []
    for cube, actions in cube_eps:
        for t in range(0, len(actions) - H * K + 1, 2):
            moved.append(np.linalg.norm(cube[t + H * K, :2] - cube[t, :2]) > 0.02)
    moved = np.array(moved)
    with torch.no_grad():
        err = (high.rollout(S, M) - T).pow(2).mean(-1) / scale
    copy = (S[:, None] - T).pow(2).mean(-1) / scale
    print(f'{path}: {len(S)} windows ({moved.sum()} with the cube moved > 2 cm)')
    print('  all       model ' + ' '.join(f'{v:.3f}' for v in err.mean(0).tolist())
          + ' | copy-last ' + ' '.join(f'{v:.3f}' for v in copy.mean(0).tolist()))
    if moved.any():
        print('  cube moved model ' + ' '.join(f'{v:.3f}' for v in err[moved].mean(0).tolist())
              + ' | copy-last ' + ' '.join(f'{v:.3f}' for v in copy[moved].mean(0).tolist()))
