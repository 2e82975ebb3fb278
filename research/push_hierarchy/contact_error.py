"""Held-out error of higher-level predictors per macro-action on in-process play they never saw, split into windows
where the cube moved (> 5 mm over the 6 macro-actions; privileged label, diagnostics only) and where it did not,
next to copy-last. Also a cube probe (ridge on play, diagnostics only): how far the predicted terminal latent reads
the cube as moving against the real one, on cube-moving windows (under-prediction = regression to the mean)."""
import argparse
import json

import numpy as np
import torch

from jepa_world_model.high_level import HighLevelModel, macro_actions
from jepa_world_model.model import default_checkpoint_path, encoder_id, load_checkpoint


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--play', required=True)
    ap.add_argument('--probe-play', required=True, help='play to fit the cube probe on (not the test play)')
    ap.add_argument('--high', nargs='+', required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    play = dict(np.load(a.play))
    fit = dict(np.load(a.probe_play))
    X = np.c_[fit['z'], np.ones(len(fit['z']))]
    W = np.linalg.solve(X.T @ X + 1e-3 * np.eye(X.shape[1]), X.T @ fit['cube'][:, :2])
    probe = lambda z: np.c_[z, np.ones(len(z))] @ W
    K, H = 5, 6
    starts = []
    for e in np.unique(play['ep']):
        rows = np.flatnonzero(play['ep'] == e)
        starts += list(rows[:len(rows) - H * K:3])
    starts = np.array(starts)
    idx = starts[:, None] + K * np.arange(H + 1)
    moved = np.linalg.norm(play['cube'][idx[:, -1], :2] - play['cube'][idx[:, 0], :2], axis=1) > 0.005
    acts = play['a'][starts[:, None] + np.arange(H * K)].reshape(len(starts), H, K, 4)
    z = torch.as_tensor(play['z'][idx], dtype=torch.float32)
    scale = float(model.latent_var.mean())
    out = {'windows': len(starts), 'moved': int(moved.sum())}
    copy = ((z[:, :1] - z[:, 1:]) ** 2).mean(-1).numpy() / scale
    out['copy_last'] = {'moved': copy[moved].mean(0).round(3).tolist(), 'still': copy[~moved].mean(0).round(3).tolist()}
    true_move = play['cube'][idx[moved, -1], :2] - play['cube'][idx[moved, 0], :2]
    for path in a.high:
        high = HighLevelModel.load(path, encoder_id(model), model.latent_dim)
        macros = torch.as_tensor(np.stack([macro_actions(x, high.max_step) for x in acts]), dtype=torch.float32)
        with torch.no_grad():
            pred = high.rollout(z[:, 0], macros)
        err = ((pred - z[:, 1:]) ** 2).mean(-1).numpy() / scale
        p_move = probe(pred[moved, -1].numpy()) - probe(z[moved, 0].numpy())
        r_move = probe(z[moved, -1].numpy()) - probe(z[moved, 0].numpy())
        along = lambda m: float(np.mean(np.sum(m * true_move, 1) / np.linalg.norm(true_move, axis=1)))
        out[path] = {'moved': err[moved].mean(0).round(3).tolist(), 'still': err[~moved].mean(0).round(3).tolist(),
                     'probe_cube_move_along_true_cm': {'predicted': round(100 * along(p_move), 2),
                                                       'real_latent': round(100 * along(r_move), 2),
                                                       'true': round(100 * float(np.linalg.norm(true_move, axis=1).mean()), 2)}}
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
