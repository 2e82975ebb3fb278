"""Cost module: the hard-wired intrinsic cost and the trainable critic (learned cost-to-go).

Everything is torch and vectorized over (batch of candidate plans, horizon) so the actor scores thousands of
candidates in one call and differentiates through them for gradient refinement.

Convention for jepa_interfaces/CostTerms: every term field holds the *weighted* term, so
`total = energy + latent + effort + joint_limits + workspace + hand + critic` and the intrinsic cost is
`total - critic`.
"""
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jepa_common.settings import setting
from jepa_world_model.versioned import load_module

TERMS = ('energy', 'latent', 'effort', 'joint_limits', 'workspace', 'hand')
CRITIC_FORMAT_VERSION = 1


class CriticError(RuntimeError):
    """A critic checkpoint that cannot be used (missing, corrupt, other latent space)."""


# A weight is a factor >= 0; the range rclpy enforces on the `weights.*` parameters.
WEIGHT_SPAN = (0.0, 1e6)


@dataclass
class CostWeights:
    """The weight of each cost term: CostTerms fields and the planner's objective hold weight x term. The cost
    node and the actor declare them as live `weights.<term>` parameters (the configurator sets them per task)."""
    energy: float = setting(1.0, 'JEPA energy: the displacement to the goal latent the world model\'s effector map '
                            'reads (controllable), in squared control steps', WEIGHT_SPAN, live=True)
    latent: float = setting(0.3, 'JEPA energy, isotropic: mean squared latent distance to the goal / the embeddings\' '
                            'variance (1 ~ unrelated states); keeps what the effector map does not see (the cube)',
                            WEIGHT_SPAN, live=True)
    effort: float = setting(0.05, 'squared step size relative to max_step', WEIGHT_SPAN, live=True)
    joint_limits: float = setting(1.0, 'squared intrusion into the margin near each joint limit', WEIGHT_SPAN,
                                  live=True)
    workspace: float = setting(1.0, 'squared excursion outside the workspace box, in max_steps', WEIGHT_SPAN,
                               live=True)
    hand: float = setting(0.0, 'squared distance of the end effector to the hand goal a higher level sets (the '
                          'scripted push skill), in max_steps', WEIGHT_SPAN, live=True)
    critic: float = setting(0.0, 'learned cost-to-go, the terminal cost of a plan; acts once a critic is loaded',
                            WEIGHT_SPAN, live=True)

    def __post_init__(self):
        for name in self.names():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f'cost weight {name} must be finite and >= 0, got {value!r}')
            setattr(self, name, float(value))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ArmContext:
    """What the geometric terms need about the arm right now, linearized about the current configuration:
    end effector position, joint positions and the map from an end-effector step to a joint step.
    The linearization makes the terms batched and differentiable without IK per candidate.
    hand_goal: where a higher level that works on positions (the scripted push skill) wants the end effector next."""
    ee: torch.Tensor          # (3,)
    q: torch.Tensor           # (n,)
    dq_dx: torch.Tensor       # (n, 3): damped pseudo-inverse of the position Jacobian
    lower: torch.Tensor       # (n,)
    upper: torch.Tensor       # (n,)
    workspace: torch.Tensor   # (3, 2)
    hand_goal: torch.Tensor | None = None   # (3,)

    @classmethod
    def from_kinematics(cls, kinematics, q_arm, eps: float = 1e-4, damping: float = 1e-4,
                        device: str | torch.device = 'cpu') -> 'ArmContext':
        """Build from a jepa_common.kinematics.ArmKinematics (finite-difference Jacobian: 8 FK calls)."""
        q_arm = np.asarray(q_arm, dtype=float)
        ee = kinematics.fk(q_arm)
        jac = np.stack([(kinematics.fk(q_arm + eps * e) - ee) / eps for e in np.eye(len(q_arm))], axis=1)
        pinv = jac.T @ np.linalg.inv(jac @ jac.T + damping * np.eye(3))
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
        return cls(t(ee), t(q_arm), t(pinv), t(kinematics.lower), t(kinematics.upper), t(kinematics.workspace))

    def ee_path(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, T, A) actions -> (B, T, 3) end-effector positions after each step."""
        return self.ee + torch.cumsum(actions[..., :3], dim=-2)


class IntrinsicCost(nn.Module):
    """Hard-wired cost per plan step, shape (B, T) for each term.

    energy and latent: the JEPA energy, the distance between predicted and goal latent, in two metrics of
    `EnergyMetric` (controllable displacement, and isotropic); effort: squared step size relative to max_step;
    joint_limits: squared intrusion into a margin near each joint limit (fraction of the range); workspace:
    squared excursion outside the workspace box, in max_steps; hand: squared distance in max_steps between the
    end effector after each step and the arm's hand_goal (0 without one), the proprioceptive twin of the energy
    for a goal given as a hand position: the arm's kinematics know where a hand step goes, while the effector map
    (learned, linear) can misjudge its length where the world model saw little motion, near the table.
    """

    def __init__(self, weights: CostWeights | None = None, max_step: float = 0.03,
                 joint_margin: float = 0.05, metric: 'EnergyMetric | None' = None):
        super().__init__()
        self.weights = weights or CostWeights()
        self.metric = metric or EnergyMetric()
        self.max_step = max_step
        self.joint_margin = joint_margin

    def terms(self, latents: torch.Tensor, goal: torch.Tensor, actions: torch.Tensor,
              arm: ArmContext | None = None) -> dict[str, torch.Tensor]:
        """latents (B, T, D), goal (D,) or (B, D), actions (B, T, A) -> unweighted terms, each (B, T)."""
        if goal.dim() == 1:
            goal = goal[None]
        difference = latents - goal[:, None, :]
        energy, latent = self.metric.controllable(difference, self.max_step), self.metric.isotropic(difference)
        effort = (actions[..., :3] / self.max_step).pow(2).mean(-1)
        zero = torch.zeros_like(energy)
        if arm is None:
            return {'energy': energy, 'latent': latent, 'effort': effort, 'joint_limits': zero, 'workspace': zero,
                    'hand': zero}
        steps = torch.cumsum(actions[..., :3], dim=-2)
        q = arm.q + steps @ arm.dq_dx.T
        fraction = (q - arm.lower) / (arm.upper - arm.lower)
        m = self.joint_margin
        joint_limits = ((torch.relu(m - fraction) + torch.relu(fraction - 1 + m)) / m).pow(2).sum(-1)
        ee = arm.ee + steps
        outside = torch.relu(arm.workspace[:, 0] - ee) + torch.relu(ee - arm.workspace[:, 1])
        workspace = (outside / self.max_step).pow(2).sum(-1)
        hand = zero if arm.hand_goal is None else ((ee - arm.hand_goal) / self.max_step).pow(2).sum(-1)
        return {'energy': energy, 'latent': latent, 'effort': effort, 'joint_limits': joint_limits,
                'workspace': workspace, 'hand': hand}

    def state_terms(self, z: torch.Tensor, goal: torch.Tensor, last_action: torch.Tensor | None = None,
                    arm: ArmContext | None = None) -> dict[str, float]:
        """Unweighted terms of one observed state: energy to the goal, effort of the action that led here,
        joint-limit and workspace terms of the arm as it is now."""
        still = torch.zeros(1, 1, 4, device=z.device)
        terms = self.terms(z.reshape(1, 1, -1), goal, still, arm)
        if last_action is not None:
            terms['effort'] = self.terms(z.reshape(1, 1, -1), goal, last_action.reshape(1, 1, -1))['effort']
        return {name: float(value.reshape(-1)[0]) for name, value in terms.items()}

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(getattr(self.weights, name) * terms[name] for name in TERMS)

    def forward(self, latents, goal, actions, arm=None) -> torch.Tensor:
        return self.weighted(self.terms(latents, goal, actions, arm))


class EnergyMetric:
    """The distances between two latents that the energy measures, read from the world model itself.

    An isotropic distance in the latent space ranks states poorly by how far the arm is from where the goal
    shows it, because most latent dimensions describe things planning cannot or need not change. The world
    model's inverse-dynamics head reads the end-effector step *linearly* from the latent step
    (model.inverse_translation, learned from the agent's own actions, no labels), so that map is a metric on the
    latent space that measures controllable displacement in metres. Two terms come from it:

    controllable: (|effector_map (z - g)| / max_step)^2, squared control steps to the goal (the isotropic
    distance when the model has no effector map);
    isotropic: mean((z - g)^2) / latent_scale, 1 ~ two unrelated states: what the effector map does not see
    (the cube) stays in the energy through it.
    """

    def __init__(self, effector_map: torch.Tensor | None = None, latent_scale: float = 1.0):
        self.effector_map = effector_map
        self.latent_scale = latent_scale

    @classmethod
    def of(cls, model_or_state_dict, device='cpu') -> 'EnergyMetric':
        """From a WorldModel or its checkpoint's state_dict: `latent_var` (mean per-dimension variance of the
        training embeddings) and the inverse-dynamics translation map scaled to metres. Either may be absent
        (other models): then the scale is 1, or the controllable term falls back to the isotropic one."""
        state = model_or_state_dict if isinstance(model_or_state_dict, dict) else model_or_state_dict.state_dict()
        latent_var = state.get('latent_var')
        scale = float(torch.as_tensor(latent_var).float().mean()) if latent_var is not None else 1.0
        if not (np.isfinite(scale) and scale > 0):
            scale = 1.0
        weight, action_scale = state.get('inverse_translation.weight'), state.get('action_scale')
        effector_map = None
        if weight is not None and action_scale is not None:
            effector_map = (weight.float() * action_scale[:weight.shape[0], None].float()).to(device)
        return cls(effector_map, scale)

    def isotropic(self, difference: torch.Tensor) -> torch.Tensor:
        """difference (..., D) between latents and goal -> (...)."""
        return difference.pow(2).mean(-1) / self.latent_scale

    def controllable(self, difference: torch.Tensor, max_step: float) -> torch.Tensor:
        if self.effector_map is None:
            return self.isotropic(difference)
        return (difference @ self.effector_map.T / max_step).pow(2).sum(-1)


class Critic(nn.Module):
    """Learned cost-to-go V(z, goal) >= 0 in one latent space (the world model's `model_id`)."""

    def __init__(self, latent_dim: int, hidden: int = 128, model_id: str = '', discount: float = 0.9):
        super().__init__()
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.model_id = model_id
        self.discount = discount
        self.net = nn.Sequential(nn.Linear(2 * latent_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, 1), nn.Softplus())
        # Latent statistics of the training data: standardizing inputs makes one learning rate fit any encoder.
        self.register_buffer('mean', torch.zeros(latent_dim))
        self.register_buffer('std', torch.ones(latent_dim))

    def forward(self, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """z (..., D), goal (D,) or (..., D) -> (...) cost-to-go."""
        goal = goal.expand_as(z)
        x = torch.cat([(z - self.mean) / self.std, (goal - self.mean) / self.std], dim=-1)
        return self.net(x).squeeze(-1)

    def save(self, path: str | Path, provenance: dict | None = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({'format_version': CRITIC_FORMAT_VERSION, 'kind': 'jepa_critic',
                    'config': {'latent_dim': int(self.latent_dim), 'hidden': int(self.hidden),
                               'model_id': str(self.model_id), 'discount': float(self.discount)},
                    'state_dict': self.state_dict(), 'provenance': provenance or {}}, str(path))

    @classmethod
    def load(cls, path: str | Path, latent_dim: int | None = None, model_id: str | None = None) -> 'Critic':
        """Load a critic; raises CriticError naming the problem (file, format, latent size, model)."""
        return load_module(cls, path, 'jepa_critic', CRITIC_FORMAT_VERSION, CriticError, 'critic', latent_dim,
                           model_id, hint='train it again with jepa train-critic')


@dataclass
class CriticReport:
    transitions: int
    episodes: int
    method: str
    loss: float
    epochs: int


def train_critic(episodes: list[dict], latent_dim: int | None = None, critic: Critic | None = None,
                 method: str = 'td', discount: float = 0.9, epochs: int = 200, lr: float = 3e-3,
                 batch_size: int = 256, model_id: str = '', seed: int = 0) -> tuple[Critic, CriticReport]:
    """Fit V(z, goal) from episodes.

    Each episode is a dict of arrays: `states` (N, D), `next_states` (N, D), `costs` (N,) (intrinsic cost of
    each state), `goals` (N, D). method 'td': TD(0) fitted value iteration, target c_t + discount * V'(z_{t+1})
    with V' the previous epoch's critic (the last transition of an episode bootstraps too: short-term
    memory cuts episodes, it does not end them); 'mc': discounted sum of the episode's remaining costs.
    """
    if method not in ('td', 'mc'):
        raise ValueError(f'unknown critic training method {method!r} (td or mc)')
    episodes = [e for e in episodes if len(e['costs'])]
    if not episodes:
        raise ValueError('no transitions to train the critic on')
    generator = torch.Generator().manual_seed(seed)
    cat = lambda key: torch.as_tensor(np.concatenate([e[key] for e in episodes]), dtype=torch.float32)  # noqa: E731
    states, next_states, costs, goals = cat('states'), cat('next_states'), cat('costs'), cat('goals')
    latent_dim = latent_dim or states.shape[1]
    if states.shape[1] != latent_dim:
        raise ValueError(f'episodes have latent_dim {states.shape[1]}, expected {latent_dim}')
    if critic is None:
        torch.manual_seed(seed)
        critic = Critic(latent_dim, model_id=model_id, discount=discount)
        critic.mean.copy_(states.mean(0))
        critic.std.copy_(states.std(0).clamp_min(1e-3) if len(states) > 1 else torch.ones(latent_dim))
    critic.discount = discount
    if method == 'mc':
        returns = []
        for e in episodes:
            g, out = 0.0, np.empty(len(e['costs']))
            for t in range(len(e['costs']) - 1, -1, -1):
                g = e['costs'][t] + discount * g
                out[t] = g
            returns.append(out)
        fixed_targets = torch.as_tensor(np.concatenate(returns), dtype=torch.float32)
    optimizer = torch.optim.Adam(critic.parameters(), lr=lr)
    critic.train()
    n = len(states)
    loss_value = float('nan')
    for _ in range(epochs):
        if method == 'td':
            with torch.no_grad():
                targets = costs + discount * critic(next_states, goals)
        else:
            targets = fixed_targets
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = nn.functional.mse_loss(critic(states[idx], goals[idx]), targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach())
    critic.eval()
    return critic, CriticReport(n, len(episodes), method, loss_value, epochs)


class PlanObjective:
    """Total cost of candidate action sequences from one state: world-model rollout, intrinsic cost per step,
    critic as terminal cost. Callable on (B, T, A) -> (B,); differentiable w.r.t. the actions."""

    def __init__(self, model, intrinsic: IntrinsicCost, z0: torch.Tensor, goal: torch.Tensor,
                 arm: ArmContext | None = None, critic: Critic | None = None, discount: float = 1.0):
        self.model = model
        self.intrinsic = intrinsic
        self.z0 = z0.detach().reshape(1, -1)
        self.goal = goal.detach().reshape(-1)
        self.arm = arm
        self.critic = critic if critic is not None and intrinsic.weights.critic > 0 else None
        self.discount = discount

    def rollout(self, actions: torch.Tensor) -> torch.Tensor:
        return self.model.rollout(self.z0.expand(actions.shape[0], -1), actions)

    def evaluate(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """-> (total (B,), latents (B, T, D), per-term sums (B,) weighted as in the total)."""
        latents = self.rollout(actions)
        terms = self.intrinsic.terms(latents, self.goal, actions, self.arm)
        horizon = actions.shape[1]
        w = self.discount ** torch.arange(horizon, dtype=actions.dtype, device=actions.device)
        summed = {name: getattr(self.intrinsic.weights, name) * (terms[name] * w).sum(-1) for name in TERMS}
        total = sum(summed.values())
        if self.critic is not None:
            summed['critic'] = self.intrinsic.weights.critic * self.discount ** horizon * self.critic(
                latents[:, -1], self.goal)
            total = total + summed['critic']
        return total, latents, summed

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        return self.evaluate(actions)[0]


class SubgoalObjective:
    """The higher level's cost of macro-action sequences (B, H, 4) from one latent: the JEPA energy of the latent
    its model predicts after the last one, to the goal, and the macro-actions' mean squared size (`effort`).
    The energy is terminal only: a detour (around the cube, behind it) costs nothing on the way, only where it
    ends; the effort settles ties between plans that end alike (near the goal, every loop back to it) in favour
    of the one that moves least. Callable on (B, H, 4) -> (B,)."""

    def __init__(self, model, metric: EnergyMetric, z0: torch.Tensor, goal: torch.Tensor, energy: float,
                 latent: float, effort: float, max_step: float):
        self.model, self.metric = model, metric
        self.z0 = z0.detach().reshape(1, -1)
        self.goal = goal.detach().reshape(-1)
        self.energy, self.latent, self.effort, self.max_step = energy, latent, effort, max_step

    def rollout(self, macros: torch.Tensor) -> torch.Tensor:
        return self.model.rollout(self.z0.expand(macros.shape[0], -1), macros)

    def __call__(self, macros: torch.Tensor) -> torch.Tensor:
        difference = self.rollout(macros)[:, -1] - self.goal
        return self.latent * self.metric.isotropic(difference) \
            + self.energy * self.metric.controllable(difference, self.max_step) \
            + self.effort * macros[..., :3].pow(2).sum(-1).mean(-1)
