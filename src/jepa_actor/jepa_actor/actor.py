"""The actor's core (ROS-free): one decision per new state.

Mode-2 optimizes an action sequence through the world model (planner.py) against the cost (jepa_cost.cost), and
the first action is executed; the reactive Mode-1 policy is distilled from those plans on the fly and both
proposes candidates to Mode-2 and acts alone in mode1. The world model runs in-process: the planner's
thousands of rollouts per step are one batched torch call, not DDS round trips.

Hierarchy (levels: 2): a learned higher level (jepa_world_model.high_level, `jepa train-high-level`) predicts the
latent several control steps ahead per macro-action (the hand's net displacement and the gripper over
`macro_steps` steps). Every `subgoal_every` steps it searches `subgoal_horizon` macro-actions, its first
candidates drawn from the macro sequences of play, for the one whose predicted end is cheapest
(cost.SubgoalObjective: the end only, so that a detour costs nothing on the way); the latent its first
macro-action is predicted to reach becomes the sub-goal the Mode-2 or Mode-1 controller plans towards. Its first
macro-actions are distilled, as the control level's first actions are, into a reactive sub-goal policy; Mode-1 with
`mode1_subgoals: policy` takes its sub-goals from that policy and searches at neither level.

Scripted reference (`skill: push`): in place of a learned higher level, the hand-written push controller
(scripted_skill.PushSkill) on cube positions read out of the latents sets the sub-goals; each of its hand steps,
mapped into the latent space by the world model's effector map, is the goal the control level plans towards,
and, as a position, the arm's hand goal (the cost's `hand` term). Only the `push_skill` task uses it, the
evaluation's `scripted_skill` condition: it measures what a scripted decomposition achieves, and the agent's own
push task plans without it.
"""
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from jepa_actor.planner import PLANNERS, make_planner
from jepa_actor.policy import PolicyDistiller, ReactivePolicy
from jepa_actor.scripted_skill import PushSkill
from jepa_common.settings import setting
from jepa_cost.cost import (ArmContext, CostWeights, Critic, EnergyMetric, IntrinsicCost, PlanObjective,
                            SubgoalObjective)
from jepa_world_model.readout import CubeReadout

MODES = ('mode2', 'mode1', 'idle')
SKILLS = ('', 'push')
SUBGOAL_SOURCES = ('plan', 'policy')
MODE_ALIASES = {'mpc': 'mode2', 'policy': 'mode1'}


def normalize_mode(mode: str) -> str:
    """Launch arguments say mpc / policy; SetTask and the Plan message say mode2 / mode1."""
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f'unknown mode {mode!r} (mode2|mpc, mode1|policy, idle)')
    return mode


@dataclass
class ActorConfig:
    """How the actor plans. Every setting but max_step is live: a running actor rebuilds its planners for a
    change (`Actor.reconfigure`), losing their warm start; max_step is the arm's action bound, fixed at start."""
    planner: str = setting('mppi', 'Mode-2 sampling planner: mppi or cem', live=True)
    horizon: int = setting(8, 'control steps planned ahead', (1, 1000), live=True)
    samples: int = setting(256, 'candidate action sequences per sampling round', (1, 1_000_000), live=True)
    iterations: int = setting(2, 'sampling rounds per decision', (1, 1000), live=True)
    grad_steps: int = setting(2, 'gradient refinement steps of the best sequence through the world model',
                              (0, 1000), live=True)
    grad_lr: float = setting(0.1, 'gradient refinement step, in units of the action half-range', (0.0, 10.0),
                             live=True)
    discount: float = setting(1.0, 'discount per step of the plan\'s cost', (0.0, 1.0), live=True)
    policy_proposals: bool = setting(True, 'the Mode-1 policy\'s rollout joins Mode-2\'s first population',
                                     live=True)
    distill_every: int = setting(1, 'plans between Mode-1 distillation updates; 0 = never distil', (0, 100_000),
                                 live=True)
    distill_steps: int = setting(2, 'regression steps per distillation update', (0, 100_000), live=True)
    dagger_every: int = setting(5, 'in mode1, Mode-2 also plans (not executed) every this many steps to label the '
                                'state the policy led to (DAgger: the policy learns on its own state distribution); '
                                '0 = never', (0, 100_000), live=True)
    levels: int = setting(1, '1: plan towards the goal; 2: a learned higher level (the node\'s high_level_path) sets '
                          'the sub-goal latent the control level plans towards', (1, 2), live=True)
    subgoal_every: int = setting(1, 'levels 2: control steps between two plans of the higher level', (1, 1000),
                                 live=True)
    subgoal_horizon: int = setting(6, 'levels 2: macro-actions the higher level plans ahead', (1, 1000), live=True)
    subgoal_samples: int = setting(256, 'levels 2: higher-level candidates per round (and as many more drawn from '
                                   'play\'s macro sequences in the first)', (1, 1_000_000), live=True)
    subgoal_iterations: int = setting(3, 'levels 2: higher-level sampling rounds', (1, 1000), live=True)
    subgoal_energy: float = setting(0.1, 'levels 2: weight of the JEPA energy (controllable) of the higher level\'s '
                                    'predicted end to the goal', (0.0, 1e6), live=True)
    subgoal_latent: float = setting(1.0, 'levels 2: weight of the isotropic latent distance of the higher level\'s '
                                    'predicted end to the goal', (0.0, 1e6), live=True)
    subgoal_effort: float = setting(0.0, 'levels 2: weight of the mean squared size of the higher level\'s '
                                    'macro-actions (their hand displacement in units of its bound)', (0.0, 1e6),
                                    live=True)
    mode1_subgoals: str = setting('plan', "levels 2, mode1: the sub-goals from the higher level's search (plan) or "
                                  'from the sub-goal policy distilled from its plans (policy: no search at either '
                                  'level; only then does Mode-2 teach that policy)', live=True)
    skill: str = setting('', "'': plan towards the goal (or the higher level's sub-goal); push: the scripted push "
                         'skill sets the sub-goals (the push_skill reference task)', live=True)
    seed: int = setting(0, 'seed of the planners\', the untrained policy\'s and the distillation\'s random draws',
                        (0, 2 ** 31 - 1), live=True)
    # The arm's action bound (m per step): the kinematics' max_step, not a setting of its own.
    max_step: float = field(default=0.03)

    def __post_init__(self):
        counts = {k: getattr(self, k) for k in ('horizon', 'samples', 'iterations', 'subgoal_every',
                                                'subgoal_horizon', 'subgoal_samples', 'subgoal_iterations')}
        if min(counts.values()) < 1:
            raise ValueError(f'these settings must be >= 1: {counts}')
        negative = {k: getattr(self, k) for k in ('grad_steps', 'distill_every', 'distill_steps', 'dagger_every',
                                                  'seed') if getattr(self, k) < 0}
        if negative:
            raise ValueError(f'these settings must be >= 0: {negative}')
        if self.planner not in PLANNERS:
            raise ValueError(f'planner must be one of {sorted(PLANNERS)}, got {self.planner!r}')
        weights = {k: getattr(self, k) for k in ('subgoal_energy', 'subgoal_latent', 'subgoal_effort')}
        if not all(w >= 0 for w in weights.values()):
            raise ValueError(f'these settings must be >= 0: {weights}')
        if not (self.grad_lr >= 0 and 0 <= self.discount <= 1 and self.max_step > 0):
            raise ValueError(f'need grad_lr >= 0, 0 <= discount <= 1 and max_step > 0, got grad_lr {self.grad_lr}, '
                             f'discount {self.discount}, max_step {self.max_step}')
        if self.mode1_subgoals not in SUBGOAL_SOURCES:
            raise ValueError(f'mode1_subgoals must be one of {SUBGOAL_SOURCES}, got {self.mode1_subgoals!r}')
        if self.levels not in (1, 2):
            raise ValueError(f'levels must be 1 or 2, got {self.levels}')
        if self.skill not in SKILLS:
            raise ValueError(f'skill must be one of {SKILLS}, got {self.skill!r}')
        if self.skill and self.levels != 1:
            raise ValueError(f'skill {self.skill!r} is the higher level: it needs levels 1, got {self.levels}')

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def changed(self, **changes) -> 'ActorConfig':
        """A copy with some settings changed (values converted to the fields' types); ValueError if refused."""
        unknown = set(changes) - set(self.names())
        if unknown:
            raise ValueError(f'unknown actor settings {sorted(unknown)}')
        return replace(self, **{k: type(getattr(self, k))(v) for k, v in changes.items()})


@dataclass
class ActorDecision:
    """What the actor decided for one state: the action to execute now and the plan behind it."""
    mode: str
    action: np.ndarray            # (A,) to execute now
    actions: np.ndarray           # (T, A) the plan
    latents: np.ndarray           # (T, D) predicted latents along the plan
    ee_path: np.ndarray | None    # (T + 1, 3) end-effector path from the current position, if the arm is known
    subgoal: np.ndarray | None    # (D,) the higher level's current sub-goal, the goal planned towards (levels 2,
                                  # or a skill)
    subgoal_path: np.ndarray | None  # (H + 1, 3) levels 2: the hand path the higher level's macro-actions command
                                     # from the current position, if the arm is known
    expected_cost: float
    cost_terms: dict              # weighted term sums of the plan
    sampled_cost: float           # best cost before gradient refinement (mode2)
    plan_time_ms: float


class Actor:
    def __init__(self, model, config: ActorConfig | None = None, weights: CostWeights | None = None,
                 kinematics=None, critic: Critic | None = None, policy: ReactivePolicy | None = None,
                 readout: CubeReadout | None = None, high_level=None, subgoal_policy: ReactivePolicy | None = None):
        self.config = config or ActorConfig()
        self.model = model.eval()
        self.device = next(model.parameters()).device if any(True for _ in model.parameters()) \
            else torch.device('cpu')
        self.high_level = self._checked_high_level(high_level, model)
        self._check_levels(self.config)
        for p in self.model.parameters():
            p.requires_grad_(False)  # gradients flow to the actions only
        self.kinematics = kinematics
        self.intrinsic = IntrinsicCost(weights or CostWeights(), max_step=self.config.max_step,
                                       metric=EnergyMetric.of(model, self.device))
        self.readout = readout
        self.skill = PushSkill()
        effector_map = self.intrinsic.metric.effector_map
        # A hand step -> the latent step that moves the hand by it and nothing else the map reads.
        self.effector_inverse = None if effector_map is None else torch.linalg.pinv(effector_map)
        self.critic = critic.to(self.device) if critic is not None else None
        m = self.config.max_step
        self.low, self.high = [-m, -m, -m, -1.0], [m, m, m, 1.0]
        if model.action_dim != len(self.low):
            raise ValueError(f'the world model takes {model.action_dim}-d actions; the actor emits ee_delta (4-d)')
        self.policy = self._checked_policy(policy, self.low, self.high, 'the Mode-1 policy', 0)
        self.distiller = PolicyDistiller(self.policy, seed=self.config.seed)
        # The higher level's Mode-1: its macro-actions (each component in [-1, 1]) distilled from its plans.
        self.subgoal_policy = self.subgoal_distiller = None
        if self.high_level is not None:
            self.subgoal_policy = self._checked_policy(subgoal_policy, [-1.0] * 4, [1.0] * 4, 'the sub-goal policy', 3)
            self.subgoal_distiller = PolicyDistiller(self.subgoal_policy, seed=self.config.seed + 3)
        elif subgoal_policy is not None:
            raise ValueError('a sub-goal policy needs a learned higher level')
        self.mode1_steps = 0
        # What decisions taught, not yet learned: Mode-1 distillation and DAgger labelling (`learn`).
        self.pending: list = []
        self.subgoal: torch.Tensor | None = None
        self.subgoal_macros: torch.Tensor | None = None   # the higher level's plan behind the sub-goal
        self.steps_since_subgoal = 0
        self._make_planners()

    def _make_planners(self) -> None:
        c = self.config
        self.planner = make_planner(c.planner, self.low, self.high, c.horizon, samples=c.samples,
                                    iterations=c.iterations, grad_steps=c.grad_steps, grad_lr=c.grad_lr, seed=c.seed,
                                    device=self.device)
        # The higher level searches macro-actions, each component in [-1, 1] (high_level.macro_actions).
        self.high_planner = make_planner('cem', [-1.0] * 4, [1.0] * 4, c.subgoal_horizon, samples=c.subgoal_samples,
                                         iterations=c.subgoal_iterations, grad_steps=0, seed=c.seed + 1,
                                         device=self.device)
        self.library_generator = torch.Generator().manual_seed(c.seed + 2)
        self.subgoal = None

    def reconfigure(self, **changes) -> None:
        """Change ActorConfig settings (e.g. from ROS parameters); rebuilds the planners, losing their warm start.
        ValueError, and nothing changes, for settings the config refuses (max_step is fixed: the arm's bound)."""
        if 'max_step' in changes:
            raise ValueError("max_step is fixed at start (it is the arm's action bound)")
        config = self.config.changed(**changes)
        self._check_levels(config)
        self.config = config
        self._make_planners()

    @property
    def weights(self) -> CostWeights:
        return self.intrinsic.weights

    def reset(self) -> None:
        self.planner.reset()
        self.high_planner.reset()
        self.subgoal = None
        self.skill = PushSkill(self.skill.config)

    def _checked_high_level(self, high_level, model):
        if high_level is None:
            return None
        if high_level.latent_dim != model.latent_dim:
            raise ValueError(f'the higher level predicts {high_level.latent_dim}-d latents, the world model has '
                             f'{model.latent_dim}')
        if abs(high_level.max_step - self.config.max_step) > 1e-9:
            raise ValueError(f'the higher level was trained on an arm whose max_step is {high_level.max_step} m, this '
                             f'one moves {self.config.max_step} m per step')
        return high_level.to(self.device).eval()

    def _checked_policy(self, policy: ReactivePolicy | None, low, high, what: str, seed_offset: int) -> ReactivePolicy:
        """The policy given, if its actions are the ones asked for (a control-level and a sub-goal policy differ
        only in their bounds), or an untrained one whose weights the config's seed fixes."""
        if policy is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.config.seed + seed_offset)
                policy = ReactivePolicy(self.model.latent_dim, low, high, model_id=self.model.model_id)
        elif not all(bound.shape == (len(wanted),) and torch.allclose(bound.cpu(), torch.tensor(wanted))
                     for bound, wanted in ((policy.low, low), (policy.high, high))):
            raise ValueError(f'{what} must act within {low} .. {high}; this one acts within '
                             f'{policy.low.tolist()} .. {policy.high.tolist()} (the other level\'s policy?)')
        return policy.to(self.device)

    def _check_levels(self, config: ActorConfig) -> None:
        if config.levels == 2 and self.high_level is None:
            raise ValueError('levels 2 needs a learned higher level (the actor\'s high_level_path; '
                             'jepa train-high-level makes one)')

    def library_proposals(self) -> torch.Tensor:
        """subgoal_samples macro sequences of play (subgoal_horizon long: cut, or the last one held), drawn anew."""
        library = self.high_level.library
        horizon = self.config.subgoal_horizon
        rows = torch.randint(len(library), (self.config.subgoal_samples,), generator=self.library_generator)
        drawn = library[rows.to(library.device), :horizon]
        if drawn.shape[1] < horizon:
            drawn = torch.cat([drawn, drawn[:, -1:].expand(-1, horizon - drawn.shape[1], -1)], 1)
        return drawn

    def subgoal_objective(self, z: torch.Tensor, goal: torch.Tensor) -> SubgoalObjective:
        """The higher level's cost of macro-action sequences from z towards goal (and its rollout, whose first
        latent becomes the sub-goal)."""
        c = self.config
        return SubgoalObjective(self.high_level, self.intrinsic.metric, z, goal, c.subgoal_energy, c.subgoal_latent,
                                c.subgoal_effort, c.max_step)

    def plan_macros(self, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """The higher level's search: subgoal_horizon macro-actions (H, 4) from z towards the goal."""
        objective = self.subgoal_objective(z, goal)
        proposals = [self.library_proposals()]
        if self.high_planner.previous is not None:   # the last plan as it was, beside its shifted warm start
            proposals.append(self.high_planner.previous[None])
        return self.high_planner.plan(objective, torch.cat(proposals)).actions

    def plan_subgoal(self, z: torch.Tensor, goal: torch.Tensor, source: str = 'plan', teach: bool = False
                     ) -> torch.Tensor:
        """The higher level: every subgoal_every calls, choose macro-actions towards the goal, by its search
        (source 'plan') or its sub-goal policy ('policy'), and return the latent the first one is predicted to
        reach; in between, the current one. teach: a search's first macro-action is distilled into the policy."""
        if self.subgoal is None or self.steps_since_subgoal >= self.config.subgoal_every:
            if source == 'policy':
                with torch.no_grad():
                    macros, latents = self.subgoal_policy.propose(self.high_level, z, goal,
                                                                  self.config.subgoal_horizon)
            else:
                macros = self.plan_macros(z, goal)
                with torch.no_grad():
                    latents = self.high_level.rollout(z[None], macros[None])[0]
                if teach:
                    self.pending.append(lambda: self._distill(self.subgoal_distiller, z, goal, macros[0]))
            self.subgoal_macros, self.subgoal = macros, latents[0]
            self.steps_since_subgoal = 0
        self.steps_since_subgoal += 1
        return self.subgoal

    def continue_from(self, previous: 'Actor') -> None:
        """This actor replaces `previous` mid-task with a world model of the same latent space (the configurator's
        adjustments fine-tune the predictor only, the encoder stays): the push in progress goes on instead of
        starting over from the approach, and Mode-1 keeps the policy distilled so far instead of an untrained one."""
        self.skill = previous.skill
        self.policy, self.distiller = previous.policy, previous.distiller
        self.policy.model_id = self.model.model_id
        if self.high_level is not None and previous.high_level is self.high_level:
            self.subgoal_policy, self.subgoal_distiller = previous.subgoal_policy, previous.subgoal_distiller
            self.subgoal_policy.model_id = self.model.model_id

    def skill_subgoal(self, z: torch.Tensor, goal: torch.Tensor, arm: ArmContext | None
                      ) -> tuple[torch.Tensor, ArmContext]:
        """The push skill's next hand step, from the cube and its goal as the read-out sees them in the current
        and goal latents, as a goal latent (the current one moved by that step through the effector map) and as
        the arm's hand goal (the `hand` term: the kinematics know where the hand goes, the effector map only
        approximately)."""
        problems = [what for what, missing in (('a cube read-out (the actor\'s readout_path)', self.readout is None),
                                              ('the arm\'s joint state', arm is None),
                                              ('a world model with an effector map', self.effector_inverse is None))
                    if missing]
        if problems:
            raise ValueError(f'skill {self.config.skill!r} needs ' + ', '.join(problems))
        if self.skill.goal is None:
            self.skill.reset(self.readout(goal.cpu().numpy()))
        ee = arm.ee.cpu().numpy().astype(np.float64)
        target, speed = self.skill.target(ee, self.readout(z.cpu().numpy()))
        bound = self.config.max_step * speed
        step = torch.as_tensor(np.clip(target - ee, -bound, bound), dtype=torch.float32, device=self.device)
        return z + self.effector_inverse @ step, replace(arm, hand_goal=arm.ee + step)

    def arm_context(self, q_arm) -> ArmContext | None:
        if self.kinematics is None or q_arm is None:
            return None
        return ArmContext.from_kinematics(self.kinematics, q_arm, device=self.device)

    def act(self, z: np.ndarray, goal: np.ndarray, q_arm: np.ndarray | None = None, mode: str = 'mode2',
            learn_now: bool = True) -> ActorDecision:
        """One decision. What it teaches Mode-1 (distilling the plan, or in mode1 a DAgger label planned by Mode-2)
        is learned before returning, or with learn_now=False left to `learn()`, so that a node can send the command
        first: none of it changes the decision just made."""
        if mode not in ('mode2', 'mode1'):
            raise ValueError(f'actor mode {mode!r} does not act (acting modes: mode2, mode1)')
        z_t = torch.as_tensor(np.asarray(z, dtype=np.float32).reshape(-1), device=self.device)
        goal_t = torch.as_tensor(np.asarray(goal, dtype=np.float32).reshape(-1), device=self.device)
        if z_t.shape != goal_t.shape or z_t.shape[0] != self.model.latent_dim:
            raise ValueError(f'latent {tuple(z_t.shape)} and goal {tuple(goal_t.shape)} must both have the '
                             f'model\'s latent_dim {self.model.latent_dim}')
        arm = self.arm_context(q_arm)
        t0 = time.perf_counter()
        subgoal, task_goal = None, goal_t
        if self.config.skill:
            subgoal, arm = self.skill_subgoal(z_t, goal_t, arm)
        elif self.config.levels == 2:
            source = self.config.mode1_subgoals if mode == 'mode1' else 'plan'
            # Teaching the sub-goal policy costs as much CPU as the control level's own lesson; it is spent only
            # where Mode-1 is set to use that policy.
            teach = mode == 'mode2' and self.config.mode1_subgoals == 'policy'
            subgoal = self.plan_subgoal(z_t, goal_t, source, teach)
        if subgoal is not None:
            goal_t = subgoal
        objective = PlanObjective(self.model, self.intrinsic, z_t, goal_t, arm, self.critic, self.config.discount)
        if mode == 'mode1':
            with torch.no_grad():
                actions, _ = self.policy.propose(self.model, z_t, goal_t, self.config.horizon)
            plan_ms = (time.perf_counter() - t0) * 1e3
            sampled = float('nan')
            self.mode1_steps += 1
            if self.config.dagger_every > 0 and self.mode1_steps % self.config.dagger_every == 0:
                self.pending.append(lambda: self._label_by_planning(objective, z_t, goal_t))
                if subgoal is not None and self.config.mode1_subgoals == 'policy':
                    self.pending.append(lambda: self._label_subgoal_by_planning(z_t, task_goal))
        else:
            proposals = None
            if self.config.policy_proposals and self.distiller.updates > 0:
                with torch.no_grad():
                    proposals = self.policy.propose(self.model, z_t, goal_t, self.config.horizon)[0][None]
            result = self.planner.plan(objective, proposals)
            # Both levels' planning time: what stands between a state and its command.
            actions, plan_ms, sampled = result.actions, (time.perf_counter() - t0) * 1e3, result.sampled_cost
            first = actions[0]
            self.pending.append(lambda: self._distill(self.distiller, z_t, goal_t, first))
        if self.config.skill:
            actions = actions.clone()
            actions[:, 3] = self.skill.config.gripper  # the skill pushes with the hand closed
        with torch.no_grad():
            total, latents, terms = objective.evaluate(actions[None])
        ee_path = subgoal_path = None
        if arm is not None:
            ee_path = torch.cat([arm.ee[None], arm.ee_path(actions[None])[0]]).cpu().numpy().astype(np.float64)
            if self.config.levels == 2:   # (a scripted skill needs levels 1)
                steps = self.subgoal_macros[:, :3] * self.high_level.macro_steps * self.config.max_step
                subgoal_path = (arm.ee + torch.cat([steps.new_zeros(1, 3), steps.cumsum(0)])).cpu().numpy()
        actions, latents = actions.cpu(), latents.cpu()
        decision = ActorDecision(mode, actions[0].numpy().copy(), actions.numpy().copy(), latents[0].numpy(), ee_path,
                            None if subgoal is None else subgoal.cpu().numpy().copy(),
                            None if subgoal_path is None else subgoal_path.astype(np.float64), float(total[0]),
                            {k: float(v[0]) for k, v in terms.items()}, sampled, plan_ms)
        if learn_now:
            self.learn()
        return decision

    def learn(self) -> None:
        """Learn what the decisions since the last call taught Mode-1."""
        pending, self.pending = self.pending, []
        for lesson in pending:
            lesson()

    def _label_by_planning(self, objective: PlanObjective, z: torch.Tensor, goal: torch.Tensor) -> None:
        """DAgger: Mode-2 plans (not executed) from a state the Mode-1 policy led to, and labels it."""
        self.planner.reset()  # its last plan is several steps old
        self._distill(self.distiller, z, goal, self.planner.plan(objective).actions[0])

    def _label_subgoal_by_planning(self, z: torch.Tensor, goal: torch.Tensor) -> None:
        """DAgger at the higher level: its search labels a state the sub-goal policy led to."""
        self.high_planner.reset()
        self._distill(self.subgoal_distiller, z, goal, self.plan_macros(z, goal)[0])

    def _distill(self, distiller: PolicyDistiller, z, goal, label) -> None:
        distiller.teach(z, goal, label, self.config.distill_every, self.config.distill_steps)
