"""Play-data collection on any arm behind the `arm` graph, without a simulator: `jepa collect --arm PRESET`.

    jepa collect --arm ur5e --minutes 20 --out bags/play_ur5e [--pause-between-episodes 10 | --wait-for-enter]
    jepa train --arm ur5e --bag bags/play_ur5e --out ur5e.pt

What runs: this process (the collector node), recorder_node and, with `--gate start` (the default), the safety gate
of the `arm` graph of config/graph.yaml, as `jepa launch arm arm:=PRESET` would start it (the preset's joints, URDF
limits, velocity scale, workspace box and controller topic), plus fake_arm_node with --fake-arm (dry runs): the
arm graph without its agent. The arm's driver and camera run beside it, as for `jepa launch arm`, publishing the
topics the preset names (or --camera-topic / --controller-topic / --urdf, the graph's camera_topic:=,
controller_topic:= and urdf:=). With `--gate running`, collect commands through a gate already running in the ROS
domain (a `jepa launch arm arm:=PRESET task:=idle` graph) and starts none; `--gate start` refuses to start a second
gate beside a running one. Everything runs in the root namespace, in the environment's ROS_DOMAIN_ID (the
driver's) unless --domain-id names another.

Topics of the collector node (`collector`; relative names):
  publishes  jepa/joint_trajectory  the only command path: the gate checks every command and forwards it to the
                                    arm controller
             jepa/action            ActionStamped (ee_delta) of every play tick, stamped on the node clock when it
                                    was chosen: the control ticks training reads
  subscribes joint_states (merged across publishers), the camera image topic (only whether frames arrive),
             jepa/estop, /diagnostics (the gate's state) and the controller topic (what the gate sent on)
Nothing under sim/: no reset service and no privileged pose. Episodes end by driving the arm back to the preset's
kinematics.home, and babbling wanders through the workspace box without aiming at objects (the simulator mode aims
its pushes at sim/cube_pose). The recorder writes the camera image and info topics, joint_states, jepa/action,
jepa/joint_trajectory, the controller topic and robot_description (when a driver latches it) into one mcap bag.

`ArmPlay` is the ROS-free core: per control tick (0.1 s, the training's control period) and measured joint
positions, the command to send. Episodes: home, then 20-30 s of babbling (--episode-seconds), home, an optional
pause (--pause-between-episodes SECONDS, --wait-for-enter) for a person to rearrange the objects, the next
episode; play time counts played ticks only. Returning home moves the end effector in a straight line (inside the
box, tool down) to home's end-effector position, then the joints to home; a start pose far from tool-down, or
outside the box, goes straight to the joint phase. Every command moves each joint by at most SPEED_SHARE of the
preset's velocity scale times its URDF limit per period: a babbling step the arm cannot make that fast is scaled
down, and the action recorded is the scaled one, so the gate never has to stretch a command and the recorded action
is the motion commanded. Commanding holds (nothing sent; the gate holds the arm once commands stop) while the
e-stop is latched, and afterwards returns home and starts a new episode; while joint states are stale; while the
camera sends no frames; and while the gate reports a fault.
"""
from __future__ import annotations

import array
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory

from jepa_bringup.collect import (BabblingConfig, BabblingPolicy, CollectStats, _bag_summary, _Children,
                                  _exit_status, _failed_on_interrupt_or_exit, _recorder_ready, episode_length,
                                  episode_seeds)
from jepa_bringup.graph import GraphError, GraphFile, load_preset
from jepa_common.conversions import joint_target_trajectory
from jepa_common.kinematics import ArmKinematics
from jepa_common.qos import RELIABLE, SENSOR
from jepa_interfaces.msg import ActionStamped

# The training's control period (jepa_world_model.dataset.DT): one action per camera-and-joints tick.
DT = 0.1
# Share of the gate's velocity limits (preset velocity scale x URDF limit) a command may use in one period: the
# gate then never stretches a command in time, so the arm's motion follows the action recorded.
SPEED_SHARE = 0.8
# Joint states older than this (steady clock) hold commanding; the gate holds at 0.2 s (safety.yaml stale_timeout).
STALE_STATE_S = 0.3
# A camera silent this long holds play: frames are what the data is for.
CAMERA_SILENT_S = 1.0
STARTUP_TIMEOUT_S = 120.0
GATE_NODE = 'safety'
GATE_DISCOVERY_S = 5.0
COMMAND_TOPIC = 'jepa/joint_trajectory'
ACTION_TOPIC = 'jepa/action'
ESTOP_TOPIC = 'jepa/estop'
# A gate report stamped this long after the collector saw the e-stop reflects it: both hear the same message.
ESTOP_REPORT_MARGIN_NS = 1_000_000_000
JOINT_STATES_TOPIC = 'joint_states'
DESCRIPTION_TOPIC = 'robot_description'


class HomingError(RuntimeError):
    """The arm does not get back home (the message says which joint stays how far, and what may hold it)."""


@dataclass
class Command:
    positions: np.ndarray               # arm then gripper joint targets
    action: np.ndarray | None           # the ee_delta action of a play tick; None while returning home
    seconds: float                      # time_from_start of the one-point trajectory


@dataclass
class ArmPlayConfig:
    play_seconds: float
    episode_seconds: tuple = (20.0, 30.0)
    seed: int = 0
    dt: float = DT
    velocity_scale: float = 1.0         # the preset's limits.velocity_scale (the gate's max_joint_velocity_scale)
    speed_share: float = SPEED_SHARE
    pause_seconds: float = 0.0          # hold still at home between episodes
    wait_for_resume: bool = False       # and until resume() (Enter)
    home_tolerance: float = 0.02        # rad: every arm joint this close to home is home
    approach_tolerance: float = 0.01    # m: the straight-line phase ends this close to home's end effector
    tool_down_tolerance: float = 0.35   # rad: a hand further from tool-down goes home in joint space at once
    stall_seconds: float = 5.0          # returning home without progress this long is a HomingError

    def __post_init__(self):
        if not self.play_seconds > 0:
            raise ValueError(f'play_seconds must be > 0, got {self.play_seconds}')
        low, high = self.episode_seconds
        if not 0 < low <= high:
            raise ValueError(f'episode_seconds must be MIN MAX with 0 < MIN <= MAX, got {self.episode_seconds}')
        if not 0 < self.velocity_scale <= 1:
            raise ValueError(f'velocity_scale must be in (0, 1], got {self.velocity_scale}')
        if not 0 < self.speed_share <= 1:
            raise ValueError(f'speed_share must be in (0, 1], got {self.speed_share}')
        if not self.pause_seconds >= 0:
            raise ValueError(f'pause_seconds must be >= 0, got {self.pause_seconds}')


def _rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arccos(np.clip((np.trace(a.T @ b) - 1.0) / 2.0, -1.0, 1.0)))


class ArmPlay:
    """What to command at each control tick of a real-arm collection, ROS-free: `tick(positions, now)` with the
    measured arm and gripper joint positions (kinematics order) and a steady clock in seconds returns a Command or
    None (nothing to send: pausing, done). `state` is 'homing', 'playing', 'pausing' or 'done'; `log` collects
    one line per event (episode started, home reached, ...) for the caller to print."""

    def __init__(self, kinematics: ArmKinematics, config: ArmPlayConfig, policy_config: BabblingConfig | None = None):
        self.kinematics = kinematics
        self.config = config
        box = np.asarray(kinematics.workspace, dtype=float)
        self.box_low, self.box_high = box[:, 0], box[:, 1]
        policy_config = policy_config or BabblingConfig(
            max_step=kinematics.max_step, workspace_low=tuple(self.box_low), workspace_high=tuple(self.box_high),
            push_fraction=0.0)
        if np.any(np.asarray(policy_config.workspace_high) - np.asarray(policy_config.workspace_low)
                  <= 2 * policy_config.margin):
            raise ValueError(f'the workspace box {self.box_low.tolist()}..{self.box_high.tolist()} is too small to '
                             f'babble in: each side must be longer than {2 * policy_config.margin} m')
        self.policy = BabblingPolicy(policy_config)
        self.n_arm = len(kinematics.arm_joints)
        scale = config.velocity_scale * config.speed_share * config.dt
        self.arm_step = kinematics.velocity * scale
        self.finger_step = kinematics.finger_velocity * scale
        self.home = np.asarray(kinematics.home, dtype=float)
        self.open_fingers = kinematics.gripper_to_fingers(1.0)
        home_ee = kinematics.fk(self.home)
        outside = float(np.max(np.maximum(self.box_low - home_ee, home_ee - self.box_high)))
        if outside > 0.01:
            raise ValueError(
                f'kinematics.home puts the end effector at {np.round(home_ee, 3).tolist()}, {outside * 100:.1f} cm '
                f'outside the workspace box {self.box_low.tolist()}..{self.box_high.tolist()}: the gate would stop '
                'the arm short of home at the end of every episode; move home or widen the box')
        # The straight-line phase aims at home's end effector, kept just inside the box.
        self.home_ee = np.clip(home_ee, self.box_low + 0.005, self.box_high - 0.005)
        self.total_ticks = max(1, int(round(config.play_seconds / config.dt)))
        self.played_ticks = 0
        self.episodes_started = 0
        self.episodes_done = 0
        self.episode_ticks = 0
        self.episode_length = 0
        self.homing_seconds: list[float] = []
        self.log: list[str] = []
        self.resumed = False
        self._pause_until = 0.0
        self.state = 'homing'
        self._begin_homing()

    # ----- bookkeeping
    @property
    def played_seconds(self) -> float:
        return self.played_ticks * self.config.dt

    @property
    def done(self) -> bool:
        return self.state == 'done'

    def resume(self) -> None:
        """A person is done rearranging (Enter): the pause ends once its seconds are over too."""
        self.resumed = True

    def interrupt(self) -> None:
        """The e-stop latched: an episode in play ends here; once commanding resumes the arm goes home first."""
        if self.state == 'playing':
            self._end_episode('interrupted by the e-stop')
        elif self.state == 'homing':
            self._begin_homing()

    def _begin_homing(self) -> None:
        self.state = 'homing'
        self.phase = 'approach'
        self._homing_ticks = 0
        self._best = np.inf
        self._best_tick = 0

    def _stalled(self, distance: float, progress: float) -> bool:
        """No progress of at least `progress` for stall_seconds of returning home."""
        if distance < self._best - progress:
            self._best, self._best_tick = distance, self._homing_ticks
        return (self._homing_ticks - self._best_tick) * self.config.dt > self.config.stall_seconds

    def _start_episode(self) -> None:
        c = self.config
        length = episode_length(c.seed, self.episodes_started, *c.episode_seconds)
        self.episode_length = max(1, min(int(round(length / c.dt)), self.total_ticks - self.played_ticks))
        _, policy_seed = episode_seeds(c.seed, self.episodes_started)
        self.policy.reset(policy_seed)
        self.episodes_started += 1
        self.episode_ticks = 0
        self.state = 'playing'
        self.log.append(f'episode {self.episodes_started}: {self.episode_length * c.dt:.1f} s of play')

    def _end_episode(self, why: str) -> None:
        self.episodes_done += 1
        self.log.append(f'episode {self.episodes_started} {why} after {self.episode_ticks * self.config.dt:.1f} s; '
                        'returning home')
        self._begin_homing()

    def _arrived(self, now: float) -> None:
        c = self.config
        self.homing_seconds.append(self._homing_ticks * c.dt)
        self.log.append(f'home in {self._homing_ticks * c.dt:.1f} s')
        if self.played_ticks >= self.total_ticks:
            self.state = 'done'
        elif self.episodes_started and (c.pause_seconds > 0 or c.wait_for_resume):
            self.state = 'pausing'
            self.resumed = False
            self._pause_until = now + c.pause_seconds
            self.log.append('pausing at home' + (f' for {c.pause_seconds:g} s' if c.pause_seconds else '')
                            + (' until Enter' if c.wait_for_resume else '') + ': rearrange the objects now')
        else:
            self._start_episode()

    # ----- commands
    def limited(self, q_arm: np.ndarray, fingers: np.ndarray, action: np.ndarray):
        """(arm targets, finger targets, action) for `action` at q_arm, every joint within one period's share of
        its velocity limit: a step too fast is scaled down (and the action with it), fingers move towards their
        target at their own limit."""
        k = self.kinematics
        q_target, finger_target = k.action_to_joint_target(q_arm, action)
        ratio = float(np.max(np.abs(q_target - q_arm) / self.arm_step))
        if ratio > 1.0:
            action = np.asarray(action, dtype=np.float64).copy()
            action[:3] /= ratio
            q_target, finger_target = k.action_to_joint_target(q_arm, action)
            # IK is not linear: what is left above the limit (a wrist turning to tool-down) is clipped.
            q_target = q_arm + np.clip(q_target - q_arm, -self.arm_step, self.arm_step)
        finger_target = fingers + np.clip(finger_target - fingers, -self.finger_step, self.finger_step)
        return q_target, finger_target, np.asarray(action, dtype=np.float32)

    def tick(self, positions, now: float) -> Command | None:
        positions = np.asarray(positions, dtype=float)
        q_arm, fingers = positions[:self.n_arm], positions[self.n_arm:]
        if self.state == 'homing':
            return self._home(q_arm, fingers, now)
        if self.state == 'pausing':
            if now < self._pause_until or (self.config.wait_for_resume and not self.resumed):
                return None
            self._start_episode()
        if self.state == 'playing':
            return self._play(q_arm, fingers)
        return None

    def _play(self, q_arm: np.ndarray, fingers: np.ndarray) -> Command:
        action = self.policy.act(self.kinematics.fk(q_arm))
        q_target, finger_target, taken = self.limited(q_arm, fingers, action)
        if not np.array_equal(taken, action):
            self.policy.took(taken)
        self.episode_ticks += 1
        self.played_ticks += 1
        if self.episode_ticks >= self.episode_length:
            self._end_episode('done')
        return Command(np.r_[q_target, finger_target], taken, self.config.dt)

    def _home(self, q_arm: np.ndarray, fingers: np.ndarray, now: float) -> Command | None:
        c, k = self.config, self.kinematics
        self._homing_ticks += 1
        if self.phase == 'approach':
            ee, rotation = k.ee_pose(q_arm)
            error = self.home_ee - ee
            distance = float(np.linalg.norm(error))
            inside = bool(np.all(ee >= self.box_low - 1e-3) and np.all(ee <= self.box_high + 1e-3))
            if (distance <= c.approach_tolerance or not inside or self._stalled(distance, 0.002)
                    or _rotation_angle(rotation, k.tool_rotation) > c.tool_down_tolerance):
                self.phase = 'joints'
                self._best, self._best_tick = np.inf, self._homing_ticks
            else:
                step = error * min(1.0, 0.7 * k.max_step / max(distance, 1e-9))
                q_target, finger_target, _ = self.limited(q_arm, fingers, np.r_[step, 1.0])
                return Command(np.r_[q_target, finger_target], None, c.dt)
        error = self.home - q_arm
        distance = float(np.max(np.abs(error)))
        if distance <= c.home_tolerance:
            self._arrived(now)
            return self.tick(np.r_[q_arm, fingers], now) if self.state == 'playing' else None
        if self._stalled(distance, 0.005):
            joint = k.arm_joints[int(np.argmax(np.abs(error)))]
            raise HomingError(f'the arm does not get home: {joint} stays {distance:.3f} rad from kinematics.home '
                              f'after {c.stall_seconds:g} s without progress (do joint limits or the gate\'s '
                              'workspace box keep it from there?)')
        q_target = q_arm + np.clip(error, -self.arm_step, self.arm_step)
        finger_target = fingers + np.clip(self.open_fingers - fingers, -self.finger_step, self.finger_step)
        return Command(np.r_[q_target, finger_target], None, c.dt)


# ---------------------------------------------------------------- the arm, from the arm graph

@dataclass
class ArmSetup:
    """What the collection needs of the arm graph resolved for a preset."""
    preset: str
    kinematics: ArmKinematics
    velocity_scale: float
    camera_topic: str
    info_topic: str
    controller_topic: str
    specs: list                         # the nodes collect starts: the gate (and fake_arm), or none
    urdf_override: str | None = None
    camera_override: str | None = None

    @property
    def joint_names(self) -> list[str]:
        return [*self.kinematics.arm_joints, *self.kinematics.finger_joints]

    def recorded_topics(self) -> list[str]:
        """Every topic the recorder writes (relative names: the root namespace)."""
        return [self.camera_topic, self.info_topic, JOINT_STATES_TOPIC, ACTION_TOPIC, COMMAND_TOPIC,
                self.controller_topic, DESCRIPTION_TOPIC]

    def required_topics(self) -> list[str]:
        """The topics the recording cannot go without (the camera info and robot_description are optional)."""
        return [self.camera_topic, JOINT_STATES_TOPIC, ACTION_TOPIC, COMMAND_TOPIC, self.controller_topic]

    def train_command(self, out: str) -> str:
        extra = ''.join(f' {flag} {value}' for flag, value in (('--urdf', self.urdf_override),
                                                                ('--camera-topic', self.camera_override)) if value)
        return f'jepa train --arm {self.preset}{extra} --bag {out} --out {Path(out).name}.pt'


def arm_setup(args, graph_file: str | None = None) -> ArmSetup:
    """Resolve the `arm` graph for args.arm (and --urdf, --camera-topic, --controller-topic, --fake-arm): the gate's
    specs and parameters, which are also the collector's kinematics, limits and topics. GraphError or ValueError
    naming what is wrong (an unknown preset, a URDF that is not there, a home outside the box, ...)."""
    given = {'arm': args.arm, 'fake_arm': 'true' if args.fake_arm else 'false', 'use_sim_time': 'false'}
    for name, value in (('urdf', args.urdf and os.path.abspath(os.path.expanduser(args.urdf))),
                        ('camera_topic', args.camera_topic), ('controller_topic', args.controller_topic)):
        if value:
            given[name] = value
    graph = GraphFile(graph_file)
    values = graph.argument_values('arm', given)
    specs = {spec.name: spec for spec in graph.resolve('arm', given)}
    gate = specs[GATE_NODE]
    p = gate.parameters
    urdf = str(p.get('urdf_path') or '')
    if urdf and not os.path.isfile(os.path.expanduser(urdf)):
        raise ValueError(f'its URDF is not there: {urdf}; pass --urdf FILE (`jepa calibrate --save-urdf` saves the '
                         'driver\'s robot_description)')
    workspace = tuple(zip(p['workspace_min'], p['workspace_max']))
    kinematics = ArmKinematics(os.path.expanduser(urdf) or None, arm_joints=p['arm_joints'],
                               finger_joints=p.get('finger_joints') or [], ee_frame=p['ee_frame'],
                               home=p.get('home') or None, workspace=workspace)
    camera_topic = str(values['camera_topic'])
    preset = load_preset(args.arm, graph.config_dir)
    info_topic = (str(preset.get('camera', {}).get('info_topic', '')) if not args.camera_topic else '') \
        or camera_topic.rsplit('/', 1)[0] + '/camera_info'
    started = [] if args.gate == 'running' else [gate] + ([specs['fake_arm']] if args.fake_arm else [])
    return ArmSetup(args.arm, kinematics, float(p['max_joint_velocity_scale']), camera_topic, info_topic,
                    str(values['controller_topic']), started, args.urdf, args.camera_topic)


# ---------------------------------------------------------------- ROS: the collector node

@dataclass
class ArmCollectStats:
    commands: int = 0
    actions: int = 0
    held_ticks: dict = field(default_factory=dict)      # reason -> control ticks without a command
    gate_forwarded: int = 0                             # trajectories the gate sent on to the controller
    gate_holds: int = 0                                 # holds it sent while we commanded
    largest_box_excess: float = 0.0                     # m: the commands' end effector outside the workspace box
    # The fit of the measured end-effector motion between play ticks on their actions (CollectStats').
    motion: CollectStats = field(default_factory=CollectStats)


class ArmCollector(Node):
    """Babbles on the arm through the gate at a fixed control period (a timer on the node clock), `ArmPlay`
    deciding each command; holds as the module docstring says."""

    def __init__(self, play: ArmPlay, setup: ArmSetup, **node_options):
        super().__init__('collector', **node_options)
        self.play = play
        self.setup = setup
        self.kinematics = setup.kinematics
        self.joint_names = setup.joint_names
        self.stats = ArmCollectStats()
        self.state = 'waiting'
        self.error: str | None = None
        self.gate_state = 'unknown'
        self.estop = False
        self._estop_confirmed = False
        self._estop_since_ns = 0
        self._positions: dict[str, tuple[float, float]] = {}      # joint -> (position, steady arrival time)
        self.joint_names_seen: set = set()
        self.camera_at = -np.inf
        self.camera_frames = 0
        self._holding: str | None = None
        self._box = np.asarray(self.kinematics.workspace, dtype=float)
        self._previous: list = []   # (measured ee, action) of the last two play ticks in a row

        self.trajectory_pub = self.create_publisher(JointTrajectory, COMMAND_TOPIC, RELIABLE)
        self.action_pub = self.create_publisher(ActionStamped, ACTION_TOPIC, RELIABLE)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self.on_joint_state, SENSOR)
        # Only whether frames arrive matters here (the recorder writes them): no deserialization.
        self.create_subscription(Image, setup.camera_topic, self.on_camera, SENSOR, raw=True)
        self.create_subscription(Bool, ESTOP_TOPIC, self.on_estop, RELIABLE)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.on_diagnostics, RELIABLE)
        self.create_subscription(JointTrajectory, setup.controller_topic, self.on_gate_output, RELIABLE)
        self.create_timer(play.config.dt, self.on_tick)

    # ----- state
    @property
    def done(self) -> bool:
        return self.state in ('done', 'failed')

    def fail(self, message: str) -> None:
        self.error, self.state = message, 'failed'

    def say(self, line: str) -> None:
        self.get_logger().info(line)

    def positions(self, now: float) -> np.ndarray | None:
        """Arm then gripper positions if every joint was heard within STALE_STATE_S, else None."""
        try:
            values = [self._positions[name] for name in self.joint_names]
        except KeyError:
            return None
        if now - min(at for _, at in values) > STALE_STATE_S:
            return None
        return np.array([position for position, _ in values])

    def gate_heard(self) -> bool:
        """A safety gate runs in the root namespace: node /safety exists, or its diagnostics were heard."""
        return self.gate_state != 'unknown' or self.gates_in_graph() > 0

    def gates_in_graph(self) -> int:
        """How many nodes named /safety the graph shows (more than one: two gates would drive one controller)."""
        return sum(entry == (GATE_NODE, '/') for entry in self.get_node_names_and_namespaces())

    def gate_listens(self) -> bool:
        """The gate subscribes to our commands (before that they would be lost)."""
        return any(i.node_name == GATE_NODE and i.node_namespace == '/'
                   for i in self.get_subscriptions_info_by_topic(COMMAND_TOPIC))

    def missing(self, now: float) -> list[str]:
        """What the collection still waits for before it may command (empty: ready)."""
        waiting = []
        if self.positions(now) is None:
            absent = [j for j in self.joint_names if j not in self.joint_names_seen]
            waiting.append(f'joint states with {absent} (heard: {sorted(self.joint_names_seen)})' if absent
                           else 'fresh joint states')
        if not self.gate_listens():
            waiting.append(f'a safety gate (node /{GATE_NODE}) subscribed to jepa/joint_trajectory')
        elif self.gate_state not in ('holding', 'forwarding'):
            waiting.append(f'the gate ready (its state: {self.gate_state})')
        if now - self.camera_at > CAMERA_SILENT_S:
            waiting.append(f'camera frames on {self.setup.camera_topic}')
        return waiting

    def start(self) -> None:
        self.state = 'running'

    # ----- inputs
    def on_joint_state(self, msg: JointState) -> None:
        if len(msg.name) != len(msg.position):
            self.get_logger().error(f'ignoring a joint state with {len(msg.name)} names and {len(msg.position)} '
                                    'positions', throttle_duration_sec=2.0)
            return
        now = time.monotonic()
        self.joint_names_seen.update(msg.name)
        wanted = set(self.joint_names)
        update = {n: float(p) for n, p in zip(msg.name, msg.position) if n in wanted}
        if not all(np.isfinite(v) for v in update.values()):
            self.get_logger().error('ignoring a joint state with NaN or inf positions', throttle_duration_sec=2.0)
            return
        self._positions.update({n: (p, now) for n, p in update.items()})

    def on_camera(self, _raw: bytes) -> None:
        self.camera_at = time.monotonic()
        self.camera_frames += 1

    def on_estop(self, msg: Bool) -> None:
        if msg.data and not self.estop:
            self._latch_estop('jepa/estop')

    def _latch_estop(self, source: str) -> None:
        self.estop = True
        self._estop_confirmed = False
        self._estop_since_ns = self.get_clock().now().nanoseconds
        self.play.interrupt()
        self.say(f'e-stop ({source}): holding until it is released (safety/release_estop); then the arm goes home')

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            node, _, kind = status.name.rpartition(': ')
            # The gate of the root namespace: /safety (a namespaced graph's gate is another arm's).
            if kind != 'gate' or node.count('/') != 1:
                continue
            self.gate_state = next((v.value for v in status.values if v.key == 'state'), self.gate_state)
            if self.gate_state == 'estop':
                if not self.estop:
                    self._latch_estop('the gate reports it')
                self._estop_confirmed = True
            elif self.estop and (self._estop_confirmed or self._reported_after_latch(msg)):
                # The gate is the authority: once it reports it is not latched, after it has seen the e-stop
                # (or in a report made well after it, in case its report of the latch was missed), go on.
                self.estop = self._estop_confirmed = False
                self.say('e-stop released')

    def _reported_after_latch(self, msg: DiagnosticArray) -> bool:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        return stamp > self._estop_since_ns + ESTOP_REPORT_MARGIN_NS

    def on_gate_output(self, msg: JointTrajectory) -> None:
        if self.state != 'running':
            return
        if msg.points:
            self.stats.gate_forwarded += 1
        else:
            self.stats.gate_holds += 1

    # ----- control
    def _hold(self, reason: str) -> None:
        self._previous = []
        self.stats.held_ticks[reason] = self.stats.held_ticks.get(reason, 0) + 1
        if self._holding != reason:
            self.say(f'holding: {reason}')
            self._holding = reason

    def on_tick(self) -> None:
        if self.state != 'running':
            return
        now = time.monotonic()
        if self.estop:
            return self._hold('e-stop latched')
        if self.gate_state == 'fault':
            return self._hold('the gate reports a fault')
        positions = self.positions(now)
        if positions is None:
            return self._hold('stale joint states')
        if self.play.state == 'playing' and now - self.camera_at > CAMERA_SILENT_S:
            return self._hold(f'no camera frame on {self.setup.camera_topic} for {CAMERA_SILENT_S:g} s')
        if self._holding is not None:
            self.say(f'resuming after: {self._holding}')
            self._holding = None
        try:
            command = self.play.tick(positions, now)
        except HomingError as error:
            self.fail(str(error))
            return
        for line in self.play.log:
            self.say(line)
        self.play.log.clear()
        if self.play.done:
            self.state = 'done'
        if command is None or command.action is None:
            self._previous = []
        else:
            self._follow_through(positions, command.action)
        if command is None:
            return
        stamp = self.get_clock().now().to_msg()
        self.trajectory_pub.publish(joint_target_trajectory(self.joint_names, command.positions, command.seconds))
        self.stats.commands += 1
        ee = self.kinematics.fk(command.positions[:len(self.kinematics.arm_joints)])
        excess = float(np.max(np.maximum(self._box[:, 0] - ee, ee - self._box[:, 1])))
        self.stats.largest_box_excess = max(self.stats.largest_box_excess, excess)
        if command.action is not None:
            out = ActionStamped(space='ee_delta', data=array.array('f', command.action.astype(np.float32).tobytes()))
            out.header.stamp = stamp
            self.action_pub.publish(out)
            self.stats.actions += 1


    def _follow_through(self, positions: np.ndarray, action: np.ndarray) -> None:
        """Fit the end effector's motion from one play tick to the next on the actions of both (as the simulator
        mode does): how much of each step the arm makes within a period shows in the end-of-run report."""
        ee = self.kinematics.fk(positions[:len(self.kinematics.arm_joints)])
        if len(self._previous) == 2:
            (_, previous_action), (ee_last, last_action) = self._previous
            self.stats.motion.add_motion(ee - ee_last, last_action[:3], previous_action[:3])
        self._previous = [*self._previous[-1:], (ee, np.asarray(action, dtype=float))]


# ---------------------------------------------------------------- the command

def _enter_pressed() -> bool | None:
    """True if a line was typed on stdin, None at end of input, False if nothing is there yet."""
    readable, _, _ = select.select([sys.stdin], [], [], 0)
    if not readable:
        return False
    return None if sys.stdin.readline() == '' else True


def run(args) -> int:
    """`jepa collect --arm PRESET ...` (args from jepa_bringup.collect.parse_arguments)."""
    out = Path(args.out)
    if out.exists():
        print(f'jepa collect: {out} already exists; bags are never overwritten, choose another --out', file=sys.stderr)
        return 2
    if args.minutes <= 0 or not 0 < args.episode_seconds[0] <= args.episode_seconds[1] \
            or args.pause_between_episodes < 0:
        print('jepa collect: --minutes must be > 0, --episode-seconds MIN MAX with 0 < MIN <= MAX and '
              '--pause-between-episodes >= 0', file=sys.stderr)
        return 2
    if args.gate == 'running' and args.fake_arm:
        print('jepa collect: --fake-arm starts fake_arm_node beside the gate collect starts; with --gate running '
              'start the arm graph with fake_arm:=true instead', file=sys.stderr)
        return 2
    try:
        setup = arm_setup(args)
        config = ArmPlayConfig(play_seconds=args.minutes * 60.0, episode_seconds=tuple(args.episode_seconds),
                               seed=args.seed, velocity_scale=setup.velocity_scale,
                               pause_seconds=args.pause_between_episodes, wait_for_resume=args.wait_for_enter)
        play = ArmPlay(setup.kinematics, config)
    except GraphError as error:
        print(f'jepa collect: {error}', file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:
        print(f'jepa collect: arm preset {args.arm}: {error}', file=sys.stderr)
        return 2
    if args.domain_id is not None:
        os.environ['ROS_DOMAIN_ID'] = str(args.domain_id)
    domain_id = int(os.environ.get('ROS_DOMAIN_ID') or 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.parent / f'{out.name}.nodes.log'

    from tqdm import tqdm

    print(f'jepa collect: {args.minutes:g} minutes of play on arm preset {args.arm} into {out} (seed {args.seed}, '
          f'ROS_DOMAIN_ID {domain_id}, gate: {"started here" if setup.specs else "the running one"}; node output in '
          f'{log_path})', flush=True)
    interrupted = []
    rclpy.init(domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _: interrupted.append(signal.Signals(number).name))
    collector = children = None
    error = None
    wall_start = time.monotonic()
    progress = None
    try:
        collector = ArmCollector(play, setup)
        executor = SingleThreadedExecutor()
        executor.add_node(collector)
        if setup.specs:
            # Never a second gate: two would both drive the controller. Discovery takes a moment (seconds on a
            # loaded machine); the gate also reports on /diagnostics every second.
            end = time.monotonic() + GATE_DISCOVERY_S
            while time.monotonic() < end and not collector.gate_heard():
                executor.spin_once(timeout_sec=0.1)
            if collector.gate_heard():
                print(f'jepa collect: a safety gate already runs in ROS_DOMAIN_ID {domain_id} (node /{GATE_NODE}): '
                      'pass --gate running to command through it, or stop it', file=sys.stderr)
                return 2
        children = _Children(setup.specs, out, args.compression, log_path, topics=setup.recorded_topics(),
                             use_sim_time=False)
        progress = tqdm(total=round(args.minutes, 3), unit='min', disable=args.no_progress, dynamic_ncols=True,
                        bar_format='{l_bar}{bar}| {n:.2f}/{total:.2f} min of play [{elapsed}<{remaining}{postfix}]')
        prompted = False
        last_played = -1
        while not collector.done:
            executor.spin_once(timeout_sec=0.1)
            now = time.monotonic()
            if not _failed_on_interrupt_or_exit(collector, children, interrupted) and collector.state == 'waiting':
                missing = collector.missing(now)
                unrecorded = _recorder_ready(collector, setup.required_topics())
                if setup.specs and collector.gates_in_graph() > 1:
                    # Discovery of a gate that was already running came late: still nothing was commanded.
                    collector.fail(f'a second safety gate (node /{GATE_NODE}) appeared in ROS_DOMAIN_ID {domain_id}; '
                                   'pass --gate running to command through it, or stop it')
                elif not missing and not unrecorded:
                    collector.start()
                    progress.write('jepa collect: arm, gate, camera and recorder are up; returning home first')
                elif now - wall_start > STARTUP_TIMEOUT_S:
                    collector.fail(f'not ready within {STARTUP_TIMEOUT_S:g} s: waiting for '
                                   f'{"; ".join(missing + ([f"the recorder on {unrecorded}"] if unrecorded else []))}')
            if play.state == 'pausing' and play.config.wait_for_resume and not play.resumed:
                if not prompted:
                    progress.write(f'jepa collect: episode {play.episodes_done} done, the arm is home: rearrange the '
                                   'objects, then press Enter')
                    prompted = True
                pressed = _enter_pressed()
                if pressed is None:
                    collector.fail('stdin closed while waiting for Enter (--wait-for-enter needs a terminal)')
                elif pressed:
                    play.resume()
                    prompted = False
            if play.played_ticks != last_played:
                progress.update(play.played_seconds / 60.0 - progress.n)
                last_played = play.played_ticks
        error = collector.error
    except KeyboardInterrupt:
        error = 'interrupted'
    finally:
        if progress is not None:
            progress.close()
        if collector is not None:
            collector.destroy_node()
        rclpy.try_shutdown()
        bag_problem = children.stop() if children is not None else ''
    wall = time.monotonic() - wall_start
    stats = collector.stats if collector is not None else ArmCollectStats()
    print(f'played {play.played_seconds / 60:.2f} minutes ({play.episodes_done} episodes, {stats.actions} actions) in '
          f'{wall / 60:.2f} wall minutes; returning home took '
          f'{np.mean(play.homing_seconds) if play.homing_seconds else 0:.1f} s on average')
    held = ', '.join(f'{reason}: {n}' for reason, n in stats.held_ticks.items()) or 'none'
    print(f'control ticks held: {held}; the gate forwarded {stats.gate_forwarded} commands and held '
          f'{stats.gate_holds} times; commands\' end effector at most {max(stats.largest_box_excess, 0) * 100:.1f} '
          'cm outside the workspace box')
    if stats.motion.fit_n:
        a, b, r2 = stats.motion.action_follow_through()
        print(f'end-effector motion between ticks = {a:.2f} x action + {b:.2f} x previous action (R^2 {r2:.2f})')
    if out.exists():
        print(_bag_summary(out, setup.required_topics()))
        print(f'train on it with: {setup.train_command(str(out))}')
    return _exit_status(error, bag_problem)
