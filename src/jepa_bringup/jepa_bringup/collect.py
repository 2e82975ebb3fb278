"""Play-data collection: motor babbling through the safety gate, recorded into a rosbag2 bag.

Two modes, one command:

- Simulator (the default): `jepa collect --minutes M --out BAG [--seed S]` starts `sim_node` (faster than real
  time), `safety_node` and `recorder_node` as separate processes in a ROS domain of its own, drives the arm through
  the safety gate with `BabblingPolicy` on sim time, resets the world to a new seeded pose every 20-30 sim seconds,
  and records camera, joint states, actions, commanded trajectories and the privileged poses into one mcap bag.
- Any arm, no simulator: `jepa collect --arm PRESET --minutes M --out BAG` plays on the arm behind the `arm`
  graph of config/graph.yaml (a driver, or fake_arm_node with --fake-arm), with nothing under sim/: episodes end
  by returning to the preset's home, with optional pauses for a person to rearrange the scene. See
  jepa_bringup.arm_collect.

`BabblingPolicy` is the ROS-free core: smooth random reaching around random waypoints plus deliberate
pushes through the cube, so that the world model sees the cube move in a good fraction of the data, and
approaches that stop at the cube and back away, so that it also sees the hand beside the cube leave it put.

It lives in jepa_bringup because it brings up graph `sim_arm` of config/graph.yaml with the launcher's process
supervision; the world model only reads the bags it writes.
"""
from __future__ import annotations

import argparse
import array
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from jepa_bringup.episodes import add_perturbation_arguments, perturbation_of
from jepa_bringup.graph import GraphError, GraphFile, NodeSpec
from jepa_bringup.launcher import NodeProcess, Printer, describe_exit, node_command
from jepa_common.conversions import joint_positions, joint_target_trajectory
from jepa_common.kinematics import ArmKinematics
from jepa_common.paths import package_share
from jepa_interfaces.msg import ActionStamped
from jepa_interfaces.srv import ResetSim
from jepa_sim.perturbation import Perturbation


@dataclass
class BabblingConfig:
    max_step: float = 0.03                      # metres per control period (the ee_delta action bound)
    workspace_low: tuple = (0.25, -0.35, 0.02)
    workspace_high: tuple = (0.75, 0.35, 0.6)
    # Waypoints stay this far inside the workspace so the safety gate's workspace clamp rarely engages.
    margin: float = 0.03
    # Largest change of the translational action between consecutive periods: keeps the motion smooth.
    max_action_change: float = 0.008
    max_gripper_change: float = 0.2
    # Ornstein-Uhlenbeck exploration noise added to the reaching motion (metres per period).
    noise_theta: float = 0.15
    noise_sigma: float = 0.004
    # Share of motion primitives that are deliberate pushes through the cube.
    push_fraction: float = 0.7
    approach_height: float = 0.12               # above the table, when moving behind the cube
    push_height: float = 0.035                  # end-effector height while pushing
    push_behind: float = 0.09                   # start this far behind the cube centre
    push_through: float = 0.10                  # and end this far beyond it
    # Share of pushes that stop near the cube (short of it, touching it, or a few cm into it) and back away at
    # pushing height: the hand beside the cube moving away leaves the cube where it is, which a world model
    # that only saw pushes through would not know (it would predict the cube following the hand).
    retreat_fraction: float = 0.4
    retreat_distance: tuple = (0.06, 0.12)
    reach_tolerance: float = 0.02
    steps_per_waypoint: int = 60                # give up on a waypoint after this many periods
    wander_waypoints: tuple = (1, 2)
    low_z_fraction: float = 0.35                # wander waypoints near the table (where the cube is)


@dataclass
class _Waypoint:
    position: np.ndarray
    gripper: float
    speed: float                                # metres per period, <= max_step
    noise_scale: float


@dataclass
class BabblingPolicy:
    """Smooth random end-effector motion: wander to random waypoints or push the cube along a random direction.

    `act(ee, cube)` returns one ee_delta action [dx, dy, dz, gripper], within bounds; `reset(seed)` starts a
    new episode. Deterministic for a given seed and observation sequence.
    """
    config: BabblingConfig = field(default_factory=BabblingConfig)
    seed: int = 0

    def __post_init__(self):
        self.reset(self.seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self._plan: list[_Waypoint] = []
        self._steps_on_waypoint = 0
        self._noise = np.zeros(3)
        self._last = np.zeros(4)
        self._last[3] = 1.0
        self.mode = 'idle'
        self.pushes_started = 0

    # ----- planning
    def _low(self) -> np.ndarray:
        return np.asarray(self.config.workspace_low, dtype=float) + self.config.margin

    def _high(self) -> np.ndarray:
        return np.asarray(self.config.workspace_high, dtype=float) - self.config.margin

    def _inside(self, point: np.ndarray) -> bool:
        return bool(np.all(point >= self._low()) and np.all(point <= self._high()))

    def _random_point(self) -> np.ndarray:
        low, high = self._low(), self._high()
        point = self.rng.uniform(low, high)
        if self.rng.random() < self.config.low_z_fraction:
            point[2] = self.rng.uniform(low[2], min(high[2], low[2] + 0.1))
        return point

    def _wander_plan(self) -> list[_Waypoint]:
        c = self.config
        count = self.rng.integers(c.wander_waypoints[0], c.wander_waypoints[1] + 1)
        return [_Waypoint(self._random_point(), float(self.rng.choice([-1.0, 1.0, self.rng.uniform(-1, 1)])),
                          self.rng.uniform(0.35, 1.0) * c.max_step, 1.0) for _ in range(count)]

    def _push_plan(self, cube: np.ndarray) -> list[_Waypoint] | None:
        """Above-behind, down, through (or to near the cube and back away), up, along a random horizontal
        direction that keeps every point in reach."""
        c = self.config
        for _ in range(16):
            angle = self.rng.uniform(-np.pi, np.pi)
            direction = np.array([np.cos(angle), np.sin(angle), 0.0])
            behind = cube - direction * c.push_behind
            if self.rng.random() < c.retreat_fraction:
                near = cube - direction * self.rng.uniform(0.0, 0.06)
                away = angle + np.pi + self.rng.uniform(-np.pi / 3, np.pi / 3)
                end = near + np.array([np.cos(away), np.sin(away), 0.0]) * self.rng.uniform(*c.retreat_distance)
                path = [near, end]
            else:
                path = [cube + direction * (c.push_through + self.rng.uniform(0.0, 0.06))]
            low_z = max(c.push_height, self._low()[2])
            points = ([np.array([behind[0], behind[1], low_z + c.approach_height]),
                       np.array([behind[0], behind[1], low_z])]
                      + [np.array([p[0], p[1], low_z]) for p in path]
                      + [np.array([path[-1][0], path[-1][1], low_z + c.approach_height])])
            if all(self._inside(p) for p in points):
                gripper = float(self.rng.choice([-1.0, 1.0]))
                speed = self.rng.uniform(0.5, 0.9) * c.max_step
                push_speed = self.rng.uniform(0.3, 0.6) * c.max_step
                return ([_Waypoint(points[0], gripper, speed, 0.5)]
                        + [_Waypoint(p, gripper, push_speed, 0.0) for p in points[1:-1]]
                        + [_Waypoint(points[-1], gripper, speed, 0.5)])
        return None

    def _next_plan(self, cube: np.ndarray | None) -> None:
        plan = None
        if cube is not None and self.rng.random() < self.config.push_fraction:
            plan = self._push_plan(np.asarray(cube, dtype=float)[:3])
        if plan is not None:
            self.mode = 'push'
            self.pushes_started += 1
        else:
            self.mode = 'wander'
            plan = self._wander_plan()
        self._plan = plan
        self._steps_on_waypoint = 0

    # ----- acting
    def act(self, ee: np.ndarray, cube: np.ndarray | None = None) -> np.ndarray:
        """One action [dx, dy, dz, gripper] from the end-effector position (and the cube's, when known)."""
        c = self.config
        ee = np.asarray(ee, dtype=float)[:3]
        if self._plan and (np.linalg.norm(self._plan[0].position - ee) < c.reach_tolerance
                           or self._steps_on_waypoint >= c.steps_per_waypoint):
            self._plan.pop(0)
            self._steps_on_waypoint = 0
        if not self._plan:
            self._next_plan(cube)
        target = self._plan[0]
        self._steps_on_waypoint += 1

        error = target.position - ee
        distance = np.linalg.norm(error)
        # Slow down over the last few centimetres instead of overshooting the waypoint.
        speed = min(target.speed, 0.7 * distance)
        desired = error / max(distance, 1e-9) * speed
        self._noise += -c.noise_theta * self._noise + c.noise_sigma * self.rng.standard_normal(3)
        desired = desired + target.noise_scale * self._noise
        # Never aim outside the workspace box (the gate would clamp it anyway); the clamp comes before the
        # rate limit so that it does not make the motion jerky at the walls.
        low = np.asarray(c.workspace_low, dtype=float)
        high = np.asarray(c.workspace_high, dtype=float)
        desired = np.clip(ee + desired, low + 0.25 * c.margin, high - 0.25 * c.margin) - ee

        translation = self._last[:3] + np.clip(desired - self._last[:3], -c.max_action_change, c.max_action_change)
        translation = np.clip(translation, -c.max_step, c.max_step)
        gripper = self._last[3] + np.clip(target.gripper - self._last[3], -c.max_gripper_change, c.max_gripper_change)
        action = np.array([*translation, np.clip(gripper, -1.0, 1.0)])
        self._last = action
        return action.astype(np.float32)

    def took(self, action: np.ndarray) -> None:
        """The action actually commanded, where the caller had to scale the last one down (an arm slower than the
        step): the next action's rate limit starts from it."""
        self._last = np.asarray(action, dtype=float).copy()


def episode_seeds(seed: int, episode: int) -> tuple[int, int]:
    """(sim reset seed, policy seed) of one episode: independent streams, reproducible from the run seed."""
    reset_seed, policy_seed = np.random.SeedSequence([seed, episode]).generate_state(2)
    return int(reset_seed), int(policy_seed)


def episode_length(seed: int, episode: int, low: float, high: float) -> float:
    """Sim seconds of play of one episode before the next reset."""
    return float(np.random.default_rng([seed, episode, 1]).uniform(low, high))


# ---------------------------------------------------------------- ROS: the collector node

# The topics recorded (relative names, as the recorder subscribes them); the bag names them absolute
# (bag_topic: camera/image_raw -> /camera/image_raw), as the world model's dataset reads them.
RECORDED_TOPICS = ['camera/image_raw', 'camera/camera_info', 'joint_states', 'jepa/action',
                   'jepa/joint_trajectory', 'arm_controller/joint_trajectory', 'sim/ee_pose', 'sim/cube_pose']
NS = 1_000_000_000
# The fastest simulation at which the collector, on a small shared machine, still acts on every control tick,
# so that the arm's motion between two frames is the effect of the action of that tick; faster (or 0, as fast
# as possible) misses ticks and delays motion by a tick, and the world model would learn from misattributed
# actions. The end-of-run report's follow-through fit shows whether a run kept up.
DEFAULT_REAL_TIME_FACTOR = 4.0


def bag_topic(topic: str) -> str:
    """The name a relative topic the collector records has in its bag (the graph runs in the root namespace)."""
    return '/' + topic.lstrip('/')


@dataclass
class CollectStats:
    ticks: int = 0
    episodes: int = 0
    played_ns: int = 0
    cube_moving_ticks: int = 0
    pushes: int = 0
    missed_ticks: int = 0
    gate_holds: int = 0
    foreign_publishers: set = field(default_factory=set)  # topics another graph published on
    # Least-squares fit of the end effector's motion from tick k to k+1 on the actions of ticks k and k-1:
    # normal equations, accumulated over consecutive ticks.
    fit_xx: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))
    fit_xy: np.ndarray = field(default_factory=lambda: np.zeros(2))
    fit_yy: float = 0.0
    fit_y: float = 0.0
    fit_n: int = 0

    def add_motion(self, motion: np.ndarray, action: np.ndarray, previous_action: np.ndarray) -> None:
        features = np.stack([action, previous_action], axis=1)
        self.fit_xx += features.T @ features
        self.fit_xy += features.T @ motion
        self.fit_yy += float(motion @ motion)
        self.fit_y += float(motion.sum())
        self.fit_n += motion.size

    def action_follow_through(self) -> tuple[float, float, float]:
        """(a, b, R^2) of motion = a * action + b * previous action. a near the realized share of each step
        and b near 0 mean the motion between two frames is the effect of the action taken at the first."""
        if self.fit_n < 3:
            return float('nan'), float('nan'), float('nan')
        a, b = np.linalg.lstsq(self.fit_xx, self.fit_xy, rcond=None)[0]
        residual = self.fit_yy - 2 * (a * self.fit_xy[0] + b * self.fit_xy[1]) + np.array([a, b]) @ self.fit_xx @ [a, b]
        variance = self.fit_yy - self.fit_y ** 2 / self.fit_n
        return float(a), float(b), float(1 - residual / variance) if variance > 0 else float('nan')


class PlayCollector(Node):
    """Drives the arm through the safety gate on sim time: one babbling action per control tick.

    The control loop runs in the joint_states callback: a tick is due when a state stamped on the control
    grid (dt) arrives, which is also when the camera frame of that instant is published, so each action
    carries the stamp of the image it was chosen from. Episodes end with a seeded sim/reset: commands stop,
    in-flight trajectories drain, the reset happens, and play resumes once the arm is seen at its new pose.
    """

    def __init__(self, seed: int, play_seconds: float, episode_seconds: tuple[float, float], dt: float = 0.1,
                 policy_config: BabblingConfig | None = None):
        super().__init__('collector')
        self.kinematics = ArmKinematics()
        self.policy = BabblingPolicy(policy_config or BabblingConfig(max_step=self.kinematics.max_step))
        self.seed = seed
        self.play_ns = int(play_seconds * NS)
        self.episode_seconds = episode_seconds
        self.dt_ns = int(round(dt * NS))
        self.stats = CollectStats()
        self.state = 'waiting'
        self.error: str | None = None
        self.joint_names = [*self.kinematics.arm_joints, *self.kinematics.finger_joints]
        self._cube: np.ndarray | None = None
        self._cube_at_last_tick: np.ndarray | None = None
        self._next_tick_ns = 0
        self._episode_start_ns = self._episode_end_ns = self._last_tick_ns = 0
        self._latest_state_ns = 0
        self._previous: list = []  # (ee, action) of the last two consecutive ticks of this episode
        self._drain_until = (0, 0.0)
        self._reset_q: np.ndarray | None = None

        self.trajectory_pub = self.create_publisher(JointTrajectory, 'jepa/joint_trajectory', 10)
        self.action_pub = self.create_publisher(ActionStamped, 'jepa/action', 10)
        self.reset_client = self.create_client(ResetSim, 'sim/reset')
        # Only the newest state matters: a backlog would make every action late.
        self.create_subscription(JointState, 'joint_states', self.on_joint_state,
                                 QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.create_subscription(PoseStamped, 'sim/cube_pose', self.on_cube_pose, 10)
        self.create_subscription(JointTrajectory, 'arm_controller/joint_trajectory', self.on_gate_output, 10)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.on_diagnostics, 10)
        self.gate_state = 'unknown'

    @property
    def played_seconds(self) -> float:
        """Sim seconds of play so far, the current episode included."""
        current = max(0, self._latest_state_ns - self._episode_start_ns) if self.state == 'playing' else 0
        return (self.stats.played_ns + current) / NS

    @property
    def done(self) -> bool:
        return self.state in ('done', 'failed')

    def fail(self, message: str) -> None:
        if self.state == 'playing':
            self._close_episode(self._latest_state_ns)
        self.error, self.state = message, 'failed'

    def ready(self) -> bool:
        """The simulator's reset service is up and the gate listens to our commands and has seen the arm's state
        (before that it would reject every command)."""
        return (self.reset_client.service_is_ready() and self.trajectory_pub.get_subscription_count() > 0
                and self.gate_state in ('holding', 'forwarding'))

    def start(self) -> None:
        self._begin_reset(0)

    # ----- inputs
    def on_cube_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self._cube = np.array([p.x, p.y, p.z])

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(': gate'):
                self.gate_state = next((v.value for v in status.values if v.key == 'state'), self.gate_state)

    def on_gate_output(self, msg: JointTrajectory) -> None:
        if self.state != 'playing':
            return
        if not msg.points:
            self.stats.gate_holds += 1

    def _positions(self, msg: JointState) -> np.ndarray | None:
        try:
            return joint_positions(msg, self.joint_names)
        except ValueError as e:
            self.get_logger().error(f'ignoring joint state: {e}', throttle_duration_sec=2.0)
            return None

    def on_joint_state(self, msg: JointState) -> None:
        # Most states only advance the clock: positions are converted only where they are used.
        now_ns = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        self._latest_state_ns = now_ns
        if self.state == 'draining':
            sim_due, wall_due = self._drain_until
            if now_ns >= sim_due and time.monotonic() >= wall_due:
                self._request_reset()
        elif self.state == 'settling':
            arm = len(self.kinematics.arm_joints)
            q = self._positions(msg)
            if q is not None and np.max(np.abs(q[:arm] - self._reset_q[:arm])) < 0.02:
                self._start_episode(now_ns)
        elif self.state == 'playing':
            if now_ns >= self._episode_end_ns:
                self._end_episode()
            elif now_ns >= self._next_tick_ns - NS // 1000:
                q = self._positions(msg)
                if q is not None:
                    self._tick(now_ns, msg.header.stamp, q)

    # ----- episodes
    def _begin_reset(self, episode: int) -> None:
        # Stop commanding and let trajectories already on their way reach the arm before it is teleported:
        # a late one would drive the new pose towards a target computed from the old.
        self.state = 'draining'
        self._episode = episode
        self._drain_until = (self._last_tick_ns + 2 * self.dt_ns, time.monotonic() + 0.2)

    def _request_reset(self) -> None:
        self.state = 'resetting'
        reset_seed, _ = episode_seeds(self.seed, self._episode)
        request = ResetSim.Request(seed=reset_seed, randomize_arm=True, randomize_cube=True)
        future = self.reset_client.call_async(request)
        future.add_done_callback(self._on_reset_done)

    def _on_reset_done(self, future) -> None:
        response = future.result()
        if response is None or not response.success:
            self.fail(f'{self.reset_client.srv_name} failed: {getattr(response, "message", "no response")}')
            return
        self._reset_q = np.asarray(response.joint_positions)
        _, policy_seed = episode_seeds(self.seed, self._episode)
        self.policy.reset(policy_seed)
        self._cube = self._cube_at_last_tick = None
        self.state = 'settling'

    def _start_episode(self, now_ns: int) -> None:
        length = episode_length(self.seed, self._episode, *self.episode_seconds)
        remaining = self.play_ns - self.stats.played_ns
        self._episode_start_ns = now_ns
        self._episode_end_ns = now_ns + min(int(length * NS), remaining)
        self._next_tick_ns = -(-now_ns // self.dt_ns) * self.dt_ns  # the next instant on the camera grid
        self.state = 'playing'

    def _close_episode(self, end_ns: int) -> None:
        self.stats.episodes += 1
        self.stats.played_ns += max(0, end_ns - self._episode_start_ns)
        self.stats.pushes += self.policy.pushes_started

    def _end_episode(self) -> None:
        self._close_episode(self._episode_end_ns)
        if self.stats.played_ns >= self.play_ns - self.dt_ns:
            self.state = 'done'
        else:
            self._begin_reset(self._episode + 1)

    # ----- control
    def _tick(self, now_ns: int, stamp, q: np.ndarray) -> None:
        q_arm = q[:len(self.kinematics.arm_joints)]
        cube = self._cube
        ee = self.kinematics.fk(q_arm)
        action = self.policy.act(ee, cube)
        try:
            q_target, finger_target = self.kinematics.action_to_joint_target(q_arm, action)
        except ValueError as e:
            self.get_logger().error(f'no joint target for action {action}: {e}; skipping this tick')
            return
        self.trajectory_pub.publish(joint_target_trajectory(self.joint_names, np.r_[q_target, finger_target],
                                                            self.dt_ns * 1e-9))
        out = ActionStamped(space='ee_delta', data=array.array('f', action.astype(np.float32).tobytes()))
        out.header.stamp = stamp
        self.action_pub.publish(out)

        if cube is not None and self._cube_at_last_tick is not None \
                and np.linalg.norm(cube[:2] - self._cube_at_last_tick[:2]) > 0.002:
            self.stats.cube_moving_ticks += 1
        self._cube_at_last_tick = cube
        same_episode = self._last_tick_ns >= self._episode_start_ns
        missed = round((now_ns - self._last_tick_ns) / self.dt_ns) - 1 if same_episode else -1
        self.stats.missed_ticks += max(0, missed)
        if missed != 0:
            self._previous = []
        if len(self._previous) == 2:
            (_, previous_action), (ee_last, last_action) = self._previous
            self.stats.add_motion(ee - ee_last, last_action[:3], previous_action[:3])
        self._previous = [*self._previous[-1:], (ee, action)]
        self._last_tick_ns = now_ns
        self._next_tick_ns = ((now_ns + NS // 1000) // self.dt_ns + 1) * self.dt_ns
        self.stats.ticks += 1


# ---------------------------------------------------------------- the command

# Options of the simulator mode only, and their defaults there (None in the parser: given or not is told apart).
SIM_ONLY_DEFAULTS = {'real_time_factor': DEFAULT_REAL_TIME_FACTOR, 'push_fraction': BabblingConfig.push_fraction,
                     'retreat_fraction': BabblingConfig.retreat_fraction, 'sim_camera': ''}
# Options of the real-arm mode only (--arm), and their defaults.
ARM_ONLY_DEFAULTS = {'urdf': None, 'camera_topic': None, 'controller_topic': None, 'fake_arm': False,
                     'gate': 'start', 'pause_between_episodes': 0.0, 'wait_for_enter': False}


def option_name(dest: str) -> str:
    return '--' + dest.replace('_', '-')


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='jepa collect',
        description='Drive an arm with motor babbling (random reaching; in the simulator also cube pushes) through '
                    'the safety gate and record play data. Without --arm: the simulated Panda, in a ROS domain of '
                    'its own. With --arm PRESET: the arm of `jepa launch arm arm:=PRESET` (its driver and camera '
                    'running), no simulator and nothing under sim/; episodes end by returning home.')
    p.add_argument('--minutes', type=float, required=True,
                   help='minutes of play to record (sim minutes in the simulator; returning home and pauses '
                        'not counted)')
    p.add_argument('--out', required=True, help='bag directory to create (mcap); must not exist')
    p.add_argument('--seed', type=int, default=0, help='seeds every reset pose and the babbling (default 0)')
    p.add_argument('--episode-seconds', type=float, nargs=2, default=(20.0, 30.0), metavar=('MIN', 'MAX'),
                   help='seconds of play per episode, drawn per episode (default 20 30); an episode ends with a '
                        'reset in the simulator, by returning home on an arm')
    p.add_argument('--compression', choices=['zstd', 'none'], default='zstd', help='mcap chunk compression')
    p.add_argument('--domain-id', type=int, default=None,
                   help='ROS_DOMAIN_ID of the collection graph (default: in the simulator a random one of '
                        '100..199, so that a running agent is not disturbed; with --arm the environment\'s, where '
                        'the driver is)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    sim = p.add_argument_group('simulator mode (no --arm)')
    sim.add_argument('--real-time-factor', type=float, default=None,
                     help='sim speed: 0 = as fast as possible, 1 = real time (default '
                          f'{DEFAULT_REAL_TIME_FACTOR:g}: faster makes commands reach the arm late in sim time)')
    sim.add_argument('--push-fraction', type=float, default=None,
                     help=f'share of motions that push the cube (default {BabblingConfig.push_fraction})')
    sim.add_argument('--retreat-fraction', type=float, default=None,
                     help='share of those pushes that stop at the cube and back away instead of pushing through '
                          f'(default {BabblingConfig.retreat_fraction}; 0: every push goes through)')
    sim.add_argument('--sim-camera', default=None, metavar='FILE',
                     help="the sim node's camera params file (jepa calibrate's sim_camera.yaml), as the graphs' "
                          "sim_camera:= argument: play data from a real cell's viewpoint (default config/sim.yaml)")
    add_perturbation_arguments(sim)
    arm = p.add_argument_group(
        'arm mode (--arm PRESET): any arm behind the `arm` graph, no simulator',
        'The arm\'s driver and camera run beside collect, as for `jepa launch arm arm:=PRESET`. Every command goes '
        'to the safety gate (jepa/joint_trajectory), at the preset\'s velocity scale, inside its workspace box; '
        'episodes end by driving the arm back to the preset\'s kinematics.home; commanding holds while the e-stop '
        'is latched (after its release the arm goes home first), while joint states are stale and while the '
        'camera is silent. The bag holds the camera, joint states, actions and commands: `jepa train --arm '
        'PRESET` trains on it.')
    arm.add_argument('--arm', default=None, metavar='PRESET',
                     help='arm preset, config/arms/PRESET.yaml (franka_fr3, panda, ur5e, kinova_gen3, ...)')
    arm.add_argument('--urdf', default=None, metavar='FILE',
                     help="the arm's URDF in place of the preset's kinematics.urdf (the arm graph's urdf:=)")
    arm.add_argument('--camera-topic', default=None, metavar='TOPIC',
                     help="the camera's image topic in place of the preset's (the arm graph's camera_topic:=)")
    arm.add_argument('--controller-topic', default=None, metavar='TOPIC',
                     help="the arm controller's JointTrajectory topic in place of the preset's (controller_topic:=)")
    arm.add_argument('--gate', choices=['start', 'running'], default='start',
                     help='start: collect starts the arm graph\'s safety gate itself and refuses if one already '
                          'runs (default); running: command through the gate already running in the domain (a '
                          '`jepa launch arm arm:=PRESET task:=idle` graph), starting none')
    arm.add_argument('--fake-arm', action='store_true',
                     help='also start fake_arm_node in place of a driver (dry runs; the arm graph\'s fake_arm:=true)')
    arm.add_argument('--pause-between-episodes', type=float, default=0.0, metavar='SECONDS',
                     help='hold still this long at home between episodes, for a person to rearrange the objects '
                          '(default 0)')
    arm.add_argument('--wait-for-enter', action='store_true',
                     help='between episodes, hold still at home until Enter is pressed')
    return p


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with each mode's defaults filled in; SystemExit (status 2, with the reason) where an
    option of one mode is given in the other."""
    p = parser()
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.arm is None:
        wrong = [option_name(k) for k, v in ARM_ONLY_DEFAULTS.items() if getattr(args, k) != v]
        if wrong:
            p.error(f'{", ".join(wrong)}: for an arm behind the arm graph only (--arm PRESET)')
        for name, default in SIM_ONLY_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, default)
    else:
        wrong = [option_name(k) for k in SIM_ONLY_DEFAULTS if getattr(args, k) is not None]
        wrong += [option_name(k) for k in ('perturb', 'perturb_set') if getattr(args, k)]
        if wrong:
            p.error(f'{", ".join(wrong)}: for the simulator only (no --arm)')
    return args


def collection_graph(real_time_factor: float, seed: int, sim_camera: str,
                     perturbation: Perturbation | None = None) -> list:
    """The node specs of graph `sim_arm` (config/graph.yaml) as the collection runs it, its world perturbed as
    `perturbation` says (default: nominal); GraphError naming what is wrong (a `sim_camera` params file that does
    not exist, ...)."""
    specs = GraphFile().resolve('sim_arm', {'gui': 'false', 'use_sim_time': 'true', 'sim_camera': sim_camera})
    for spec in specs:
        if spec.name == 'sim':
            spec.parameters.update(real_time_factor=float(real_time_factor), seed=int(seed),
                                   **(perturbation or Perturbation()).parameters())
    return specs


# How long recorder_node may take to close its bag once asked to stop: its writer thread first writes what it still
# holds (up to its max_backlog_mb), then closes the open split and rewrites metadata.yaml.
RECORDER_CLOSE_TIMEOUT_S = 60.0


def _incomplete_bag(bag: Path, recorder_exit: int) -> str | None:
    """Why the bag recorder_node wrote is not complete, or None: the recorder did not exit cleanly (killed before it
    closed the bag, or failed), or the bag does not read back or holds no message."""
    from jepa_rosbag.reader import BagError, BagReader, reindex_hint
    if recorder_exit != 0:
        return (f'recorder_node did not close bag {bag} ({describe_exit(recorder_exit)}): its metadata.yaml lists '
                f'only the splits closed before; {reindex_hint(bag)}')
    try:
        with BagReader(bag) as reader:
            count = reader.message_count
    except BagError as e:
        return str(e)
    return None if count else f'bag {bag} holds no message: its metadata.yaml lists no storage file with messages'


class _Children:
    """The arm's nodes (sim_node and safety_node: collection_graph's specs; on an arm the gate and fake_arm_node,
    or none) and recorder_node, each its own process (so the recorder's disk work and the simulator never hold up
    the control loop), output to one log."""

    def __init__(self, specs: list, bag: Path, compression: str, log_path: Path, topics: list | None = None,
                 use_sim_time: bool = True):
        self.bag = bag
        # Bag timestamps in sim time, like the message stamps, so that a replay's /clock matches them.
        self.recorder = NodeSpec('recorder', 'jepa_rosbag', 'recorder_node',
                                 params_files=[os.path.join(package_share('jepa_bringup'), 'config', 'recorder.yaml')],
                                 parameters={'output': str(bag), 'topics': list(topics or RECORDED_TOPICS),
                                             'storage': 'mcap',
                                             'compression': '' if compression == 'none' else compression,
                                             'use_sim_time': use_sim_time})
        self.log = open(log_path, 'w')
        printer = Printer(self.log)
        self.nodes = [NodeProcess(s, node_command(s), printer) for s in [*specs, self.recorder]]
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        # Each child interpreter bootstraps the ROS wheels' library path itself.
        env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)
        env.setdefault('AMENT_PREFIX_PATH', sys.prefix)
        for node in self.nodes:
            node.start(env)

    def dead(self) -> str | None:
        """Description of a child that exited, with its last output, or None."""
        for node in self.nodes:
            if not node.running():
                node.finish_output()
                tail = '\n'.join(f'    {line}' for line in node.tail)
                return f'{node.spec.name} exited ({describe_exit(node.proc.returncode)}):\n{tail}'
        return None

    def stop(self, timeout: float = 20.0) -> str | None:
        """Stop the recorder first and wait for it to close the bag (RECORDER_CLOSE_TIMEOUT_S at most), then the
        arm; SIGINT each (clean DDS shutdown), SIGKILL what still runs after its time. -> why the bag is not
        complete, or None."""
        recorder = self.nodes[-1]
        for group, limit in (([recorder], RECORDER_CLOSE_TIMEOUT_S), (self.nodes[:-1], timeout)):
            for node in group:
                node.signal(signal.SIGINT)
            end = time.monotonic() + limit
            for node in group:
                if node.proc.poll() is None:
                    try:
                        node.proc.wait(max(0.1, end - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        self.log.write(f'{node.spec.name} did not stop within {limit:g} s: killing it\n')
                        node.signal(signal.SIGKILL)
                        node.proc.wait()
                node.finish_output()
        self.log.close()
        return _incomplete_bag(self.bag, recorder.proc.returncode)


# Topics only our simulator publishes: a second publisher means another graph shares the domain.
SINGLE_PUBLISHER_TOPICS = ('joint_states', '/clock', 'camera/image_raw', 'sim/cube_pose')


def _free_domain_id(candidates: list[int], listen_s: float = 2.0) -> int:
    """The first candidate ROS_DOMAIN_ID where no other node is heard (tests and agents on this machine
    pick domains too; sharing one would mix their arm's states into our data)."""
    for domain_id in candidates:
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=domain_id)
        try:
            probe = Node('collector_domain_probe', context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(probe)
            end = time.monotonic() + listen_s
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.1)
            others = [n for n in probe.get_node_names() if n != probe.get_name()]
            executor.shutdown()
            probe.destroy_node()
        finally:
            rclpy.shutdown(context=context)
        if not others:
            return domain_id
    raise RuntimeError(f'every ROS_DOMAIN_ID tried ({candidates}) is in use; pass a free one with --domain-id')


def _bag_summary(bag: Path, recorded: list | None = None) -> str:
    """Per-topic message counts and size of the bag as written (read back from its metadata); `recorded` are the
    (relative) topics that should have messages."""
    from jepa_rosbag.reader import BagError, BagReader
    try:
        with BagReader(bag) as reader:
            topics = reader.topics
    except BagError as e:
        return f'bag {bag} cannot be read back: {e}'
    size = sum(f.stat().st_size for f in bag.rglob('*') if f.is_file())
    names = [bag_topic(t) for t in (RECORDED_TOPICS if recorded is None else recorded)]
    missing = [t for t in names if t not in topics or not topics[t].message_count]
    lines = [f'bag {bag}: {size / 1e6:.1f} MB, {sum(t.message_count for t in topics.values())} messages']
    lines += [f'  {name:<34} {topic.message_count:>8}' for name, topic in sorted(topics.items())]
    if missing:
        lines.append(f'  no messages on {missing}')
    return '\n'.join(lines)


def _failed_on_interrupt_or_exit(collector, children, interrupted: list) -> bool:
    """Fail the collection when it was interrupted or a child process exited; -> whether it did."""
    dead = children.dead()
    if interrupted:
        collector.fail(f'interrupted ({interrupted[0]}): the bag keeps what was recorded so far')
    elif dead:
        collector.fail(dead)
    return bool(interrupted or dead)


def _recorder_ready(node: Node, topics: list | None = None) -> list[str]:
    """Topics the recorder does not subscribe yet (it subscribes each once its publisher appears)."""
    return [t for t in (RECORDED_TOPICS if topics is None else topics)
            if not any(i.node_name == 'recorder' for i in node.get_subscriptions_info_by_topic(t))]


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.arm is not None:
        from jepa_bringup.arm_collect import run
        return run(args)
    out = Path(args.out)
    if out.exists():
        print(f'jepa collect: {out} already exists; bags are never overwritten, choose another --out', file=sys.stderr)
        return 2
    if args.minutes <= 0 or not 0 < args.episode_seconds[0] <= args.episode_seconds[1]:
        print('jepa collect: --minutes must be > 0 and --episode-seconds MIN MAX with 0 < MIN <= MAX', file=sys.stderr)
        return 2
    shares = {'--push-fraction': args.push_fraction, '--retreat-fraction': args.retreat_fraction}
    outside = [f'{name} {value}' for name, value in shares.items() if not 0.0 <= value <= 1.0]
    if outside:
        print(f'jepa collect: {", ".join(outside)}: a share must be within [0, 1]', file=sys.stderr)
        return 2
    try:
        specs = collection_graph(args.real_time_factor, args.seed, args.sim_camera, perturbation_of(args)[2])
    except (GraphError, ValueError) as e:
        print(f'jepa collect: {e}', file=sys.stderr)
        return 2
    if args.domain_id is not None:
        domain_id = args.domain_id
    else:
        candidates = [int(d) for d in np.random.default_rng().permutation(np.arange(100, 200))[:10]]
        try:
            domain_id = _free_domain_id(candidates)
        except RuntimeError as e:
            print(f'jepa collect: {e}', file=sys.stderr)
            return 1
    os.environ['ROS_DOMAIN_ID'] = str(domain_id)
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.parent / f'{out.name}.nodes.log'

    from tqdm import tqdm

    print(f'jepa collect: {args.minutes:g} sim minutes into {out} (seed {args.seed}, real_time_factor '
          f'{args.real_time_factor:g}, ROS_DOMAIN_ID {domain_id}; node output in {log_path})', flush=True)
    children = _Children(specs, out, args.compression, log_path)
    # Ctrl-C / SIGTERM end the collection through the loop below, which closes the bag and stops the
    # children; rclpy's own handler would invalidate the context under a running spin instead.
    interrupted = []
    rclpy.init(domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _: interrupted.append(signal.Signals(number).name))
    progress = tqdm(total=round(args.minutes, 3), unit='sim min', disable=args.no_progress, dynamic_ncols=True,
                    bar_format='{l_bar}{bar}| {n:.2f}/{total:.2f} sim min [{elapsed}<{remaining}{postfix}]')
    wall_start = time.monotonic()
    play_start = None
    collector = None
    error = None
    try:
        config = BabblingConfig(push_fraction=args.push_fraction, retreat_fraction=args.retreat_fraction)
        collector = PlayCollector(args.seed, args.minutes * 60.0, tuple(args.episode_seconds), policy_config=config)
        executor = SingleThreadedExecutor()
        executor.add_node(collector)
        last_played, last_progress, last_check = -1.0, time.monotonic(), 0.0
        while not collector.done:
            executor.spin_once(timeout_sec=0.1)
            now = time.monotonic()
            if not _failed_on_interrupt_or_exit(collector, children, interrupted) and collector.state == 'waiting':
                missing = _recorder_ready(collector)
                if collector.ready() and not missing:
                    collector.start()
                    play_start = now
                elif now - wall_start > 120:
                    collector.fail(f'the simulator, safety gate and recorder did not come up within 120 s '
                                   f'(reset service ready: {collector.reset_client.service_is_ready()}, '
                                   f'gate state: {collector.gate_state}, topics not recorded yet: {missing})')
            played = collector.played_seconds / 60.0
            if played != last_played:
                progress.update(played - progress.n)
                if collector.stats.ticks % 50 == 0 and play_start is not None and now > play_start:
                    progress.set_postfix_str(f'sim/wall {played * 60 / (now - play_start):.2f}x', refresh=False)
                last_played, last_progress = played, now
            elif collector.state != 'waiting' and now - last_progress > 60:
                collector.fail(f'no progress for 60 s (state {collector.state})')
            if collector.state == 'playing' and now - last_check > 5.0:
                last_check = now
                collector.stats.foreign_publishers.update(
                    t for t in SINGLE_PUBLISHER_TOPICS if collector.count_publishers(t) > 1)
        error = collector.error
    finally:
        progress.close()
        wall = time.monotonic() - wall_start
        play_wall = time.monotonic() - play_start if play_start is not None else 0.0
        if collector is not None:
            collector.destroy_node()
        rclpy.try_shutdown()
        bag_problem = children.stop()
    stats = collector.stats if collector is not None else CollectStats()
    played = collector.played_seconds if collector is not None else 0.0
    print(f'played {played / 60:.2f} sim minutes ({stats.episodes} episodes, {stats.ticks} actions) in '
          f'{wall / 60:.2f} wall minutes ({play_wall / 60:.2f} after start-up): sim/wall ratio '
          f'{played / max(wall, 1e-9):.2f}x overall, {played / max(play_wall, 1e-9):.2f}x while playing')
    if stats.ticks:
        a, b, r2 = stats.action_follow_through()
        print(f'cube moving in {100 * stats.cube_moving_ticks / stats.ticks:.1f}% of the ticks ({stats.pushes} '
              f'pushes started); control ticks missed (late states): {stats.missed_ticks}; gate holds while '
              f'playing: {stats.gate_holds}')
        print(f'end-effector motion between frames = {a:.2f} x action + {b:.2f} x previous action (R^2 {r2:.2f})')
    if out.exists():
        print(_bag_summary(out))
    if stats.foreign_publishers:
        print(f'jepa collect: WARNING: another graph published on {sorted(stats.foreign_publishers)} in ROS_DOMAIN_ID '
              f'{domain_id} during the collection; its messages may be mixed into the bag', file=sys.stderr)
    return _exit_status(error, bag_problem)


def _exit_status(*problems: str | None) -> int:
    """Name each problem of a collection (what stopped it, what is wrong with its bag) -> the exit status."""
    problems = [p for p in problems if p]
    for problem in problems:
        print(f'jepa collect: {problem}', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
