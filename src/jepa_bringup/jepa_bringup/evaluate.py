"""`jepa eval --task reach|push --episodes N --seed S --json OUT`: seeded episodes through the full graph.

The graph (`jepa launch sim`: simulator, safety gate and the six agent nodes, each its own process) runs in
real time on sim time. This process is only the referee: per episode it resets the simulator with the seed,
renders the goal image of a seeded goal state (sim/render_state), hands the task to the configurator
(configurator/set_task), and measures the outcome with privileged sim state (sim/ee_pose, sim/cube_pose).

`--arm PRESET` evaluates reach on another simulated arm instead, as if it were a physical one: graph
`sim_driver_arm` (the `arm` graph of the preset beside sim_driver_node, its driver stand-in, on the wall clock).
The referee alone then uses the stand-in's privileged interface (referee/reset, referee/render_state,
referee/ee_pose, referee/cube_pose, referee/clock), the preset's kinematics and camera topic, and draws reach goals
inside the preset's workspace box (episodes.reach_region).

Conditions (episodes.TASK_CONDITIONS): the agent's mode2, mode1 (on the seeds Mode-2 just taught it) and
mode1_fresh (on new seeds, with DAgger labelling and distillation off); the ablation one_level (push without its
learned higher level); and, on the same seeds in the same run, the references: scripted_skill (push: the graph
with the hand-written push skill as its higher level), a scripted oracle on privileged state and random actions,
the last two driven by the referee itself through the same safety gate while the agent is told `idle`.

`--perturb NAME` (camera_moved, sluggish_arm, heavy_cube, recoloured_cube; jepa_sim.perturbation) changes the
simulated world for every condition: the referee sets the simulator's perturb_* parameters once the graph is up,
before the first episode, and the report's provenance records the names and the values the simulator then holds.
The referee still scores with the true state. With `--perturb-from K` (one task, one agent condition) the first K
episodes run in the unperturbed world and the perturbation comes before episode K: an agent that adapts is measured
before, at and after the change in one run (each episode's record says whether its world was perturbed, and what the
configurator announced it adjusted during it).

Latency is measured from outside the actor, on the wall clock: the arrival here of each camera frame, of its
latent and of the plan the actor chose from it (jepa/plan, published with its command).
"""
import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Pose, PoseStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rcl_interfaces.srv import GetParameters, ListParameters, SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from jepa_bringup.description import SIM_NODE
from jepa_bringup.episodes import ABLATIONS, AGENT_CONDITIONS, BASELINES, DT, PUSH_DISTANCE, PUSH_DISTANCE_LIMITS, \
    RADII, REACH_REGION, SETTLE, SUCCESS_RADIUS, TASK_CONDITIONS, DistanceTrace, Goal, OraclePolicy, RandomPolicy, \
    add_perturbation_arguments, check_push_distance, episode_steps, final_distance, make_goal, perturbation_of, \
    reach_region, sim_camera, summarize, verdict
from jepa_bringup.graph import NAMESPACE_ARGUMENT, GraphError, load_preset, parse_assignments, ros_namespace
from jepa_bringup.provenance import files_sha256, machine_load, provenance
from jepa_common.conversions import image_to_rgb, joint_positions, joint_target_trajectory, stamp_to_sec
from jepa_common.kinematics import ArmKinematics
from jepa_interfaces.msg import LatentState, Plan
from jepa_interfaces.srv import RenderState, ResetSim, SetTask
from jepa_world_model.high_level import high_level_file
from jepa_world_model.readout import default_readout_path
from jepa_sim.camera import CameraConfig
from jepa_sim.perturbation import Perturbation, named_perturbation
from jepa_sim.sim_driver import REFEREE_NAMESPACE
from jepa_world_model.runtime import resolve_checkpoint


REFEREE_NICE = 10
# The conditions the agent's graph drives: the actor's mode, and the configurator task it is given (one_level is
# push without the learned higher level, the push_one_level profile; scripted_skill is push with the push skill as
# the higher level, the push_skill profile).
GRAPH_MODES = {'mode2': 'mode2', 'mode1': 'mode1', 'mode1_fresh': 'mode1', 'one_level': 'mode2',
               'scripted_skill': 'mode2'}
# one_level and scripted_skill apply to push only (TASK_CONDITIONS).
GRAPH_TASKS = {'one_level': 'push_one_level', 'scripted_skill': 'push_skill'}
# The nodes whose effective parameters every report records, and the learned files they name.
LEARNED_NODES = ('perception', 'world_model', 'cost', 'actor', 'configurator')
PERCEPTION_KEYS = ('latency_p50_ms', 'latency_p95_ms', 'cpu_p50_ms', 'cpu_p95_ms')
# Where the referee reads the true state, resets and renders goals, and sees the camera: the simulator's names (graph
# sim), or the driver stand-in's privileged interface for an arm preset (arm_referee_names, graph sim_driver_arm).
SIM_NAMES = {'clock': '/clock', 'ee_pose': 'sim/ee_pose', 'cube_pose': 'sim/cube_pose', 'reset': 'sim/reset',
             'render_state': 'sim/render_state', 'image': 'camera/image_raw', 'camera_info': 'camera/camera_info'}
ARM_GRAPH = 'sim_driver_arm'


def arm_referee_names(preset: dict) -> dict:
    """The referee's names for an arm preset behind sim_driver_node (referee:=true)."""
    image = str(preset['camera']['image_topic'])
    names = {key: f'{REFEREE_NAMESPACE}/{key}' for key in ('clock', 'ee_pose', 'cube_pose', 'reset', 'render_state')}
    return {**names, 'image': image, 'camera_info': image.rsplit('/', 1)[0] + '/camera_info'}


def preset_kinematics(preset: dict) -> ArmKinematics:
    """The arm preset's kinematics, as the arm graph gives them to every node."""
    return ArmKinematics(preset['kinematics']['urdf'] or None, arm_joints=preset['joints']['arm'],
                         finger_joints=preset['joints']['gripper'] or [], ee_frame=preset['kinematics']['ee_frame'],
                         home=preset['kinematics']['home'],
                         workspace=tuple(zip(preset['workspace']['min'], preset['workspace']['max'])))


def status_node(name: str) -> str:
    """The node a /diagnostics status is about: its name up to the first ':', without a namespace
    ('/arm1/perception: encoder' and 'perception: encoder' -> 'perception')."""
    return name.split(':')[0].strip().rsplit('/', 1)[-1]


def perception_summary(reports: list[dict[str, float]]) -> dict:
    """The medians of perception's rolling reports over a task (each covers its last 500 frames): per-frame
    latency (image received -> latent published, wall clock) and the node's own CPU time."""
    median = lambda key: float(np.median([r[key] for r in reports])) if reports else None  # noqa: E731
    return {'latency_ms': {'p50': median('latency_p50_ms'), 'p95': median('latency_p95_ms')},
            'cpu_ms': {'p50': median('cpu_p50_ms'), 'p95': median('cpu_p95_ms')}, 'reports': len(reports)}


class Referee(Node):
    """Talks to the running graph: resets, goals, tasks, and the privileged state it scores with."""

    def __init__(self, kinematics: ArmKinematics, context=None, names: dict | None = None, region=REACH_REGION,
                 push_distance=PUSH_DISTANCE):
        super().__init__('eval_referee', context=context)
        self.kinematics = kinematics
        names = names or SIM_NAMES
        # Where reach goals are drawn, and how far from the cube push goals are.
        self.region, self.push_distance = region, push_distance
        self.sim_time = 0.0
        self.ee = self.cube = self.q = None
        self.image: np.ndarray | None = None
        self.camera_info: CameraInfo | None = None
        self.plans: list[Plan] = []
        self.latest_plan: Plan | None = None
        # Wall-clock arrival here of recent frames and of their latents, by image stamp; one latency record per
        # plan (frame -> latent -> plan), in the order the plans came.
        self.frame_arrivals: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.latent_arrivals: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.latencies: list[dict[str, float]] = []
        # The last /diagnostics values of each node (the configurator's adjustment counts, for the report).
        self.status: dict[str, dict[str, str]] = {}
        # What the configurator announced it adjusted, or kept, in the order announced (each episode's share goes
        # into its record: when the agent adapted, against its success).
        self.adjustments: list[dict] = []
        self.create_subscription(String, 'configurator/adjustment', self._on_adjustment, 10)
        # The configurator's hand-reading check, each judged window's gap (cm): how near a drift alarm the run came.
        self.hand_reading: list[float] = []
        self.create_subscription(String, 'configurator/hand_reading', self._on_hand_reading, 10)
        self.create_subscription(Clock, names['clock'], self._on_clock, 10)
        self.create_subscription(PoseStamped, names['ee_pose'], lambda m: setattr(self, 'ee', _position(m.pose)), 10)
        self.create_subscription(PoseStamped, names['cube_pose'], lambda m: setattr(self, 'cube', _position(m.pose)),
                                 10)
        self.create_subscription(JointState, 'joint_states', self._on_joint_state, 10)
        self.create_subscription(Image, names['image'], self._on_image, 10)
        self.create_subscription(CameraInfo, names['camera_info'], lambda m: setattr(self, 'camera_info', m), 1)
        self.create_subscription(Plan, 'jepa/plan', self._on_plan, 10)
        # Readiness of the agent: each node's first sign of life once it spins (models loaded).
        self.alive: set[str] = set()
        # Perception's latency reports (its rolling p50 / p95, wall and CPU time), for the report.
        self.perception_reports: list[dict[str, float]] = []
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.create_subscription(LatentState, 'jepa/latent', self._on_latent, 10)
        self.command_pub = self.create_publisher(JointTrajectory, 'jepa/joint_trajectory', 10)
        self.reset_client = self.create_client(ResetSim, names['reset'])
        self.render_client = self.create_client(RenderState, names['render_state'])
        self.task_client = self.create_client(SetTask, 'configurator/set_task')
        self._service_clients: dict[str, object] = {}
        self.executor_ = SingleThreadedExecutor(context=context)
        self.executor_.add_node(self)

    def close(self) -> None:
        # Its executor is not spinning (spin_until drives it); shut it down before the node goes, so that the
        # context's shutdown later finds nothing of it to wait for.
        self.executor_.shutdown(timeout_sec=5.0)
        self.destroy_node()

    def _on_adjustment(self, msg: String) -> None:
        try:
            announced = json.loads(msg.data)
        except ValueError:
            announced = {'unreadable': msg.data}
        self.adjustments.append({'kind': announced.get('kind', ''), 'installed': bool(announced.get('installed')),
                                 'sim_time': self.sim_time})

    def _on_hand_reading(self, msg: String) -> None:
        try:
            self.hand_reading.append(float(json.loads(msg.data)['window_cm']))
        except (ValueError, KeyError, TypeError):
            pass

    def _on_clock(self, msg: Clock) -> None:
        self.sim_time = stamp_to_sec(msg.clock)

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self.q = joint_positions(msg, self.kinematics.arm_joints)
        except ValueError:
            pass

    def _on_image(self, msg: Image) -> None:
        _remember(self.frame_arrivals, _stamp_ns(msg.header.stamp))
        self.image = image_to_rgb(msg)

    def _on_latent(self, msg: LatentState) -> None:
        _remember(self.latent_arrivals, _stamp_ns(msg.header.stamp))
        self.alive.add('latent')

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            node = status_node(status.name)
            self.alive.add(node)
            self.status[node] = {kv.key: kv.value for kv in status.values}
            if node == 'perception':
                values = {kv.key: kv.value for kv in status.values}
                try:
                    report = {key: float(values[key]) for key in PERCEPTION_KEYS}
                except (KeyError, ValueError):
                    continue  # a perception node that does not report these
                if all(np.isfinite(v) for v in report.values()):  # nan: no frames yet
                    self.perception_reports.append(report)

    def _on_plan(self, msg: Plan) -> None:
        arrived = time.perf_counter()
        self.plans.append(msg)
        self.latest_plan = msg
        source = _stamp_ns(msg.source_stamp)
        frame, latent = self.frame_arrivals.get(source), self.latent_arrivals.get(source)
        record = {'plan': msg.plan_time_ms}
        if frame is not None:
            record['e2e_wall'] = (arrived - frame) * 1e3
            if latent is not None:
                record['perception_wall'] = (latent - frame) * 1e3
                record['actor_wall'] = (arrived - latent) * 1e3
        self.latencies.append(record)

    # -- waiting without blocking the callbacks
    def spin_until(self, predicate, timeout: float, what) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f'timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}')
            self.executor_.spin_once(timeout_sec=0.02)

    def sleep_sim(self, seconds: float) -> None:
        until = self.sim_time + seconds
        self.spin_until(lambda: self.sim_time >= until, 30 + 10 * seconds, f'{seconds} s of sim time')

    def node_parameters(self, node: str) -> dict:
        """Every parameter a node has, as it has it now (its effective settings)."""
        names = self.call(self._client(ListParameters, f'{node}/list_parameters'), ListParameters.Request()).result.names
        values = self.call(self._client(GetParameters, f'{node}/get_parameters'), GetParameters.Request(names=names)).values
        return {name: parameter_value_to_python(value) for name, value in zip(names, values)}

    def set_node_parameters(self, node: str, values: dict) -> None:
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        results = self.call(self._client(SetParameters, f'{node}/set_parameters'), request).results
        refused = [f'{name}: {r.reason}' for name, r in zip(values, results) if not r.successful]
        if refused:
            raise RuntimeError(f'{node} refused {refused}')

    def _client(self, srv_type, name: str):
        if name not in self._service_clients:
            self._service_clients[name] = self.create_client(srv_type, name)
        return self._service_clients[name]

    def call(self, client, request, timeout: float = 30.0):
        self.spin_until(client.service_is_ready, 60.0, f'service {client.srv_name}')
        future = client.call_async(request)
        self.spin_until(future.done, timeout, f'a response from {client.srv_name}')
        return future.result()

    # -- episode steps
    # Nodes start in parallel and load torch models; under load that takes many seconds. Episodes start only
    # once every module is spinning, so that none is scored while still starting.
    AGENT_SIGNS = ('actor', 'configurator', 'short_term_memory', 'perception', 'world_model', 'latent')

    def wait_for_graph(self, timeout: float) -> None:
        self.spin_until(lambda: all(c.service_is_ready() for c in (self.reset_client, self.render_client,
                                                                    self.task_client))
                        and self.q is not None and self.ee is not None and self.cube is not None,
                        timeout, 'the arm (sim services, configurator, joint states, poses)')
        self.spin_until(lambda: self.alive.issuperset(self.AGENT_SIGNS), timeout,
                        lambda: f'the agent nodes (missing: {sorted(set(self.AGENT_SIGNS) - self.alive)})')

    def set_task(self, task: str, goal_image: Image | None = None, mode: str = '') -> None:
        request = SetTask.Request(task=task, mode=mode)
        if goal_image is not None:
            request.goal_image = goal_image
        response = self.call(self.task_client, request)
        if not response.success:
            raise RuntimeError(f'configurator refused task {task}: {response.message}')

    def reset(self, seed: int) -> None:
        response = self.call(self.reset_client, ResetSim.Request(seed=seed, randomize_arm=True, randomize_cube=True))
        if not response.success:
            raise RuntimeError(f'{self.reset_client.srv_name} failed: {response.message}')
        self.sleep_sim(SETTLE)

    def render_goal(self, goal: Goal) -> Image:
        request = RenderState.Request(joint_names=list(self.kinematics.arm_joints),
                                      joint_positions=[float(v) for v in goal.arm_q], set_cube=True)
        request.cube_pose = Pose()
        request.cube_pose.position.x, request.cube_pose.position.y, request.cube_pose.position.z = \
            (float(v) for v in goal.cube_position)
        request.cube_pose.orientation.w = 1.0
        response = self.call(self.render_client, request)
        if not response.success:
            raise RuntimeError(f'{self.render_client.srv_name} failed: {response.message}')
        return response.image

    def command(self, action: np.ndarray) -> None:
        q_target, fingers = self.kinematics.action_to_joint_target(self.q, action)
        self.command_pub.publish(joint_target_trajectory(
            [*self.kinematics.arm_joints, *self.kinematics.finger_joints], np.r_[q_target, fingers], DT))

    def hold(self) -> None:
        self.command_pub.publish(JointTrajectory(
            joint_names=[*self.kinematics.arm_joints, *self.kinematics.finger_joints]))


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _remember(arrivals: collections.OrderedDict, key: int, keep: int = 200) -> None:
    arrivals[key] = time.perf_counter()
    while len(arrivals) > keep:
        arrivals.popitem(last=False)


def _position(pose: Pose) -> np.ndarray:
    return np.array([pose.position.x, pose.position.y, pose.position.z])


class VideoRecorder:
    """Camera frames of one episode with the actor's planned end-effector path drawn over them."""

    def __init__(self, path: Path, camera_eye, camera_target, scale: int = 4):
        self.path = Path(path)
        self.scale = scale
        self.frames: list[np.ndarray] = []
        self.world_to_camera = _look_at(np.asarray(camera_eye, float), np.asarray(camera_target, float))

    def add(self, rgb: np.ndarray, info: CameraInfo | None, plan: Plan | None, caption: str) -> None:
        import cv2
        frame = cv2.resize(rgb, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_NEAREST)
        if plan is not None and info is not None and plan.predicted_ee_path:
            k = np.array(info.k, float).reshape(3, 3)
            points = np.array([[p.x, p.y, p.z] for p in plan.predicted_ee_path])
            cam = (self.world_to_camera[:3, :3] @ points.T + self.world_to_camera[:3, 3:4]).T
            pixels = (k @ cam.T).T
            uv = (pixels[:, :2] / pixels[:, 2:3] * self.scale).astype(int)
            cv2.polylines(frame, [uv.reshape(-1, 1, 2)], False, (40, 220, 60), 2)
            for u, v in uv[1:]:
                cv2.circle(frame, (int(u), int(v)), 3, (255, 150, 0), -1)
        cv2.putText(frame, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        self.frames.append(frame)

    def write(self) -> Path | None:
        import cv2
        if not self.frames:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        h, w = self.frames[0].shape[:2]
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*'mp4v'), 1 / DT, (w, h))
        if writer.isOpened():
            for f in self.frames:
                writer.write(f[:, :, ::-1])
            writer.release()
            return self.path
        # No MP4 encoder in this OpenCV build: write an animated GIF instead.
        from PIL import Image as PILImage
        gif = self.path.with_suffix('.gif')
        images = [PILImage.fromarray(f) for f in self.frames]
        images[0].save(gif, save_all=True, append_images=images[1:], duration=int(DT * 1000), loop=0)
        return gif


def _look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World -> camera optical frame (x right, y down, z forward) for a camera at eye looking at target."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    transform = np.eye(4)
    transform[:3, :3] = rotation
    transform[:3, 3] = -rotation @ eye
    return transform


def run_episode(referee: Referee, condition: str, task: str, seed: int, video: VideoRecorder | None) -> dict:
    referee.set_task('idle')
    referee.hold()
    referee.reset(seed)
    goal = make_goal(task, seed, referee.kinematics, referee.q, referee.cube, referee.region, referee.push_distance)
    goal_image = referee.render_goal(goal)
    steps = episode_steps(goal, referee.cube)
    policy = None
    if condition in GRAPH_MODES:
        referee.set_task(GRAPH_TASKS.get(condition, task), goal_image, GRAPH_MODES[condition])
    else:
        policy = (OraclePolicy(goal, referee.kinematics.max_step) if condition == 'oracle'
                  else RandomPolicy(seed, referee.kinematics.max_step))
    start_plans, start_latencies = len(referee.plans), len(referee.latencies)
    start_adjustments, start_hand_reading = len(referee.adjustments), len(referee.hand_reading)
    start_distance = final_distance(goal, referee.ee, referee.cube)
    trace = DistanceTrace(task, start_distance)
    for step in range(steps):
        if policy is not None:
            # The hand where the joint state the command is built from puts it (sim/ee_pose comes with the camera,
            # up to a frame older: a step computed from it lands beyond its target).
            referee.command(policy.act(referee.kinematics.fk(referee.q), referee.cube))
        referee.sleep_sim(DT)
        trace.add(final_distance(goal, referee.ee, referee.cube))
        if video is not None and referee.image is not None:
            video.add(referee.image, referee.camera_info, referee.latest_plan,
                      f'{task} {condition} seed {seed} t={step * DT:.1f}s')
    referee.set_task('idle')
    referee.hold()
    distance = final_distance(goal, referee.ee, referee.cube)
    return {'seed': seed, 'success': bool(distance < SUCCESS_RADIUS[task]), 'final_distance_m': distance,
            'start_distance_m': start_distance, **trace.record(distance), 'steps': steps,
            'plans': len(referee.plans) - start_plans,
            'latencies': referee.latencies[start_latencies:], 'adjustments': referee.adjustments[start_adjustments:],
            'hand_reading_cm': referee.hand_reading[start_hand_reading:]}


# Wall clock, here: frame -> plan (the command goes out just before its plan), and its two parts.
LATENCY_SERIES = {'plan': 'plan_latency', 'e2e_wall': 'e2e_wall_latency',
                  'perception_wall': 'frame_to_latent_latency', 'actor_wall': 'latent_to_plan_latency'}


def condition_seeds(condition: str, seed: int, episodes: int, reference_episodes: int) -> range:
    """mode1_fresh plays the seeds after the taught ones; references a prefix of the agent's seeds."""
    if condition == 'mode1_fresh':
        return range(seed + episodes, seed + 2 * episodes)
    return range(seed, seed + (reference_episodes if condition in BASELINES else episodes))


class EvaluationAborted(RuntimeError):
    """A task's evaluation stopped before its end (a service timed out, the graph stopped): `report` holds what
    was measured until then, the unfinished condition's episodes included."""

    def __init__(self, report: dict, cause: BaseException):
        super().__init__(f'{type(cause).__name__}: {cause}')
        self.report = report


def evaluate(referee: Referee, task: str, episodes: int, seed: int, conditions: list[str],
             video_path: Path | None, camera: CameraConfig, reference_episodes: int | None = None,
             log=print, perturb_from: int = 0, perturb=None) -> dict:
    """The task's report; `perturb` (a callable, with perturb_from > 0) changes the world before episode
    `perturb_from` of each condition."""
    per_condition, seeds = {}, {}
    referee.perception_reports.clear()
    conditions = [c for c in conditions if c in TASK_CONDITIONS[task]]

    def report() -> dict:
        return {'task': task, 'success_radius_m': SUCCESS_RADIUS[task], 'radii_m': list(RADII), 'seeds': seeds,
                'conditions': per_condition, 'perception': perception_summary(referee.perception_reports)}

    for condition in conditions:
        results, latencies = [], {name: [] for name in LATENCY_SERIES}
        run_seeds = condition_seeds(condition, seed, episodes, episodes if reference_episodes is None
                                    else reference_episodes)
        seeds[condition] = [run_seeds.start, run_seeds.stop - 1]
        # mode1_fresh: the policy acts alone, learning nothing from the seeds it is scored on.
        restore = None
        if condition == 'mode1_fresh':
            restore = {'dagger_every': referee.node_parameters('actor')['dagger_every']}
            referee.set_node_parameters('actor', {'dagger_every': 0})
        try:
            for i, episode_seed in enumerate(run_seeds):
                video = VideoRecorder(video_path, camera.eye, camera.target) \
                    if video_path is not None and i == 0 and condition == conditions[0] else None
                if perturb is not None and i == perturb_from:
                    perturb()
                try:
                    result = run_episode(referee, condition, task, episode_seed, video)
                except (TimeoutError, RuntimeError) as exc:
                    # Keep what was measured: the episodes so far, this condition's included.
                    if results:
                        per_condition[condition] = summarize(results, {LATENCY_SERIES[k]: v
                                                                       for k, v in latencies.items()})
                    raise EvaluationAborted(report(), exc) from exc
                for record in result.pop('latencies'):
                    for name in LATENCY_SERIES:
                        if name in record:
                            latencies[name].append(record[name])
                if perturb is not None:
                    result['perturbed'] = i >= perturb_from
                results.append(result)
                log(f'  {task:5s} {condition:14s} seed {episode_seed:4d}: distance {result["start_distance_m"]:.3f} -> '
                    f'{result["final_distance_m"]:.3f} m  {verdict(result)}')
                if video is not None:
                    log(f'  wrote {video.write()}')
        finally:
            if restore is not None:
                referee.set_node_parameters('actor', restore)
        per_condition[condition] = summarize(results, {LATENCY_SERIES[k]: v for k, v in latencies.items()})
    return report()


def learned_files(parameters: dict[str, dict]) -> dict:
    """The learned files the agent's nodes load, by what their parameters name ('' = the shipped default)."""
    actor = parameters.get('actor', {})
    files = {f'{node}.checkpoint': resolve_checkpoint(parameters[node].get('checkpoint', ''))
             for node in ('perception', 'world_model', 'cost', 'actor') if node in parameters}
    files['actor.readout_path'] = actor.get('readout_path') or str(default_readout_path())
    if 'actor' in parameters:
        files['actor.high_level_path'] = high_level_file(actor.get('high_level_path', ''), files['actor.checkpoint'])
    for node, name in (('actor', 'critic_path'), ('actor', 'policy_path'), ('actor', 'subgoal_policy_path'),
                       ('cost', 'critic_path')):
        files[f'{node}.{name}'] = parameters.get(node, {}).get(name, '')
    return files_sha256(files)


def start_graph(graph: str, launch_args: list[str], log_path: Path) -> subprocess.Popen:
    """`jepa launch GRAPH ARGS` in this process's ROS domain (ROS_DOMAIN_ID, else a random one, set here too so
    this process's rclpy joins it), on localhost only; output to log_path."""
    domain = os.environ.get('ROS_DOMAIN_ID') or str(random.Random().randrange(1, 232))
    os.environ.update(ROS_DOMAIN_ID=domain, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    # The launcher must set up its own ROS library path, not inherit this interpreter's bootstrap marker.
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    launcher = Path(sys.prefix) / 'bin' / 'jepa'
    return subprocess.Popen([str(launcher), 'launch', graph, *launch_args], env=env,
                            stdout=open(log_path, 'w'), stderr=subprocess.STDOUT, start_new_session=True)


def stop_graph(graph: subprocess.Popen, timeout: float = 30.0) -> int:
    if graph.poll() is None:
        graph.send_signal(signal.SIGINT)
        try:
            graph.wait(timeout)
        except subprocess.TimeoutExpired:
            graph.kill()
            graph.wait()
    return graph.returncode


def graph_camera(launch_args: list[str], arm: str | None = None) -> CameraConfig:
    """The camera the graph's sim node will use with these launch arguments (its `sim_camera` params file on
    top of config/sim.yaml), or with an arm preset the driver stand-in's (config/sim_driver.yaml); ValueError
    naming what is wrong."""
    if arm:
        return sim_camera(None, 'sim_driver.yaml', 'sim_driver')
    return sim_camera(parse_assignments(launch_args).get('sim_camera'))


def run(tasks: list[str], episodes: int, seed: int, conditions: list[str], launch_args: list[str],
        video_path: Path | None, log_dir: Path, camera: CameraConfig, reference_episodes: int | None = None,
        command: list[str] | None = None, log=print, arm: str | None = None,
        perturb: dict | None = None, node_settings: dict[str, dict] | None = None,
        push_distance=PUSH_DISTANCE) -> dict:
    """Bring up the graph in its own ROS domain, evaluate every task, bring it down. `camera` is the graph's
    simulated camera (sim_camera), for the video overlay; `arm` an arm preset to evaluate behind the driver
    stand-in (graph sim_driver_arm) instead of the Panda simulator; `perturb` {'names': [...], 'settings': {field:
    value}, 'from_episode': K} the world perturbation the simulator gets before the first episode, or before
    episode K of the (one) condition (named_perturbation; the Panda simulator only); `node_settings` {node: {name:
    value}} agent nodes' parameters set before the first episode; `push_distance` (near, far) m, the range push
    goals are drawn from. Returns {'provenance': ..., 'tasks': {task: report}}."""
    namespace = ros_namespace(parse_assignments(launch_args).get(NAMESPACE_ARGUMENT, ''))
    record = provenance(command or sys.argv)
    record['launch_args'] = launch_args
    if 'push' in tasks:
        record['push_distance_m'] = list(push_distance)
    graph_log = log_dir / 'graph.log'
    if arm:
        preset = load_preset(arm)
        record['arm'] = arm
        kinematics, names = preset_kinematics(preset), arm_referee_names(preset)
        region = reach_region(kinematics.workspace)
        graph = start_graph(ARM_GRAPH, ['task:=idle', f'arm:={arm}', 'referee:=true', *launch_args], graph_log)
    else:
        kinematics, names, region = ArmKinematics(), SIM_NAMES, REACH_REGION
        graph = start_graph('sim', ['task:=idle', *launch_args], graph_log)
    log(f'started the graph (ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}, log {graph_log})')
    # The referee follows /clock and /joint_states (120 Hz each): on a small machine that is CPU the graph's
    # command path would otherwise wait for. It yields (after starting the graph, which must not inherit this);
    # it acts on sim time, so a referee a few ms late measures the same episodes.
    os.nice(REFEREE_NICE)
    # Not this process's command line: its graph arguments (name:=value) are the graph's, not ROS remaps. The
    # referee joins the graph's namespace (namespace:=), and its clock.
    rclpy.init(args=['jepa-eval', '--ros-args', '-r', f'__ns:={namespace}', '-r', '/clock:=clock'] if namespace
               else [])
    referee = Referee(kinematics, names=names, region=region, push_distance=push_distance)
    reports, later = {}, {}
    try:
        referee.wait_for_graph(120.0)
        if not arm:
            perturb = perturb or {'names': [], 'settings': {}}
            perturb_from = perturb.get('from_episode', 0)
            record['perturbation'] = perturb_world(referee, perturb if not perturb_from else
                                                   {'names': [], 'settings': {}}, log)
            if perturb_from:
                record['perturbation'] = {**record['perturbation'], 'names': perturb['names'],
                                          'settings': perturb['settings'], 'from_episode': perturb_from}

                def perturb_later():
                    record['perturbation']['sim_parameters'] = perturb_world(referee, perturb, log)['sim_parameters']
                later = {'perturb_from': perturb_from, 'perturb': perturb_later}
        if node_settings:
            record['node_settings'] = apply_node_settings(referee, node_settings, log)
        record['parameters'] = {node: referee.node_parameters(node) for node in LEARNED_NODES}
        record['files'] = learned_files(record['parameters'])
        for task in tasks:
            task_video = None if video_path is None else video_path.with_name(f'{video_path.stem}_{task}{video_path.suffix}')
            try:
                reports[task] = evaluate(referee, task, episodes, seed, conditions, task_video, camera,
                                         reference_episodes, log, **later)
            except EvaluationAborted as aborted:
                reports[task] = aborted.report
                record['aborted'] = f'{task}: {aborted}'
                log(f'jepa eval: {task} aborted ({aborted}); the report holds the episodes measured until then')
                break
            if graph.poll() is not None:
                raise RuntimeError(f'the graph stopped (exit {graph.returncode}); see {graph_log}')
        # What the run itself changed: adjustments the configurator made, and the files in service at the end.
        record['adjustments'] = {k: v for k, v in referee.status.get('configurator', {}).items()
                                 if k in ('surprise_triggers', 'world_model_updates', 'world_model_kept',
                                          'critic_updates', 'hand_reading_triggers', 'encoder_updates',
                                          'encoder_kept', 'hand_reading_windows', 'hand_reading_highest_median_cm',
                                          'adjustment_failures')}
        record['files_end'] = learned_files({node: referee.node_parameters(node) for node in LEARNED_NODES})
    finally:
        referee.close()
        rclpy.try_shutdown()
        code = stop_graph(graph)
        log(f'graph stopped (exit {code})')
    record['load_end'] = machine_load()
    return {'provenance': record, 'tasks': reports}


def node_settings_of(items: list[str]) -> dict[str, dict]:
    """`--set` items NODE.NAME=VALUE (VALUE read as YAML) -> {node: {name: value}}; ValueError naming a malformed
    item or a node that is not one of the agent's (LEARNED_NODES)."""
    settings: dict[str, dict] = {}
    for item in items:
        key, sep, text = item.partition('=')
        node, dot, name = key.partition('.')
        if not (sep and dot and node and name and text):
            raise ValueError(f'--set {item!r}: expected NODE.NAME=VALUE, e.g. actor.subgoal_samples=512')
        if node not in LEARNED_NODES:
            raise ValueError(f'--set {item!r}: {node!r} is not one of the agent\'s nodes ({", ".join(LEARNED_NODES)})')
        try:
            settings.setdefault(node, {})[name] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f'--set {item!r}: the value is not YAML ({exc})') from None
    return settings


class SettingRefused(RuntimeError):
    """A node refused a parameter `jepa eval --set` gave it."""


def apply_node_settings(referee: Referee, settings: dict[str, dict], log=print) -> dict[str, dict]:
    """Set the agent nodes' parameters `settings` names -> {node: {name: value}} as the nodes hold them afterwards,
    read back; SettingRefused naming what a node refused."""
    held = {}
    for node, values in settings.items():
        try:
            referee.set_node_parameters(node, values)
        except RuntimeError as exc:
            raise SettingRefused(f'--set: {exc}') from None
        now = referee.node_parameters(node)
        held[node] = {name: now.get(name) for name in values}
        log(f'set {node} parameters {held[node]}')
    return held


def perturb_world(referee: Referee, perturb: dict, log=print) -> dict:
    """Give the simulator the perturbation `perturb` names ({'names': [...], 'settings': {field: value}}; none
    given: the simulator is left as it was started) -> its provenance record: the names, the settings and every
    perturb_* value the simulator holds afterwards, read back from it."""
    given = bool(perturb['names'] or perturb['settings'])
    if given:
        referee.set_node_parameters(SIM_NODE, named_perturbation(perturb['names'], perturb['settings']).parameters())
    held = {name: value for name, value in referee.node_parameters(SIM_NODE).items()
            if name.startswith(Perturbation.PARAMETER_PREFIX)}
    if given:
        log(f'perturbed the world: {", ".join(perturb["names"]) or "-"} {perturb["settings"] or ""} -> {held}')
    return {'names': list(perturb['names']), 'settings': dict(perturb['settings']), 'sim_parameters': held}


def success_table(result: dict) -> str:
    radii = '  '.join(f'{r * 100:g}cm' for r in RADII)
    rows = [f'{"task":6s} {"condition":15s} {"n":>3s} {"success":>8s}  at {radii:28s} {"final p50 (m)":>13s} '
            f'{"plan p50/p95":>13s} {"e2e wall p50/p95 (ms)":>22s}']

    def fmt(pair):
        return '-' if pair['p50'] is None else f'{pair["p50"]:.0f}/{pair["p95"]:.0f}'

    for task, report in result['tasks'].items():
        for name, r in report['conditions'].items():
            at = '  '.join(f'{r["success_at_radius"][f"{radius:g}"] * 100:3.0f}%' for radius in RADII)
            rows.append(f'{task:6s} {name:15s} {r["episodes"]:3d} {r["success_rate"] * 100:7.0f}%  at {at:28s} '
                        f'{r["final_distance_m"]["p50"]:13.3f} {fmt(r["plan_latency_ms"]):>13s} '
                        f'{fmt(r["e2e_wall_latency_ms"]):>22s}')
        for name, r in report['conditions'].items():
            if r.get('outcomes'):
                rows.append(f'{task:6s} {name:15s} outcomes: '
                            + ', '.join(f'{outcome} {count}' for outcome, count in r['outcomes'].items() if count))
        perception = report.get('perception') or {}
        if perception.get('reports'):
            rows.append(f'{task:6s} perception per frame p50/p95: {fmt(perception["latency_ms"])} ms '
                        f'(its own CPU time {fmt(perception["cpu_ms"])} ms)')
    return '\n'.join(rows)


def plot_success_curves(result: dict, path: Path) -> Path:
    """Per task, the share of episodes of each condition that ended within each distance of the goal: the success
    rate as a curve over the radius, with the reported radii marked."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tasks = result['tasks']
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    radii = np.linspace(0.0, 0.2, 401)
    for ax, (task, report) in zip(axes[0], tasks.items()):
        for name, condition in report['conditions'].items():
            final = np.array(condition['final_distance_m']['per_episode'])
            ax.plot(radii * 100, [(final < r).mean() * 100 for r in radii], label=f'{name} (n={len(final)})',
                    linestyle='--' if name in BASELINES else '-')
        for radius in RADII:
            ax.axvline(radius * 100, color='grey', linewidth=0.5, linestyle=':')
        ax.axvline(report['success_radius_m'] * 100, color='black', linewidth=0.8)
        ax.set(title=f'{task}: success within radius', xlabel='final distance to the goal (cm)', ylabel='episodes (%)',
               xlim=(0, 20), ylim=(-2, 102))
        ax.legend(fontsize=8, loc='lower right')
    commit = result.get('provenance', {}).get('git', {})
    fig.suptitle(f'jepa eval, commit {str(commit.get("commit", "?"))[:10]}{" (dirty)" if commit.get("dirty") else ""}',
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='jepa eval', description=__doc__.split('\n')[0])
    parser.add_argument('--task', choices=['reach', 'push'], action='append',
                        help='task to evaluate (repeat for both; default reach)')
    parser.add_argument('--episodes', type=int, default=10, help='episodes of each agent condition')
    parser.add_argument('--reference-episodes', type=int, default=None,
                        help='episodes of each reference (scripted_skill, random, oracle), on the first of the '
                             "agent's seeds (default: --episodes)")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', type=Path, help='write the report here')
    every = [*AGENT_CONDITIONS, *ABLATIONS, *BASELINES]
    parser.add_argument('--conditions', default=','.join(every),
                        help=f'comma-separated subset of {", ".join(every)} (default: all that apply to the task; '
                             'one_level and scripted_skill apply to push only)')
    parser.add_argument('--video', type=Path, help='MP4 of the first episode with the planned path drawn')
    parser.add_argument('--plot', type=Path, help='PNG of success against the radius, per task and condition')
    parser.add_argument('--from-json', type=Path, metavar='REPORT',
                        help='run nothing: print the table (and --plot) of a report an earlier run wrote')
    parser.add_argument('--log-dir', type=Path, default=Path('runs/eval'))
    parser.add_argument('--arm', metavar='PRESET', default=None,
                        help='evaluate reach on this arm preset, simulated behind sim_driver_node as if it were a '
                             'physical arm (graph sim_driver_arm; the referee alone uses its referee/ interface)')
    add_perturbation_arguments(parser)
    parser.add_argument('--perturb-from', type=int, default=0, metavar='K',
                        help='perturb the world before episode K (default 0: from the start); one task and one '
                             'agent condition')
    parser.add_argument('--set', action='append', default=[], metavar='NODE.NAME=VALUE', dest='node_settings',
                        help="an agent node's parameter, set once the graph is up and before the first episode "
                             '(e.g. actor.subgoal_samples=512; VALUE is read as YAML); the report records it')
    parser.add_argument('--push-distance', metavar='NEAR,FAR', default=None,
                        help=f'draw push goals this far from the cube, in metres (default '
                             f'{PUSH_DISTANCE[0]},{PUSH_DISTANCE[1]}; within {PUSH_DISTANCE_LIMITS[0]}-'
                             f'{PUSH_DISTANCE_LIMITS[1]}): success against goal distance. The seeds\' goals '
                             f'change with the range, so reports of different ranges do not compare')
    parser.add_argument('launch_args', nargs='*', help='graph arguments name:=value (device:=cuda, checkpoint:=...)')
    args = parser.parse_args(argv)
    if args.from_json:
        try:
            result = json.loads(args.from_json.read_text())
            print(success_table(result))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            parser.error(f'--from-json {args.from_json}: not a report of jepa eval ({exc!r})')
        if args.plot:
            print(f'wrote {plot_success_curves(result, args.plot)}')
        return 0
    conditions = [c for c in args.conditions.split(',') if c]
    unknown = set(conditions) - set(every)
    if unknown or not conditions:
        parser.error(f'unknown conditions {sorted(unknown)} ({", ".join(every)})')
    if args.episodes < 1 or (args.reference_episodes is not None and args.reference_episodes < 1):
        parser.error('--episodes and --reference-episodes must be >= 1')
    if args.arm and (args.task or ['reach']) != ['reach']:
        # The push goals and the oracle's push height are the Panda's fingertip frame's.
        parser.error('--arm evaluates reach only')
    try:
        names, settings, perturbation = perturbation_of(args)
        node_settings = node_settings_of(args.node_settings)
        push_distance = (PUSH_DISTANCE if args.push_distance is None
                         else check_push_distance(args.push_distance.split(',')))
    except ValueError as exc:
        parser.error(str(exc))
    if args.push_distance is not None and 'push' not in (args.task or ['reach']):
        parser.error('--push-distance sets where push goals are drawn: give --task push')
    if args.arm and (args.perturb or args.perturb_set):
        parser.error('--perturb and --perturb-set perturb the Panda simulator (graph sim), not an --arm preset')
    if args.perturb_from:
        if not (args.perturb or args.perturb_set) or not 0 < args.perturb_from < args.episodes:
            parser.error(f'--perturb-from {args.perturb_from} needs a --perturb and must be within 1..episodes - 1')
        if len(args.task or ['reach']) != 1 or len(conditions) != 1 or conditions[0] in BASELINES:
            parser.error('--perturb-from changes the world within one run of episodes: give one --task and one '
                         'agent condition (--conditions mode2, say)')
    try:
        if args.arm:
            load_preset(args.arm)
        camera = graph_camera(args.launch_args, args.arm)
        camera = camera if args.perturb_from else perturbation.moved_camera(camera)  # the video's first episode
    except (ValueError, GraphError) as exc:
        parser.error(str(exc))
    try:
        result = run(args.task or ['reach'], args.episodes, args.seed, conditions, args.launch_args, args.video,
                     args.log_dir, camera, args.reference_episodes,
                     command=['jepa', 'eval', *(sys.argv[1:] if argv is None else argv)], arm=args.arm,
                     perturb={'names': names, 'settings': settings, 'from_episode': args.perturb_from},
                     node_settings=node_settings, push_distance=push_distance)
    except SettingRefused as exc:   # run() has already brought the graph down
        print(f'jepa eval: {exc}; no report written', file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        # rclpy turns Ctrl-C into a context shutdown; run() has already brought the graph down.
        print('jepa eval: interrupted; no report written', file=sys.stderr)
        return 130
    print(success_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f'wrote {args.json}')
    if args.plot:
        print(f'wrote {plot_success_curves(result, args.plot)}')
    if 'aborted' in result['provenance']:
        print(f'jepa eval: aborted, {result["provenance"]["aborted"]}; the figures cover the episodes before it',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
