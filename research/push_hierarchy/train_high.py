"""Train the high-level predictor s_t, m -> s_{t+K} on frozen-encoder latents of play; report open-loop error
per macro on held-out episodes against copy-last and the shipped one-step model rolled out with the same actions."""
import argparse, time
import numpy as np
import torch
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
from hierarchy import episodes_of, train_high, windows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--play', nargs='+', default=['data/play.npz'])
    ap.add_argument('--K', type=int, default=5)
    ap.add_argument('--H', type=int, default=6)
    ap.add_argument('--epochs', type=int, default=60)
    ap.add_argument('--hidden', type=int, default=384)
    ap.add_argument('--dropout', type=float, default=0.1)
    ap.add_argument('--wd', type=float, default=1e-4)
    ap.add_argument('--budget', type=float, default=600)
    ap.add_argument('--out', default='data/high.pt')
    ap.add_argument('--change-weight', type=float, default=0.0)
    ap.add_argument('--z-dim', type=int, default=0)
    ap.add_argument('--beta', type=float, default=0.02)
    ap.add_argument('--seed', type=int, default=0, help='initialisation and batch order (ensemble members)')
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    scale = float(model.latent_var.mean())
    eps = []
    for f in a.play:
        eps += episodes_of(dict(np.load(f)))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(eps))
    n_val = max(2, len(eps) // 10)
    val = [eps[i] for i in order[:n_val]]; train = [eps[i] for i in order[n_val:]]
    print(f'{len(train)} train / {len(val)} val episodes, latent scale {scale:.4f}', flush=True)
    t0 = time.monotonic()
    net = train_high(train, val, a.K, a.H, epochs=a.epochs, hidden=a.hidden, dropout=a.dropout, wd=a.wd,
                     latent_scale=scale, time_budget_s=a.budget, change_weight=a.change_weight, z_dim=a.z_dim, beta=a.beta,
                     seed=a.seed)
    print(f'training took {time.monotonic() - t0:.0f} s', flush=True)
    # held-out comparison
    S, M, T, EE, CU = windows(val, a.K, a.H, stride=3)
    St, Mt, Tt = map(torch.as_tensor, (S, M, T))
    with torch.no_grad():
        e_high = ((net.rollout(St, Mt) - Tt).pow(2).mean(-1) / scale).mean(0)
        e_copy = ((St[:, None] - Tt).pow(2).mean(-1) / scale).mean(0)
        # one-step model rolled with the real actions
        acts = []
        for e in val:
            n = len(e['z']) - 1
            for t in range(0, n - a.H * a.K + 1, 3):
                acts.append(e['a'][t:t + a.H * a.K])
        roll = model.rollout(St, torch.as_tensor(np.array(acts)))[:, a.K - 1::a.K]
        e_one = ((roll - Tt).pow(2).mean(-1) / scale).mean(0)
        # the same restricted to windows in which the cube moves > 2 cm
        moving = torch.as_tensor(np.linalg.norm(CU[:, -1, :2] - CU[:, 0, :2], axis=1) > 0.02)
        f = lambda e: ((e[moving]).pow(2).mean(-1) / scale).mean(0)  # noqa
        em_high, em_copy, em_one = f(net.rollout(St, Mt) - Tt), f(St[:, None] - Tt), f(roll - Tt)
    fmt = lambda v: ' '.join(f'{x:.3f}' for x in v.tolist())  # noqa
    print(f'held-out normalized error per macro (K={a.K}, {len(S)} windows):\n high {fmt(e_high)}\n copy-last '
          f'{fmt(e_copy)}\n one-step model rollout {fmt(e_one)}', flush=True)
    print(f'windows with cube moving >2cm ({int(moving.sum())}):\n high {fmt(em_high)}\n copy-last {fmt(em_copy)}\n '
          f'one-step {fmt(em_one)}', flush=True)
    init = dict(latent_dim=S.shape[1], macro_dim=4, hidden=a.hidden, layers=3, dropout=a.dropout, latent_scale=scale)
    if a.z_dim:
        init['z_dim'] = a.z_dim
    torch.save({'init': init, 'state': net.state_dict(), 'K': a.K, 'H': a.H}, a.out)
    print('saved', a.out)


if __name__ == '__main__':
    main()
