"""`actor_node` (node `actor`): one decision per perceived state, sent through the safety gate.

jepa/latent + jepa/goal_latent + joint_states -> plan (Mode-2 MPC, or the Mode-1 policy) ->
jepa/joint_trajectory (one point, dt ahead), jepa/action (stamped with the state's stamp), jepa/plan,
jepa/planned_path (MarkerArray: the control level's hand path, and with levels: 2 the higher level's),
jepa/subgoal_latent (with levels: 2, the learned higher level's sub-goal: the goal the control level plans towards,
or with skill: push, the scripted push skill's), /diagnostics (plan time, and latent received -> command sent, on
the wall clock). The world model is loaded in-process from the checkpoint
world_model/model_version announces, so planning never waits on DDS.
One executor thread serves every callback, so this node's /clock stands still while it plans: its sim-time stamps
do not show the plan's duration, hence wall-clock latencies (`jepa eval` measures frame -> command from outside).
A second executor thread would let sim time go on, but it would compete with planning for the same cores.
A stale or missing state, goal or joint state gives no command: the gate then holds the arm.

Parameters: the planning settings (actor.ActorConfig) and the cost weights (`weights.*`, jepa_cost.cost.CostWeights)
are live, as are `mode`, `checkpoint`, `critic_path` and `readout_path` (ActorNodeConfig); the rest is read-only.
"""
import collections
import time
from dataclasses import dataclass

import numpy as np
import torch
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import ColorRGBA, String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker, MarkerArray

from jepa_actor.actor import Actor, ActorConfig, ActorDecision, normalize_mode
from jepa_actor.policy import PolicyError, ReactivePolicy
from jepa_common.conversions import joint_target_trajectory, latent_to_msg, msg_to_latent, stamp_to_sec
from jepa_common.joint_states import JointStateCache
from jepa_common.node import run_node
from jepa_common.parameters import changed_config, declare_config, declare_kinematics, result
from jepa_common.qos import LATCHED, NEWEST, SENSOR
from jepa_common.settings import setting
from jepa_cost.cost import CostWeights, Critic, CriticError
from jepa_interfaces.msg import ActionStamped, LatentState, Plan
from jepa_world_model.high_level import HighLevelError, HighLevelModel, high_level_file
from jepa_world_model.model import CheckpointError, encoder_id
from jepa_world_model.readout import CubeReadout, ReadoutError, default_readout_path
from jepa_world_model.runtime import LoadedModel


@dataclass
class ActorNodeConfig:
    """What the actor node loads, how it runs and what it publishes (how it plans: actor.ActorConfig)."""
    mode: str = setting('mode2', 'mode2|mpc: plan through the world model; mode1|policy: the reactive policy; '
                        'idle: no commands', live=True)
    checkpoint: str = setting('', "world model to plan with ('' = the shipped default); setting it loads it, and one "
                              'that cannot be loaded is refused', live=True)
    follow_model_version: bool = setting(True, 'load every world model world_model/model_version announces')
    device: str = setting('cpu', 'torch device of the in-process world model and planner (cpu, cuda, cuda:1, auto)')
    threads: int = setting(1, 'torch intra-op CPU threads (the other nodes share the cores)', (1, 1024))
    critic_path: str = setting('', "critic checkpoint, the plan's terminal cost ('' = none); setting it loads it",
                               live=True)
    policy_path: str = setting('', "a distilled Mode-1 policy to start from ('' = an untrained one)")
    policy_save_path: str = setting('', "where the distilled policy is saved at shutdown ('' = not saved)")
    subgoal_policy_path: str = setting('', "levels 2: a sub-goal policy distilled from the higher level's plans to "
                                       "start from ('' = an untrained one); refused without a higher level")
    subgoal_policy_save_path: str = setting('', "where the distilled sub-goal policy is saved at shutdown ('' = "
                                            'not saved; Mode-2 teaches it only with mode1_subgoals policy)')
    high_level_path: str = setting('', "the learned higher level for levels 2 (jepa train-high-level; '' = the one "
                                   'beside the world model\'s checkpoint, <stem>_high_level.pt, if there is one): '
                                   'loaded with each world model, refused unless trained on its encoder\'s latents')
    readout_path: str = setting('', "the scripted push skill's cube read-out ('' = the shipped model's); setting it "
                                'loads it, and one for another encoder\'s latents is refused', live=True)
    dt: float = setting(0.1, "s: the command's time_from_start, the control period", (0.001, 10.0))
    max_latent_age: float = setting(0.5, 's: a latent older than this (by its image stamp) is not acted on',
                                    (0.0, 60.0))
    joint_state_timeout: float = setting(0.5, 's: without a joint state this fresh (against the latent\'s stamp) '
                                         'the actor does not act', (0.0, 60.0))
    frame_id: str = setting('panda_link0', 'frame of jepa/plan and jepa/planned_path: the arm\'s base')
    diagnostics_period: float = setting(1.0, 's between /diagnostics reports', (0.01, 3600.0))

    def __post_init__(self):
        self.mode = normalize_mode(self.mode)
        positive = {k: getattr(self, k) for k in ('dt', 'max_latent_age', 'joint_state_timeout',
                                                  'diagnostics_period') if not getattr(self, k) > 0}
        if positive or self.threads < 1:
            raise ValueError(f'these settings must be > 0: {positive or {"threads": self.threads}}')


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q)) if values else float('nan')


class ActorNode(Node):
    def __init__(self):
        super().__init__('actor')
        self.kinematics = declare_kinematics(self)
        self.settings = declare_config(self, ActorNodeConfig)
        self.config = declare_config(self, ActorConfig, defaults=ActorConfig(max_step=self.kinematics.max_step))
        self.weights = declare_config(self, CostWeights, prefix='weights.')
        torch.set_num_threads(self.settings.threads)

        self.loaded: LoadedModel | None = None
        self.actor: Actor | None = None
        self.goal: np.ndarray | None = None
        self.goal_model_id = ''
        self.joints = JointStateCache(self, self.kinematics.arm_joints)
        self.plan_ms = collections.deque(maxlen=300)
        self.node_ms = collections.deque(maxlen=300)  # latent callback start -> command, wall clock
        self.counts = collections.Counter()
        self.last_problem = ''
        self._logged: dict[str, float] = {}

        self.trajectory_pub = self.create_publisher(JointTrajectory, 'jepa/joint_trajectory', 10)
        self.action_pub = self.create_publisher(ActionStamped, 'jepa/action', 10)
        self.plan_pub = self.create_publisher(Plan, 'jepa/plan', 10)
        self.path_pub = self.create_publisher(MarkerArray, 'jepa/planned_path', 10)
        # levels: 2: the higher level's action, the goal the control level is planning towards now.
        self.subgoal_pub = self.create_publisher(LatentState, 'jepa/subgoal_latent', 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.load_model(self.settings.checkpoint)
        self.create_subscription(LatentState, 'jepa/latent', self.on_latent, NEWEST)
        self.create_subscription(LatentState, 'jepa/goal_latent', self.on_goal, LATCHED)
        self.create_subscription(JointState, 'joint_states', self.joints.on_joint_state, SENSOR)
        self.create_subscription(String, 'world_model/model_version', self.on_model_version, LATCHED)
        self.create_timer(self.settings.diagnostics_period, self.publish_diagnostics)
        self.add_on_set_parameters_callback(self.on_parameters)

    @property
    def mode(self) -> str:
        return self.settings.mode

    # ----- loading
    def load_model(self, checkpoint: str, settings: ActorNodeConfig | None = None) -> tuple[bool, str]:
        """Load a world model ('' = the shipped default) and rebuild the actor around it, with the critic, policy
        and read-out `settings` name (default: those in use); on failure the previous model stays in service."""
        settings = settings or self.settings
        try:
            if self.loaded is None:
                self.loaded = LoadedModel(checkpoint, self.settings.device)
            elif not self.loaded.load(checkpoint):
                return True, 'already loaded'
            model = self.loaded.model
            previous, self.actor = self.actor, Actor(
                model, self.config, self.weights, self.kinematics, self._load_critic(settings.critic_path, model),
                self._load_policy(settings.policy_path, model), self._load_readout(settings.readout_path, model),
                self._load_high_level(settings.high_level_path, model),
                self._load_policy(settings.subgoal_policy_path, model, 'sub-goal policy'))
            if previous is not None and encoder_id(previous.model) == encoder_id(model):
                self.actor.continue_from(previous)
        except (CheckpointError, OSError, ValueError) as exc:
            self.problem(f'cannot load checkpoint: {exc}', error=True, kind='load')
            return False, str(exc)
        self.get_logger().info(f'planning with {self.loaded.checkpoint} (model {model.model_id}, latent_dim '
                               f'{model.latent_dim}) on {self.loaded.device}, mode {self.mode}')
        return True, ''

    def _load_critic(self, path: str, model) -> Critic | None:
        if not path:
            return None
        try:
            return Critic.load(path, model.latent_dim, model.model_id)
        except CriticError as exc:
            self.problem(f'planning without a critic: {exc}', error=True)
            return None

    def _load_readout(self, path: str, model) -> CubeReadout | None:
        try:
            return CubeReadout.load(path or default_readout_path(), encoder_id(model))
        except ReadoutError as exc:
            # Only the push skill needs it: reach plans on, a push names the missing read-out per step.
            self.problem(f'no cube read-out for the push skill: {exc}', error=bool(path))
            return None

    def _load_high_level(self, path: str, model) -> HighLevelModel | None:
        path = high_level_file(path, self.loaded.checkpoint)
        if not path:
            if self.actor is not None and self.actor.high_level is not None \
                    and self.actor.high_level.encoder_id == encoder_id(model):
                # An adjusted world model (a fine-tuned predictor, written elsewhere) keeps the encoder, and with
                # it the latent space the higher level predicts.
                return self.actor.high_level
            return None
        try:
            high_level = HighLevelModel.load(path, encoder_id(model), model.latent_dim)
        except HighLevelError as exc:
            # levels 2 then refuses the model (Actor), so the previous one stays; levels 1 plans on without it.
            self.problem(f'no higher level: {exc}', error=True)
            return None
        self.get_logger().info(f'higher level for levels 2: {path} ({high_level.macro_steps}-step macro-actions, '
                               f'{len(high_level.library)} play sequences)')
        return high_level

    def _load_policy(self, path: str, model, what: str = 'policy') -> ReactivePolicy | None:
        if not path:
            return None
        try:
            return ReactivePolicy.load(path, model.latent_dim, model.model_id)
        except PolicyError as exc:
            self.problem(f'starting from an untrained {what}: {exc}', error=True)
            return None

    def on_model_version(self, msg: String) -> None:
        if self.settings.follow_model_version and msg.data:
            self.load_model(msg.data)

    def on_parameters(self, parameters):
        """The live settings: checked all together first, then applied; a file that cannot be loaded is refused
        with the reason, and what is in use stays."""
        try:
            weights, _ = changed_config(self.weights, parameters, prefix='weights.')
            config, reconfigured = changed_config(self.config, parameters)
            settings, changed = changed_config(self.settings, parameters)
        except ValueError as exc:
            return result(str(exc))
        if config.levels == 2 and self.actor is not None and self.actor.high_level is None:
            return result(f'levels 2 needs a learned higher level: high_level_path '
                          f'{self.settings.high_level_path!r} gave none')
        if 'checkpoint' in changed:
            ok, reason = self.load_model(settings.checkpoint, settings)
            if not ok:
                return result(reason)
        if 'critic_path' in changed and self.actor is not None:
            critic = self._load_critic(settings.critic_path, self.actor.model)
            if settings.critic_path and critic is None:
                return result(self.last_problem)
            self.actor.critic = critic
        if 'readout_path' in changed and self.actor is not None:
            readout = self._load_readout(settings.readout_path, self.actor.model)
            if readout is None:
                return result(self.last_problem)
            self.actor.readout = readout
        previous_mode, self.settings = self.mode, settings
        self.weights = weights
        if self.actor is not None:
            self.actor.intrinsic.weights = weights
        if self.mode != previous_mode:
            if self.actor is not None:
                self.actor.reset()
            self.get_logger().info(f'mode now {self.mode}')
        if reconfigured:
            self.config = config
            if self.actor is not None:
                self.actor.reconfigure(**{name: getattr(config, name) for name in reconfigured})
        return result()

    # ----- acting
    def problem(self, text: str, error: bool = False, kind: str = '') -> None:
        """Log why the actor did not act, at most every 2 s per kind (one kind must not hide another)."""
        self.last_problem = text
        now = time.monotonic()
        kind = kind or text
        if now - self._logged.get(kind, -np.inf) >= 2.0:
            self._logged[kind] = now
            # One call site per severity: rclpy refuses a call site whose severity changes.
            if error:
                self.get_logger().error(text)
            else:
                self.get_logger().warn(text)

    def on_goal(self, msg: LatentState) -> None:
        try:
            goal = msg_to_latent(msg).reshape(-1)
        except ValueError as exc:
            self.problem(f'ignored goal latent: {exc}', error=True)
            return
        # Perception encodes the goal image again for every new model: with the same encoder it is the same
        # goal, and the task in progress goes on.
        same = self.goal is not None and goal.shape == self.goal.shape and np.allclose(goal, self.goal, atol=1e-6)
        self.goal, self.goal_model_id = goal, msg.model_id
        if self.actor is not None and not same:
            self.actor.reset()  # a new goal: the old plan's warm start points elsewhere

    def on_latent(self, msg: LatentState) -> None:
        received = self.get_clock().now()
        received_wall = time.perf_counter()
        if self.mode == 'idle':
            return
        if self.actor is None:
            self.counts['no_model'] += 1
            return self.problem('no world model loaded: not acting', kind='no_model')
        model_id = self.actor.model.model_id
        age = received.nanoseconds * 1e-9 - stamp_to_sec(msg.header.stamp)
        if abs(age) > self.settings.max_latent_age:
            self.counts['stale'] += 1
            return self.problem(f'latent is {age:.3f} s old (max_latent_age {self.settings.max_latent_age} s): '
                                'not acting', kind='stale')
        if msg.model_id != model_id:
            self.counts['wrong_model'] += 1
            return self.problem(f'latent from model {msg.model_id!r}, planning with {model_id!r}: not acting',
                                kind='wrong_model')
        if self.goal is None or self.goal_model_id != model_id:
            self.counts['no_goal'] += 1
            return self.problem('no goal latent from the current model: not acting', kind='no_goal')
        q = self.joints.fresh(self.settings.joint_state_timeout, at=stamp_to_sec(msg.header.stamp))
        if q is None:
            self.counts['no_joint_state'] += 1
            return self.problem(f'no joint state of {list(self.kinematics.arm_joints)} within '
                                f'{self.settings.joint_state_timeout} s: not acting', kind='no_joint_state')
        try:
            z = msg_to_latent(msg).reshape(-1)
            decision = self.actor.act(z, self.goal, q, self.mode, learn_now=False)
            if not np.all(np.isfinite(decision.action)):
                raise ValueError(f'the plan\'s first action is not finite: {decision.action.tolist()}')
            q_target, fingers = self.kinematics.action_to_joint_target(q, decision.action)
        except (ValueError, RuntimeError) as exc:
            self.counts['errors'] += 1
            self.actor.pending.clear()  # a decision that was not sent teaches nothing
            return self.problem(f'no command for this state: {exc}', error=True, kind='error')
        self.publish_command(q_target, fingers)
        self.plan_ms.append(decision.plan_time_ms)
        self.node_ms.append((time.perf_counter() - received_wall) * 1e3)
        self.counts['commands'] += 1
        self.publish_action(msg, decision)
        self.publish_plan(msg, decision, model_id)
        if decision.subgoal is not None:
            self.subgoal_pub.publish(latent_to_msg(decision.subgoal, msg.header.stamp, model_id))
        # Mode-1's lessons from this decision once its command is out: they cannot change it.
        self.actor.learn()

    def publish_command(self, q_target: np.ndarray, fingers: np.ndarray) -> None:
        self.trajectory_pub.publish(joint_target_trajectory(
            [*self.kinematics.arm_joints, *self.kinematics.finger_joints], np.r_[q_target, fingers], self.settings.dt))

    def publish_action(self, source: LatentState, decision: ActorDecision) -> None:
        # Stamped with the state it was chosen from: pairs it with that state for the world model and memory.
        action = ActionStamped(space='ee_delta', data=[float(v) for v in decision.action])
        action.header.stamp = source.header.stamp
        action.header.frame_id = self.settings.frame_id
        self.action_pub.publish(action)

    def publish_plan(self, source: LatentState, decision: ActorDecision, model_id: str) -> None:
        now = self.get_clock().now().to_msg()
        horizon, action_dim = decision.actions.shape
        plan = Plan(model_id=model_id, mode=decision.mode, source_stamp=source.header.stamp, horizon=horizon,
                    action_dim=action_dim, expected_cost=decision.expected_cost,
                    plan_time_ms=decision.plan_time_ms)
        plan.header.stamp = now
        plan.header.frame_id = self.settings.frame_id
        plan.actions = decision.actions.astype(np.float32).reshape(-1).tolist()
        plan.predicted_latents = latent_to_msg(decision.latents, source.header.stamp, model_id)
        path = [] if decision.ee_path is None else [Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
                                                     for p in decision.ee_path]
        plan.predicted_ee_path = path
        self.plan_pub.publish(plan)
        if not path:
            return
        line = Marker(ns='planned_path', id=0, type=Marker.LINE_STRIP, action=Marker.ADD, points=path,
                      lifetime=Duration(sec=1))
        line.header.stamp, line.header.frame_id = now, self.settings.frame_id
        line.pose.orientation.w = 1.0
        line.scale.x = 0.005
        line.color = ColorRGBA(r=0.1, g=0.8, b=0.2, a=1.0)
        dots = Marker(ns='planned_path', id=1, type=Marker.SPHERE_LIST, action=Marker.ADD, points=path[1:],
                      lifetime=Duration(sec=1))
        dots.header = line.header
        dots.pose.orientation.w = 1.0
        dots.scale.x = dots.scale.y = dots.scale.z = 0.012
        dots.color = ColorRGBA(r=1.0, g=0.6, b=0.0, a=1.0)
        markers = [line, dots]
        if decision.subgoal_path is not None:
            # levels 2: where the higher level's macro-actions take the hand, a longer and coarser path.
            higher = Marker(ns='subgoal_path', id=2, type=Marker.LINE_STRIP, action=Marker.ADD,
                            lifetime=Duration(sec=1),
                            points=[Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in decision.subgoal_path])
            higher.header = line.header
            higher.pose.orientation.w = 1.0
            higher.scale.x = 0.003
            higher.color = ColorRGBA(r=0.2, g=0.4, b=1.0, a=0.8)
            markers.append(higher)
        self.path_pub.publish(MarkerArray(markers=markers))

    def publish_diagnostics(self) -> None:
        level = DiagnosticStatus.OK if self.actor is not None else DiagnosticStatus.WARN
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: planner', hardware_id='agent', level=level,
                                  message=self.last_problem if self.last_problem else 'acting')
        values = {
            'mode': self.mode, 'planner': self.config.planner,
            'model_id': self.actor.model.model_id if self.actor else '',
            'plan_ms_p50': f'{percentile(self.plan_ms, 50):.1f}', 'plan_ms_p95': f'{percentile(self.plan_ms, 95):.1f}',
            'in_node_ms_p50': f'{percentile(self.node_ms, 50):.1f}', 'in_node_ms_p95': f'{percentile(self.node_ms, 95):.1f}',
            'replan_hz': f'{1e3 / percentile(self.plan_ms, 50):.1f}' if self.plan_ms else 'nan',
            'policy_updates': self.actor.distiller.updates if self.actor else 0,
            'subgoal_policy_updates': self.actor.subgoal_distiller.updates
            if self.actor and self.actor.subgoal_distiller else 0,
            **{k: v for k, v in sorted(self.counts.items())}}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)
        self.last_problem = ''

    def close(self) -> None:
        if self.actor is None:
            return
        for path, distiller, what in ((self.settings.policy_save_path, self.actor.distiller, 'policy'),
                                      (self.settings.subgoal_policy_save_path, self.actor.subgoal_distiller,
                                       'sub-goal policy')):
            if path and distiller is not None and distiller.updates:
                distiller.policy.save(path)
                self.get_logger().info(f'saved the distilled {what} to {path}')


def main(args=None) -> int:
    return run_node(ActorNode, args)
