"""Mode-2 planners: sampling-based trajectory optimization (CEM or MPPI) with warm start and optional
proposals, then gradient refinement of the best sequence through the differentiable world model.

A planner only sees an objective: a callable mapping candidate action sequences (B, T, A) to costs (B,)
(see cost.PlanObjective, which rolls a world model out). So it works with any model that has
rollout(z0, actions), and with plain functions in tests.
"""
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PlanResult:
    actions: torch.Tensor      # (T, A), within bounds
    cost: float                # objective of `actions`
    sampled_cost: float        # best cost found by sampling, before gradient refinement
    evaluations: int           # candidate sequences scored
    plan_time_ms: float


class SamplingPlanner:
    """Shared loop of CEM and MPPI; subclasses define how a scored population updates the sampling
    distribution. Call plan() once per control step: the previous plan, shifted by one step, is the
    warm start (receding horizon)."""

    def __init__(self, low: Sequence[float], high: Sequence[float], horizon: int, samples: int = 256,
                 iterations: int = 3, grad_steps: int = 3, grad_lr: float = 0.1, init_std: float = 0.5,
                 min_std: float = 0.05, seed: int | None = None, device: str | torch.device = 'cpu'):
        self.device = torch.device(device)
        self.low = torch.as_tensor(low, dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(high, dtype=torch.float32, device=self.device)
        if self.low.shape != self.high.shape or not torch.all(self.low < self.high):
            raise ValueError(f'action bounds must have equal shapes and low < high, got {low} / {high}')
        if horizon < 1 or samples < 1 or iterations < 1 or grad_steps < 0:
            raise ValueError('horizon, samples and iterations must be >= 1 and grad_steps >= 0')
        self.horizon, self.samples, self.iterations, self.grad_steps = horizon, samples, iterations, grad_steps
        self.grad_lr = grad_lr
        self.half_range = (self.high - self.low) / 2
        self.center = (self.high + self.low) / 2
        self.init_std, self.min_std = init_std, min_std
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(seed)
        self.previous: torch.Tensor | None = None

    @property
    def action_dim(self) -> int:
        return self.low.shape[0]

    def reset(self) -> None:
        """Forget the warm start (new task, new episode, or the world changed under us)."""
        self.previous = None

    def clamp(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(actions, self.high), self.low)

    def warm_start(self) -> torch.Tensor:
        if self.previous is None:
            return self.center.expand(self.horizon, -1).clone()
        # Shift by one control step; the last action is repeated (a smooth guess for the new tail).
        return torch.cat([self.previous[1:], self.previous[-1:]])

    def update(self, candidates: torch.Tensor, costs: torch.Tensor, mean: torch.Tensor,
               std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def plan(self, objective: Objective, proposals: torch.Tensor | None = None) -> PlanResult:
        """Minimize objective over action sequences. proposals (P, T, A), e.g. from the Mode-1 policy, join
        the first population as candidates."""
        start = time.perf_counter()
        mean = self.warm_start()
        std = self.init_std * self.half_range.expand(self.horizon, -1).clone()
        best, best_cost, evaluations = mean, float('inf'), 0
        for iteration in range(self.iterations):
            # Drawn on the CPU generator: seeded runs give the same plans on any device.
            noise = torch.randn(self.samples, self.horizon, self.action_dim, generator=self.generator).to(self.device)
            candidates = self.clamp(mean + std * noise)
            if iteration == 0:
                extra = [mean[None]]
                if proposals is not None and len(proposals):
                    extra.append(self.clamp(proposals.reshape(-1, self.horizon, self.action_dim)))
                candidates = torch.cat([*extra, candidates])
            with torch.inference_mode():
                costs = objective(candidates)
            costs = torch.nan_to_num(costs, nan=float('inf'))
            evaluations += len(candidates)
            i = int(torch.argmin(costs))
            if float(costs[i]) < best_cost:
                best, best_cost = candidates[i].clone(), float(costs[i])
            mean, std = self.update(candidates, costs, mean, std)
            std = torch.maximum(std, self.min_std * self.half_range)
        # The distribution's mean can beat every single sample (MPPI averages); score it once.
        with torch.no_grad():
            mean_cost = float(objective(self.clamp(mean)[None])[0])
        evaluations += 1
        if mean_cost < best_cost:
            best, best_cost = self.clamp(mean), mean_cost
        sampled_cost = best_cost
        if self.grad_steps:
            best, best_cost, n = self.refine(objective, best, best_cost)
            evaluations += n
        self.previous = best.detach()
        return PlanResult(best.detach(), best_cost, sampled_cost, evaluations,
                          (time.perf_counter() - start) * 1e3)

    def refine(self, objective: Objective, actions: torch.Tensor, cost: float) -> tuple[torch.Tensor, float, int]:
        """Projected gradient descent (Adam, step in units of the action range) on one sequence through the
        differentiable objective; keeps the best iterate, so it never returns something worse."""
        # Optimize in normalized units so one learning rate suits metres and gripper commands alike.
        u = ((actions - self.center) / self.half_range).detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([u], lr=self.grad_lr)
        best, best_cost = actions, cost
        for _ in range(self.grad_steps):
            optimizer.zero_grad()
            loss = objective((self.center + self.half_range * u)[None])[0]
            value = float(loss.detach())
            if value < best_cost:
                best, best_cost = (self.center + self.half_range * u).detach().clone(), value
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                u.clamp_(-1.0, 1.0)
        with torch.no_grad():
            final = self.center + self.half_range * u
            value = float(objective(final[None])[0])
        if value < best_cost:
            best, best_cost = final.detach().clone(), value
        return best, best_cost, self.grad_steps + 1


class CEMPlanner(SamplingPlanner):
    """Cross-entropy method: refit a diagonal Gaussian to the elite fraction, with momentum."""

    def __init__(self, *args, elite_fraction: float = 0.1, momentum: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.elites = max(2, int(round(elite_fraction * self.samples)))
        self.momentum = momentum

    def update(self, candidates, costs, mean, std):
        elite = candidates[torch.topk(costs, min(self.elites, len(costs)), largest=False).indices]
        new_mean, new_std = elite.mean(0), elite.std(0)
        return (self.momentum * mean + (1 - self.momentum) * new_mean,
                self.momentum * std + (1 - self.momentum) * new_std)


class MPPIPlanner(SamplingPlanner):
    """Model-predictive path integral: exponentially cost-weighted average of the population. The
    temperature is relative to the population's cost spread, so it needs no retuning per cost scale."""

    def __init__(self, *args, temperature: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature = temperature

    def update(self, candidates, costs, mean, std):
        finite = torch.isfinite(costs)
        c = torch.where(finite, costs, costs[finite].max() if finite.any() else torch.zeros(()))
        spread = (c.max() - c.min()).clamp_min(1e-9)
        weights = torch.softmax(-(c - c.min()) / (self.temperature * spread), dim=0)
        new_mean = torch.einsum('b,bta->ta', weights, candidates)
        new_std = torch.einsum('b,bta->ta', weights, (candidates - new_mean).pow(2)).sqrt()
        return new_mean, new_std


PLANNERS = {'cem': CEMPlanner, 'mppi': MPPIPlanner}


def make_planner(kind: str, *args, **kwargs) -> SamplingPlanner:
    if kind not in PLANNERS:
        raise ValueError(f'unknown planner {kind!r} (one of {sorted(PLANNERS)})')
    return PLANNERS[kind](*args, **kwargs)
