"""The actor's core (ROS-free): one decision per new state.

Mode-2 optimizes an action sequence through the world model (planner.py) against the cost (cost.py), and
the first action is executed; the reactive Mode-1 policy is distilled from those plans on the fly and both
proposes candidates to Mode-2 and acts alone in mode1. The world model runs in-process: the planner's
thousands of rollouts per step are one batched torch call, not DDS round trips.
"""
import time
from dataclasses import dataclass, fields

import numpy as np
import torch

from jepa_planner.cost import ArmContext, Critic, CostWeights, IntrinsicCost, PlanObjective, energy_scale_of
from jepa_planner.planner import make_planner
from jepa_planner.policy import PolicyDistiller, ReactivePolicy

MODES = ('mode2', 'mode1', 'idle')


@dataclass
class ActorConfig:
    planner: str = 'mppi'
    horizon: int = 8
    samples: int = 256
    iterations: int = 2
    grad_steps: int = 2
    grad_lr: float = 0.1
    discount: float = 1.0
    max_step: float = 0.03
    policy_proposals: bool = True
    distill_every: int = 1
    distill_steps: int = 2
    # In mode1, every this many steps Mode-2 also plans (not executed) to label the state the policy led
    # to: DAgger proper, the policy learns on its own state distribution. 0 = never.
    dagger_every: int = 5
    seed: int = 0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass
class Decision:
    mode: str
    action: np.ndarray            # (A,) to execute now
    actions: np.ndarray           # (T, A) the plan
    latents: np.ndarray           # (T, D) predicted latents along the plan
    ee_path: np.ndarray | None    # (T + 1, 3) end-effector path from the current position, if the arm is known
    expected_cost: float
    cost_terms: dict              # weighted term sums of the plan
    sampled_cost: float           # best cost before gradient refinement (mode2)
    plan_time_ms: float


class Actor:
    def __init__(self, model, config: ActorConfig | None = None, weights: CostWeights | None = None,
                 kinematics=None, critic: Critic | None = None, policy: ReactivePolicy | None = None):
        self.config = config or ActorConfig()
        self.model = model.eval()
        self.device = next(model.parameters()).device if any(True for _ in model.parameters()) \
            else torch.device('cpu')
        for p in self.model.parameters():
            p.requires_grad_(False)  # gradients flow to the actions only
        self.kinematics = kinematics
        self.intrinsic = IntrinsicCost(weights or CostWeights(), max_step=self.config.max_step,
                                       energy_scale=energy_scale_of(model))
        self.critic = critic.to(self.device) if critic is not None else None
        m = self.config.max_step
        self.low, self.high = [-m, -m, -m, -1.0], [m, m, m, 1.0]
        if model.action_dim != len(self.low):
            raise ValueError(f'the world model takes {model.action_dim}-d actions; the actor emits ee_delta (4-d)')
        self.policy = (policy or ReactivePolicy(model.latent_dim, self.low, self.high,
                                                model_id=model.model_id)).to(self.device)
        self.distiller = PolicyDistiller(self.policy, seed=self.config.seed)
        self.plans = 0
        self.mode1_steps = 0
        self.planner = self._make_planner()

    def _make_planner(self):
        c = self.config
        return make_planner(c.planner, self.low, self.high, c.horizon, samples=c.samples, iterations=c.iterations,
                            grad_steps=c.grad_steps, grad_lr=c.grad_lr, seed=c.seed, device=self.device)

    def reconfigure(self, **changes) -> None:
        """Change ActorConfig fields (e.g. from ROS parameters); rebuilds the planner, losing its warm start."""
        unknown = set(changes) - set(ActorConfig.names())
        if unknown:
            raise ValueError(f'unknown actor settings {sorted(unknown)}')
        for key, value in changes.items():
            setattr(self.config, key, type(getattr(self.config, key))(value))
        self.planner = self._make_planner()

    @property
    def weights(self) -> CostWeights:
        return self.intrinsic.weights

    def reset(self) -> None:
        self.planner.reset()

    def arm_context(self, q_arm) -> ArmContext | None:
        if self.kinematics is None or q_arm is None:
            return None
        return ArmContext.from_kinematics(self.kinematics, q_arm, device=self.device)

    def act(self, z: np.ndarray, goal: np.ndarray, q_arm: np.ndarray | None = None, mode: str = 'mode2') -> Decision:
        if mode not in ('mode2', 'mode1'):
            raise ValueError(f'actor mode {mode!r} does not act (acting modes: mode2, mode1)')
        z_t = torch.as_tensor(np.asarray(z, dtype=np.float32).reshape(-1), device=self.device)
        goal_t = torch.as_tensor(np.asarray(goal, dtype=np.float32).reshape(-1), device=self.device)
        if z_t.shape != goal_t.shape or z_t.shape[0] != self.model.latent_dim:
            raise ValueError(f'latent {tuple(z_t.shape)} and goal {tuple(goal_t.shape)} must both have the '
                             f'model\'s latent_dim {self.model.latent_dim}')
        arm = self.arm_context(q_arm)
        objective = PlanObjective(self.model, self.intrinsic, z_t, goal_t, arm, self.critic, self.config.discount)
        if mode == 'mode1':
            t0 = time.perf_counter()
            with torch.no_grad():
                actions, _ = self.policy.propose(self.model, z_t, goal_t, self.config.horizon)
            plan_ms = (time.perf_counter() - t0) * 1e3
            sampled = float('nan')
            self.mode1_steps += 1
            if self.config.dagger_every > 0 and self.mode1_steps % self.config.dagger_every == 0:
                self.planner.reset()  # its last plan is several steps old
                self._distill(z_t, goal_t, self.planner.plan(objective).actions[0])
        else:
            proposals = None
            if self.config.policy_proposals and self.distiller.updates > 0:
                with torch.no_grad():
                    proposals = self.policy.propose(self.model, z_t, goal_t, self.config.horizon)[0][None]
            result = self.planner.plan(objective, proposals)
            actions, plan_ms, sampled = result.actions, result.plan_time_ms, result.sampled_cost
            self._distill(z_t, goal_t, actions[0])
        with torch.no_grad():
            total, latents, terms = objective.evaluate(actions[None])
        ee_path = None
        if arm is not None:
            ee_path = torch.cat([arm.ee[None], arm.ee_path(actions[None])[0]]).cpu().numpy().astype(np.float64)
        actions, latents = actions.cpu(), latents.cpu()
        return Decision(mode, actions[0].numpy().copy(), actions.numpy().copy(), latents[0].numpy(), ee_path,
                        float(total[0]), {k: float(v[0]) for k, v in terms.items()}, sampled, plan_ms)

    def _distill(self, z, goal, action) -> None:
        self.distiller.add(z, goal, action)
        self.plans += 1
        if self.config.distill_every > 0 and self.plans % self.config.distill_every == 0:
            self.distiller.fit(self.config.distill_steps)
