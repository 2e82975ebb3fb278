"""A goal-conditioned value learned from play with hindsight goals (no labels, no reward but "reached"), for the
higher level's terminal cost where latent distance misleads (§13: the hand between cube and goal; the cube a few
centimetres short with the hand beside it).

V(s, g) ~ -(steps from s to g) under the best of play's behaviour: IQL-style expectile TD (HILP, Park et al. 2024),
r = -1 per step, 0 once g is reached; goals drawn from the same episode's future (hindsight), the next state, or
any state. `train` writes it; `eval_value.py` plans with it."""
import argparse
import json
import time

import numpy as np
import torch
from torch import nn


class GoalValue(nn.Module):
    def __init__(self, latent_dim: int, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * latent_dim, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, s: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """-> (B,) value <= 0 (minus the steps to the goal)."""
        return -nn.functional.softplus(self.net(torch.cat([s, g - s], -1))).squeeze(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--play', nargs='+', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--seconds', type=float, default=400)
    ap.add_argument('--gamma', type=float, default=0.97)
    ap.add_argument('--expectile', type=float, default=0.9)
    ap.add_argument('--batch', type=int, default=512)
    ap.add_argument('--lr', type=float, default=3e-4)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    zs, eps, offset = [], [], 0
    for path in a.play:
        play = np.load(path)
        zs.append(play['z'])
        eps.append(play['ep'] + offset)
        offset = eps[-1].max() + 1
    z = torch.as_tensor(np.concatenate(zs), dtype=torch.float32)
    ep = np.concatenate(eps)
    n = len(z)
    has_next = np.r_[ep[1:] == ep[:-1], False]
    rows = np.flatnonzero(has_next)
    ends = np.zeros(n, int)   # last row of each row's episode
    for e in np.unique(ep):
        r = np.flatnonzero(ep == e)
        ends[r] = r[-1]
    value, target = GoalValue(z.shape[1]), GoalValue(z.shape[1])
    target.load_state_dict(value.state_dict())
    opt = torch.optim.Adam(value.parameters(), lr=a.lr)
    start, step, losses = time.monotonic(), 0, []
    while time.monotonic() - start < a.seconds:
        i = rng.choice(rows, a.batch)
        kind = rng.random(a.batch)
        future = np.minimum(i + 1 + rng.geometric(1 - a.gamma, a.batch), ends[i])
        g = np.where(kind < 0.2, i + 1, np.where(kind < 0.7, future, rng.integers(n, size=a.batch)))
        s, s_next, goal = z[i], z[i + 1], z[g]
        reached = torch.as_tensor(g == i + 1, dtype=torch.float32)
        with torch.no_grad():
            y = -1.0 + a.gamma * (1 - reached) * target(s_next, goal)
        v = value(s, goal)
        diff = y - v
        weight = torch.where(diff > 0, a.expectile, 1 - a.expectile)
        loss = (weight * diff.pow(2)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, q in zip(target.parameters(), value.parameters()):
                p.lerp_(q, 0.005)
        step += 1
        losses.append(loss.item())
        if step % 2000 == 0:
            print(f'step {step} loss {np.mean(losses[-2000:]):.4f} t {time.monotonic() - start:.0f}s', flush=True)
    torch.save({'state_dict': value.state_dict(), 'latent_dim': z.shape[1], 'args': vars(a), 'steps': step}, a.out)
    print(json.dumps({'steps': step, 'loss': float(np.mean(losses[-1000:]))}))


if __name__ == '__main__':
    main()
