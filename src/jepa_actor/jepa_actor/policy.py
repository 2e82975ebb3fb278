"""Mode-1: a reactive policy (latent, goal latent) -> action, distilled from Mode-2's plans.

The policy reads the state and where the goal lies from it (goal - state): what Mode-2 does depends mostly on
that displacement, which every step of every episode shows, while the goal itself takes one value per episode, so a
policy on (state, goal) learns the goals it was taught and not the ones it was not (research/mode1_distillation).

DAgger-style: the labels are Mode-2's first actions on the states the actor itself visits, so the policy
learns on its own state distribution. It proposes candidates to Mode-2 and drives the arm alone when the
configurator selects mode1.
"""
from collections import deque
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from jepa_world_model.versioned import load_module

POLICY_FORMAT_VERSION = 2  # 2: input (state, goal - state); 1 read (state, goal)


class PolicyError(RuntimeError):
    """A policy checkpoint that cannot be used."""


class ReactivePolicy(nn.Module):
    def __init__(self, latent_dim: int, low: Sequence[float], high: Sequence[float], hidden: int = 128,
                 model_id: str = ''):
        super().__init__()
        self.latent_dim, self.hidden, self.model_id = latent_dim, hidden, model_id
        self.register_buffer('low', torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer('high', torch.as_tensor(high, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(2 * latent_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, len(low)), nn.Tanh())

    def forward(self, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """z (..., D), goal (D,) or (..., D) -> actions (..., A) within [low, high]."""
        x = torch.cat([z, goal.expand_as(z) - z], dim=-1)
        return self.low + (self.net(x) + 1) / 2 * (self.high - self.low)

    def propose(self, model, z0: torch.Tensor, goal: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the policy closed-loop inside the world model: -> actions (T, A), latents (T, D)."""
        z = z0.reshape(1, -1)
        actions, latents = [], []
        for _ in range(horizon):
            a = self(z, goal)
            z = model.predict(z, a)
            actions.append(a[0])
            latents.append(z[0])
        return torch.stack(actions), torch.stack(latents)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({'format_version': POLICY_FORMAT_VERSION, 'kind': 'jepa_policy',
                    'config': {'latent_dim': int(self.latent_dim), 'hidden': int(self.hidden),
                               'model_id': str(self.model_id), 'low': self.low.tolist(), 'high': self.high.tolist()},
                    'state_dict': self.state_dict()}, str(path))

    @classmethod
    def load(cls, path: str | Path, latent_dim: int | None = None, model_id: str | None = None) -> 'ReactivePolicy':
        """Load a policy; raises PolicyError naming the problem (file, format, latent size, model)."""
        return load_module(cls, path, 'jepa_policy', POLICY_FORMAT_VERSION, PolicyError, 'policy', latent_dim,
                           model_id, hint='its input is the state and goal - state: distil it again')


class PolicyDistiller:
    """Bounded aggregate of (state, goal, Mode-2 action) labels and the regression that fits the policy."""

    def __init__(self, policy: ReactivePolicy, capacity: int = 5000, lr: float = 1e-3, batch_size: int = 128,
                 seed: int = 0):
        self.policy = policy
        self.examples: deque = deque(maxlen=capacity)
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.updates = 0
        self.labelled = 0   # examples added, over the bounded aggregate's evictions

    def add(self, z, goal, action) -> None:
        as_np = lambda t: np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float32)  # noqa: E731
        self.examples.append((as_np(z).reshape(-1), as_np(goal).reshape(-1), as_np(action).reshape(-1)))
        self.labelled += 1

    def teach(self, z, goal, action, every: int, steps: int) -> None:
        """Add one label and, every `every` labels (0: never), fit `steps` regression steps."""
        self.add(z, goal, action)
        if every > 0 and self.labelled % every == 0:
            self.fit(steps)

    def batch(self, size: int | None = None) -> tuple[torch.Tensor, ...]:
        idx = self.rng.integers(0, len(self.examples), size or self.batch_size)
        device = self.policy.low.device
        return tuple(torch.as_tensor(np.stack(x), device=device) for x in zip(*(self.examples[i] for i in idx)))

    def imitation_error(self) -> float:
        """Mean squared action error (in units of the action half-range) over all examples."""
        if not self.examples:
            return float('nan')
        device = self.policy.low.device
        z, g, a = (torch.as_tensor(np.stack(x), device=device) for x in zip(*self.examples))
        with torch.no_grad():
            return float(self._loss(z, g, a))

    def _loss(self, z, g, a) -> torch.Tensor:
        scale = (self.policy.high - self.policy.low) / 2
        return ((self.policy(z, g) - a) / scale).pow(2).mean()

    def fit(self, steps: int) -> float:
        """A few regression steps on random batches; returns the last batch loss (nan with no data)."""
        if not self.examples:
            return float('nan')
        self.policy.train()
        loss = torch.zeros(())
        for _ in range(steps):
            loss = self._loss(*self.batch())
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.policy.eval()
        self.updates += steps
        return float(loss.detach())
