"""A learned higher level (ROS-free): macro-actions from play, a high-level latent predictor over them, and a
high-level planner whose first predicted latent is the low level's goal (HWM-style; Hi-LeWM-style library
sampling of macro-action sequences seen in play).

Macro-action of a K-step action chunk: m = [net hand displacement / (K * max_step) (3), mean gripper (1)].
High-level predictor: s_{t+K} = s_t + f(s_t, m_t), trained on frozen-encoder latents of play with an open-loop
loss over H macros. Planner: CEM over H macros, first population drawn from the play library (contiguous play
macro sequences and independent play macros), cost = push-profile latent cost of the predicted latents to the
goal latent (later macros weighted more). Nothing privileged on the decision path: latents and own actions only.
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

MAX_STEP = 0.03


# ---------------------------------------------------------------- macro-actions

def macro_of(actions: np.ndarray, K: int) -> np.ndarray:
    """actions (..., K, 4) -> macro (..., 4)."""
    net = actions[..., :3].sum(-2) / (K * MAX_STEP)
    grip = actions[..., 3].mean(-1, keepdims=True)
    return np.concatenate([net, grip], -1).astype(np.float32)


def episodes_of(play: dict) -> list[dict]:
    out = []
    for e in np.unique(play['ep']):
        idx = np.flatnonzero(play['ep'] == e)
        out.append({k: play[k][idx] for k in ('z', 'a', 'ee', 'cube')})
    return out


def windows(episodes: list[dict], K: int, H: int, stride: int = 1):
    """(s0 (N, D), macros (N, H, 4), targets (N, H, D), ee (N, H+1, 3), cube (N, H+1, 3)) over every start t."""
    S, M, T, EE, CU = [], [], [], [], []
    for e in episodes:
        n = len(e['z']) - 1  # transitions
        for t in range(0, n - H * K + 1, stride):
            ts = t + K * np.arange(H + 1)
            S.append(e['z'][t])
            M.append(macro_of(e['a'][t:t + H * K].reshape(H, K, 4), K))
            T.append(e['z'][ts[1:]])
            EE.append(e['ee'][ts]); CU.append(e['cube'][ts])
    return (np.array(S, np.float32), np.array(M, np.float32), np.array(T, np.float32), np.array(EE, np.float32),
            np.array(CU, np.float32))


# ---------------------------------------------------------------- high-level predictor

class HighPredictor(nn.Module):
    def __init__(self, latent_dim: int = 64, macro_dim: int = 4, hidden: int = 384, layers: int = 3,
                 dropout: float = 0.0, latent_scale: float = 1.0):
        super().__init__()
        sizes = [latent_dim + macro_dim] + [hidden] * (layers - 1)
        mods = []
        for i, o in zip(sizes[:-1], sizes[1:]):
            mods += [nn.Linear(i, o), nn.LayerNorm(o), nn.GELU()] + ([nn.Dropout(dropout)] if dropout else [])
        mods.append(nn.Linear(sizes[-1], latent_dim))
        self.net = nn.Sequential(*mods)
        nn.init.zeros_(self.net[-1].bias)
        self.net[-1].weight.data.mul_(0.1)
        self.register_buffer('mean', torch.zeros(latent_dim))
        self.register_buffer('std', torch.ones(latent_dim))
        self.register_buffer('delta_std', torch.ones(latent_dim))
        self.latent_scale = latent_scale
        self.K = 0

    def forward(self, s, m):
        x = torch.cat([(s - self.mean) / self.std, m], -1)
        return s + self.net(x) * self.delta_std

    def rollout(self, s0, macros):
        """s0 (B, D), macros (B, H, 4) -> (B, H, D)."""
        out, s = [], s0
        for h in range(macros.shape[1]):
            s = self(s, macros[:, h])
            out.append(s)
        return torch.stack(out, 1)


class HighPredictorZ(HighPredictor):
    """With a latent variable z (what the macro-action does not determine: contact outcomes), KL-bounded;
    q(z | s, s') while training; at planning z is drawn from the prior N(0, I)."""

    def __init__(self, latent_dim: int = 64, macro_dim: int = 4, hidden: int = 384, layers: int = 3,
                 dropout: float = 0.0, latent_scale: float = 1.0, z_dim: int = 4):
        super().__init__(latent_dim, macro_dim + z_dim, hidden, layers, dropout, latent_scale)
        self.z_dim = z_dim
        self.posterior = nn.Sequential(nn.Linear(2 * latent_dim, 128), nn.GELU(), nn.Linear(128, 2 * z_dim))

    def forward(self, s, m, z=None):
        if z is None:
            z = s.new_zeros(*s.shape[:-1], self.z_dim)
        return super().forward(s, torch.cat([m, z], -1))

    def infer(self, s, s_next):
        mu, logvar = self.posterior(torch.cat([(s - self.mean) / self.std, (s_next - s) / self.delta_std], -1)).chunk(2, -1)
        return mu, logvar.clamp(-6, 3)

    def rollout(self, s0, macros, zs=None):
        out, s = [], s0
        for h in range(macros.shape[1]):
            s = self(s, macros[:, h], None if zs is None else zs[:, h])
            out.append(s)
        return torch.stack(out, 1)


class EnsemblePredictor(nn.Module):
    """Several high-level predictors trained alike from different seeds; their spread is where the model does
    not know (planners exploit such states: the disagreement penalty keeps the search where the members agree)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.delta_std = members[0].delta_std

    def rollout_members(self, s0, macros):
        return torch.stack([m.rollout(s0, macros) for m in self.members])   # (M, B, H, D)

    def rollout(self, s0, macros):
        return self.rollout_members(s0, macros).mean(0)


class NoisePredictor(nn.Module):
    """Ablation: the high-level predictor replaced by noise (the current latent plus Gaussian noise with the
    per-dimension std of real K-step latent changes; the macro-action is ignored)."""

    def __init__(self, delta_std: torch.Tensor, seed: int = 0):
        super().__init__()
        self.delta_std = delta_std
        self.g = torch.Generator().manual_seed(seed)

    def rollout(self, s0, macros):
        B, H = macros.shape[:2]
        noise = torch.randn(B, H, s0.shape[-1], generator=self.g) * self.delta_std
        return s0[:, None] + noise.cumsum(1)


def train_high(train_eps, val_eps, K: int, H: int, epochs: int = 60, lr: float = 1e-3, wd: float = 1e-4,
               hidden: int = 384, dropout: float = 0.1, batch: int = 256, latent_scale: float = 1.0, seed: int = 0,
               log=print, time_budget_s: float = 600, change_weight: float = 0.0, z_dim: int = 0,
               beta: float = 0.02):
    import time
    torch.manual_seed(seed)
    S, M, T, _, _ = windows(train_eps, K, H)
    Sv, Mv, Tv, _, _ = windows(val_eps, K, H, stride=3)
    S, M, T = map(torch.as_tensor, (S, M, T))
    Sv, Mv, Tv = map(torch.as_tensor, (Sv, Mv, Tv))
    net = (HighPredictorZ(S.shape[1], M.shape[2], hidden, 3, dropout, latent_scale, z_dim) if z_dim
           else HighPredictor(S.shape[1], M.shape[2], hidden, 3, dropout, latent_scale))
    allz = torch.cat([S, T.reshape(-1, S.shape[1])])
    net.mean.copy_(allz.mean(0)); net.std.copy_(allz.std(0).clamp_min(1e-3))
    net.delta_std.copy_((T[:, 0] - S).std(0).clamp_min(1e-4))
    net.K = K
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    w = torch.tensor([0.9 ** h for h in range(H)])
    # optional: upweight windows whose latent changes most beyond copy-last (contact), no labels needed
    change = (T - S[:, None]).pow(2).mean(-1)          # (N, H)
    sample_w = 1.0 + change_weight * change / change.mean()

    def err(pred, tgt):  # normalized error per step (B, H)
        return (pred - tgt).pow(2).mean(-1) / latent_scale

    t0 = time.monotonic()
    best = (float('inf'), None)
    for ep in range(epochs):
        net.train()
        order = torch.randperm(len(S))
        for i in range(0, len(S), batch):
            idx = order[i:i + batch]
            # noise on the start state: robustness to its own prediction errors
            s0 = S[idx] + 0.02 * torch.randn_like(S[idx]) * net.std
            if z_dim:
                preds, kls, s_cur = [], [], s0
                for h in range(H):
                    mu, lv = net.infer(s_cur, T[idx, h])
                    zz = mu + (0.5 * lv).exp() * torch.randn_like(mu)
                    kls.append(0.5 * (mu.pow(2) + lv.exp() - 1 - lv).sum(-1))
                    s_cur = net(s_cur, M[idx, h], zz)
                    preds.append(s_cur)
                kl = torch.stack(kls, 1)
                loss = ((err(torch.stack(preds, 1), T[idx]) + beta * kl) * w * sample_w[idx]).sum(-1).mean() \
                    / sample_w[idx].mean()
            else:
                loss = (err(net.rollout(s0, M[idx]), T[idx]) * w * sample_w[idx]).sum(-1).mean() / sample_w[idx].mean()
            opt.zero_grad(); loss.backward(); opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            ve = err(net.rollout(Sv, Mv), Tv).mean(0)
        score = float(ve.mean())
        if score < best[0]:
            best = (score, {k: v.clone() for k, v in net.state_dict().items()})
        if ep % 5 == 0 or ep == epochs - 1:
            log((f'KL/macro {float(kl.mean()):.2f} ' if z_dim else '') + f'epoch {ep}: train loss {float(loss.detach()):.4f} val open-loop err per macro '
                + ' '.join(f'{v:.3f}' for v in ve.tolist()) + f' ({time.monotonic() - t0:.0f} s)')
        if time.monotonic() - t0 > time_budget_s:
            log(f'time budget reached at epoch {ep}')
            break
    net.load_state_dict(best[1])
    net.eval()
    return net


# ---------------------------------------------------------------- high-level planner

@dataclass
class HighConfig:
    K: int = 5
    H: int = 6
    samples: int = 512
    iterations: int = 3
    elites: int = 32
    library_share: float = 1.0     # share of the first population drawn from play (the rest Gaussian)
    contiguous_share: float = 0.5  # of the library draws: whole play macro sequences (else independent macros)
    terminal_weight: float = 1.0   # cost weight of the last macro; earlier ones get step_weight each
    step_weight: float = 0.2
    energy: float = 0.1            # push profile: controllable (effector-map) distance
    latent: float = 1.0            # push profile: isotropic distance
    replan_every: int = 1
    z_samples: int = 8             # latent-variable predictor: draws of z per candidate
    z_reduce: str = 'min'          # min (optimistic), mean, zero (z = 0 only)
    disagreement: float = 0.0      # ensemble: cost = members' mean cost + this x their std
    subgoal_index: int = 0         # which predicted latent of the best plan becomes the low level's goal
    final_goal_share: float = 0.0  # low level's goal = (1 - share) x sub-goal + share x final goal; the costs are
                                   # quadratic in the goal, so this is the two goals' costs summed with these weights
    seed: int = 0


class HighPlanner:
    def __init__(self, predictor, library: np.ndarray, library_seqs: np.ndarray, metric, cfg: HighConfig):
        self.pred, self.cfg, self.metric = predictor, cfg, metric
        self.library = torch.as_tensor(library)
        self.library_seqs = torch.as_tensor(library_seqs)
        self.g = torch.Generator().manual_seed(cfg.seed)
        self.zg = torch.Generator().manual_seed(cfg.seed + 1)
        self.previous = None
        lim = np.ones(4, np.float32)
        self.low, self.high = torch.as_tensor(-lim), torch.as_tensor(lim)

    def reset(self):
        self.previous = None

    def cost(self, latents, goal):
        c = self.cfg
        d = latents - goal
        per = c.latent * self.metric.isotropic(d) + c.energy * self.metric.controllable(d, MAX_STEP)
        H = latents.shape[1]
        w = torch.full((H,), c.step_weight)
        w[-1] = c.terminal_weight
        return (per * w).sum(-1)

    def evaluate(self, z0, cand, goal):
        """-> (costs (B,), latents (B, H, D)) of candidates from z0; with a latent variable, reduced over z draws
        (min: the best outcome the model deems possible; the latents of that draw)."""
        c = self.cfg
        B = len(cand)
        zd = getattr(self.pred, 'z_dim', 0)
        if isinstance(self.pred, EnsemblePredictor):
            lat = self.pred.rollout_members(z0[None].expand(B, -1), cand)
            costs = torch.stack([self.cost(m, goal) for m in lat])
            return costs.mean(0) + c.disagreement * costs.std(0), lat.mean(0)
        if not zd or c.z_reduce == 'zero':
            lat = self.pred.rollout(z0[None].expand(B, -1), cand)
            return self.cost(lat, goal), lat
        n = c.z_samples
        zs = torch.randn(n, 1, c.H, zd, generator=self.zg).expand(n, B, c.H, zd).reshape(n * B, c.H, zd)
        lat = self.pred.rollout(z0[None].expand(n * B, -1), cand.repeat(n, 1, 1), zs)
        costs = self.cost(lat, goal).reshape(n, B)
        lat = lat.reshape(n, B, c.H, -1)
        if c.z_reduce == 'mean':
            return costs.mean(0), lat.mean(0)
        best = costs.argmin(0)
        return costs.min(0).values, lat[best, torch.arange(B)]

    def population(self, n):
        c = self.cfg
        n_lib = int(round(n * c.library_share))
        n_seq = int(round(n_lib * c.contiguous_share))
        parts = []
        if n_seq:
            parts.append(self.library_seqs[torch.randint(len(self.library_seqs), (n_seq,), generator=self.g)])
        if n_lib - n_seq:
            idx = torch.randint(len(self.library), (n_lib - n_seq, c.H), generator=self.g)
            parts.append(self.library[idx])
        if n - n_lib:
            parts.append(torch.randn(n - n_lib, c.H, 4, generator=self.g).clamp(-1, 1))
        return torch.cat(parts)

    def plan(self, z, goal):
        """z (D,), goal (D,) -> (macros (H, 4), predicted latents (H, D), cost)."""
        c = self.cfg
        with torch.no_grad():
            cand = self.population(c.samples)
            if self.previous is not None:
                warm = torch.cat([self.previous[1:], self.previous[-1:]])[None]
                cand = torch.cat([warm, self.previous[None], cand])
            best, best_cost = None, float('inf')
            mean = std = elite_set = None
            for it in range(c.iterations):
                if it > 0:
                    cand = (mean + std * torch.randn(c.samples, c.H, 4, generator=self.g)).clamp(self.low, self.high)
                    cand = torch.cat([elite_set, cand])
                costs, _ = self.evaluate(z, cand, goal)
                order = torch.argsort(costs)
                elite_set = cand[order[:c.elites]]
                if float(costs[order[0]]) < best_cost:
                    best_cost, best = float(costs[order[0]]), cand[order[0]].clone()
                mean, std = elite_set.mean(0), elite_set.std(0).clamp_min(0.05)
            self.previous = best
            _, lat = self.evaluate(z, best[None], goal)
            lat = lat[0]
        return best, lat, best_cost


class TwoLevelAgent:
    """The higher level sets the low-level Actor's goal latent: the first predicted latent of its best plan."""

    def __init__(self, actor, planner: HighPlanner):
        self.actor, self.planner = actor, planner
        self.steps = 0
        self.subgoal = None
        self.last_plan = None

    def reset(self):
        self.actor.reset(); self.planner.reset()
        self.steps = 0; self.subgoal = None

    def act(self, z, goal, q_arm):
        zt = torch.as_tensor(np.asarray(z, np.float32)); gt = torch.as_tensor(np.asarray(goal, np.float32))
        if self.subgoal is None or self.steps % self.planner.cfg.replan_every == 0:
            macros, lat, cost = self.planner.plan(zt, gt)
            share = self.planner.cfg.final_goal_share
            self.subgoal = ((1 - share) * lat[min(self.planner.cfg.subgoal_index, len(lat) - 1)] + share * gt).numpy()
            self.last_plan = (macros.numpy(), lat.numpy(), cost)
        self.steps += 1
        return self.actor.act(z, self.subgoal, q_arm, 'mode2')
