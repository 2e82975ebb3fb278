"""Fine-tune the shipped world model's predictor (the control level) on contact-rich in-process play, the encoder
frozen so the latent space, the higher level and the read-out stay valid. Loss: the open-loop rollout loss of
`jepa train` (discounted, z = 0), over `--horizon` steps. Reports held-out error per horizon before and after,
split into windows where the cube moved (> 5 mm, privileged label, diagnostics only) and windows where it did not."""
import argparse
import json
import time

import numpy as np
import torch

from jepa_world_model.model import default_checkpoint_path, read_checkpoint, model_from_checkpoint, save_checkpoint


def windows(play, episodes, length):
    z, a, cube, ep = play['z'], play['a'], play['cube'], play['ep']
    starts = []
    for e in episodes:
        rows = np.flatnonzero(ep == e)
        starts += list(rows[:len(rows) - length])
    starts = np.array(starts)
    idx = starts[:, None] + np.arange(length + 1)
    moved = np.linalg.norm(cube[idx[:, -1], :2] - cube[idx[:, 0], :2], axis=1) > 0.005
    return (torch.as_tensor(z[idx], dtype=torch.float32), torch.as_tensor(a[idx[:, :-1]], dtype=torch.float32),
            moved)


@torch.no_grad()
def errors(model, states, actions):
    out = []
    for i in range(0, len(states), 4096):
        pred = model.rollout(states[i:i + 4096, 0], actions[i:i + 4096])
        out.append(model.normalized_error(pred, states[i:i + 4096, 1:]))
    return torch.cat(out).numpy()        # (N, H)


def summary(err, moved):
    return {'all': err.mean(0).round(3).tolist(), 'cube_moved': err[moved].mean(0).round(3).tolist(),
            'cube_still': err[~moved].mean(0).round(3).tolist(), 'moved_share': float(moved.mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--play', nargs='+', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--horizon', type=int, default=10)
    ap.add_argument('--discount', type=float, default=0.9)
    ap.add_argument('--lr', type=float, default=1e-4)
    ap.add_argument('--seconds', type=float, default=300)
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--moved-weight', type=float, default=1.0, help='loss weight of windows where the cube moved')
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(a.seed)
    path = default_checkpoint_path()
    checkpoint, model_id = read_checkpoint(path)
    model = model_from_checkpoint(checkpoint, path, model_id)
    train_w, val_w = [], []
    for f in a.play:
        play = dict(np.load(f))
        eps = np.unique(play['ep'])
        n_val = max(1, len(eps) // 10)
        train_w.append(windows(play, eps[:-n_val], a.horizon))
        val_w.append(windows(play, eps[-n_val:], a.horizon))
    cat = lambda ws, i: (torch.cat([w[i] for w in ws]) if i < 2 else np.concatenate([w[i] for w in ws]))
    tz, ta, tm = (cat(train_w, i) for i in range(3))
    vz, va, vm = (cat(val_w, i) for i in range(3))
    before = summary(errors(model, vz, va), vm)
    print('before', json.dumps(before), flush=True)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.predictor.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(model.predictor.parameters(), lr=a.lr)
    weights = torch.as_tensor(np.where(tm, a.moved_weight, 1.0), dtype=torch.float32)
    disc = a.discount ** torch.arange(a.horizon, dtype=torch.float32)
    start, step = time.monotonic(), 0
    model.train()
    while time.monotonic() - start < a.seconds:
        idx = torch.randint(0, len(tz), (a.batch,))
        pred = model.rollout(tz[idx, 0], ta[idx])
        err = model.normalized_error(pred, tz[idx, 1:])          # (B, H)
        loss = ((err * disc).sum(1) * weights[idx]).sum() / weights[idx].sum() / disc.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.predictor.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 500 == 0:
            print(f'step {step} loss {loss.item():.4f} t {time.monotonic() - start:.0f}s', flush=True)
    model.eval()
    after = summary(errors(model, vz, va), vm)
    print('after', json.dumps(after), flush=True)
    report = {'play': a.play, 'args': vars(a), 'steps': step, 'before': before, 'after': after}
    provenance = {**checkpoint['provenance'], 'adjustments': [*checkpoint['provenance'].get('adjustments', []),
                                                              {'research_finetune': report}]}
    save_checkpoint(model, a.out, provenance, checkpoint['metrics'])
    print(json.dumps({'steps': step}))


if __name__ == '__main__':
    main()
