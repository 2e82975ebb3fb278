"""`jepa eval --task reach|push --episodes N --seed S --json OUT`: seeded episodes through the full graph.

The graph (`jepa launch sim`: simulator, safety gate and the six agent nodes, each its own process) runs in
real time on sim time. This process is only the referee: per episode it resets the simulator with the seed,
renders the goal image of a seeded goal state (/sim/render_state), hands the task to the configurator
(/configurator/set_task), and measures the outcome with privileged sim state (/sim/ee_pose, /sim/cube_pose).
In the same run and on the same seeds it drives the two baselines itself, through the same safety gate:
random actions, and a scripted oracle that sees the privileged state. The agent is told `idle` meanwhile.
"""
import argparse
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
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Pose, PoseStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from jepa_bringup.episodes import AGENT_CONDITIONS, BASELINES, DT, SETTLE, STEPS, SUCCESS_RADIUS, Goal, OraclePolicy, \
    RandomPolicy, final_distance, make_goal, sim_camera, summarize
from jepa_bringup.graph import parse_assignments
from jepa_common.conversions import image_to_rgb, joint_positions, joint_target_trajectory, stamp_to_sec
from jepa_common.kinematics import ArmKinematics
from jepa_interfaces.msg import LatentState, Plan
from jepa_interfaces.srv import RenderState, ResetSim, SetTask
from jepa_sim.panda_sim import CameraConfig


REFEREE_NICE = 10
PERCEPTION_KEYS = ('latency_p50_ms', 'latency_p95_ms', 'cpu_p50_ms', 'cpu_p95_ms')


def perception_summary(reports: list[dict[str, float]]) -> dict:
    """The medians of perception's rolling reports over a task (each covers its last 500 frames): per-frame
    latency (image received -> latent published, wall clock) and the node's own CPU time."""
    median = lambda key: float(np.median([r[key] for r in reports])) if reports else None  # noqa: E731
    return {'latency_ms': {'p50': median('latency_p50_ms'), 'p95': median('latency_p95_ms')},
            'cpu_ms': {'p50': median('cpu_p50_ms'), 'p95': median('cpu_p95_ms')}, 'reports': len(reports)}


class Referee(Node):
    """Talks to the running graph: resets, goals, tasks, and the privileged state it scores with."""

    def __init__(self, kinematics: ArmKinematics, context=None):
        super().__init__('eval_referee', context=context)
        self.kinematics = kinematics
        self.sim_time = 0.0
        self.ee = self.cube = self.q = None
        self.image: np.ndarray | None = None
        self.camera_info: CameraInfo | None = None
        self.plans: list[Plan] = []
        self.latest_plan: Plan | None = None
        self.create_subscription(Clock, '/clock', self._on_clock, 10)
        self.create_subscription(PoseStamped, '/sim/ee_pose', lambda m: setattr(self, 'ee', _position(m.pose)), 10)
        self.create_subscription(PoseStamped, '/sim/cube_pose', lambda m: setattr(self, 'cube', _position(m.pose)), 10)
        self.create_subscription(JointState, '/joint_states', self._on_joint_state, 10)
        self.create_subscription(Image, '/camera/image_raw', self._on_image, 10)
        self.create_subscription(CameraInfo, '/camera/camera_info', lambda m: setattr(self, 'camera_info', m), 1)
        self.create_subscription(Plan, '/jepa/plan', self._on_plan, 10)
        # Readiness of the agent: each node's first sign of life once it spins (models loaded).
        self.alive: set[str] = set()
        # Perception's latency reports (its rolling p50 / p95, wall and CPU time), for the report.
        self.perception_reports: list[dict[str, float]] = []
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.create_subscription(LatentState, '/jepa/latent', lambda m: self.alive.add('latent'), 1)
        self.command_pub = self.create_publisher(JointTrajectory, '/jepa/joint_trajectory', 10)
        self.reset_client = self.create_client(ResetSim, '/sim/reset')
        self.render_client = self.create_client(RenderState, '/sim/render_state')
        self.task_client = self.create_client(SetTask, '/configurator/set_task')
        self.executor_ = SingleThreadedExecutor(context=context)
        self.executor_.add_node(self)

    def close(self) -> None:
        # Its executor is not spinning (spin_until drives it); shut it down before the node goes, so that the
        # context's shutdown later finds nothing of it to wait for.
        self.executor_.shutdown(timeout_sec=5.0)
        self.destroy_node()

    def _on_clock(self, msg: Clock) -> None:
        self.sim_time = stamp_to_sec(msg.clock)

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self.q = joint_positions(msg, self.kinematics.arm_joints)
        except ValueError:
            pass

    def _on_image(self, msg: Image) -> None:
        self.image = image_to_rgb(msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.alive.add(status.name.split(':')[0])
            if status.name.startswith('perception'):
                values = {kv.key: kv.value for kv in status.values}
                try:
                    report = {key: float(values[key]) for key in PERCEPTION_KEYS}
                except (KeyError, ValueError):
                    continue  # a perception node that does not report these
                if all(np.isfinite(v) for v in report.values()):  # nan: no frames yet
                    self.perception_reports.append(report)

    def _on_plan(self, msg: Plan) -> None:
        self.plans.append(msg)
        self.latest_plan = msg

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
            raise RuntimeError(f'/sim/reset failed: {response.message}')
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
            raise RuntimeError(f'/sim/render_state failed: {response.message}')
        return response.image

    def command(self, action: np.ndarray) -> None:
        q_target, fingers = self.kinematics.action_to_joint_target(self.q, action)
        self.command_pub.publish(joint_target_trajectory(
            [*self.kinematics.arm_joints, *self.kinematics.finger_joints], np.r_[q_target, fingers], DT))

    def hold(self) -> None:
        self.command_pub.publish(JointTrajectory(
            joint_names=[*self.kinematics.arm_joints, *self.kinematics.finger_joints]))


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
    goal = make_goal(task, seed, referee.kinematics, referee.q, referee.cube)
    goal_image = referee.render_goal(goal)
    policy = None
    if condition in AGENT_CONDITIONS:
        referee.set_task(task, goal_image, condition)
    else:
        policy = (OraclePolicy(goal, referee.kinematics.max_step) if condition == 'oracle'
                  else RandomPolicy(seed, referee.kinematics.max_step))
    start_plans = len(referee.plans)
    start_distance = final_distance(goal, referee.ee, referee.cube)
    for step in range(STEPS[task]):
        if policy is not None:
            referee.command(policy.act(referee.ee, referee.cube))
        referee.sleep_sim(DT)
        if video is not None and referee.image is not None:
            video.add(referee.image, referee.camera_info, referee.latest_plan,
                      f'{task} {condition} seed {seed} t={step * DT:.1f}s')
    referee.set_task('idle')
    referee.hold()
    distance = final_distance(goal, referee.ee, referee.cube)
    plans = referee.plans[start_plans:]
    return {'seed': seed, 'success': bool(distance < SUCCESS_RADIUS[task]), 'final_distance_m': distance,
            'start_distance_m': start_distance, 'plans': len(plans),
            'plan_ms': [p.plan_time_ms for p in plans],
            'e2e_ms': [(stamp_to_sec(p.header.stamp) - stamp_to_sec(p.source_stamp)) * 1e3 for p in plans]}


def evaluate(referee: Referee, task: str, episodes: int, seed: int, conditions: list[str],
             video_path: Path | None, camera: CameraConfig, log=print) -> dict:
    per_condition = {}
    referee.perception_reports.clear()
    for condition in conditions:
        results, plan_ms, e2e_ms = [], [], []
        for i in range(episodes):
            video = VideoRecorder(video_path, camera.eye, camera.target) \
                if video_path is not None and i == 0 and condition == conditions[0] else None
            result = run_episode(referee, condition, task, seed + i, video)
            plan_ms += result.pop('plan_ms')
            e2e_ms += result.pop('e2e_ms')
            results.append(result)
            log(f'  {task:5s} {condition:6s} seed {seed + i:4d}: distance {result["start_distance_m"]:.3f} -> '
                f'{result["final_distance_m"]:.3f} m  {"success" if result["success"] else "fail"}')
            if video is not None:
                written = video.write()
                log(f'  wrote {written}')
        per_condition[condition] = summarize(results, plan_ms, e2e_ms)
    report = {'task': task, 'seed': seed, 'success_radius_m': SUCCESS_RADIUS[task], 'episode_steps': STEPS[task]}
    agent = [c for c in conditions if c in AGENT_CONDITIONS]
    if agent:
        report.update(per_condition[agent[0]])
        report['mode'] = agent[0]
    for condition in agent[1:]:
        report[condition] = per_condition[condition]
    report['baselines'] = {c: per_condition[c] for c in conditions if c in BASELINES}
    report['perception'] = perception_summary(referee.perception_reports)
    return report


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


def graph_camera(launch_args: list[str]) -> CameraConfig:
    """The camera the graph's sim node will use with these launch arguments (its `sim_camera` params file on
    top of config/sim.yaml); ValueError naming what is wrong."""
    return sim_camera(parse_assignments(launch_args).get('sim_camera'))


def run(tasks: list[str], episodes: int, seed: int, conditions: list[str], launch_args: list[str],
        video_path: Path | None, log_dir: Path, camera: CameraConfig, log=print) -> dict:
    """Bring up the graph in its own ROS domain, evaluate every task, bring it down. `camera` is the graph's
    simulated camera (sim_camera), for the video overlay."""
    graph_log = log_dir / 'graph.log'
    graph = start_graph('sim', ['task:=idle', *launch_args], graph_log)
    log(f'started the graph (ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}, log {graph_log})')
    # The referee follows /clock and /joint_states (120 Hz each): on a small machine that is CPU the graph's
    # command path would otherwise wait for. It yields (after starting the graph, which must not inherit this);
    # it acts on sim time, so a referee a few ms late measures the same episodes.
    os.nice(REFEREE_NICE)
    # Not this process's command line: its graph arguments (name:=value) are the graph's, not ROS remaps.
    rclpy.init(args=[])
    referee = Referee(ArmKinematics())
    reports = {}
    try:
        referee.wait_for_graph(120.0)
        for task in tasks:
            task_video = None if video_path is None else video_path.with_name(f'{video_path.stem}_{task}{video_path.suffix}')
            reports[task] = evaluate(referee, task, episodes, seed, conditions, task_video, camera, log)
            if graph.poll() is not None:
                raise RuntimeError(f'the graph stopped (exit {graph.returncode}); see {graph_log}')
    finally:
        referee.close()
        rclpy.try_shutdown()
        code = stop_graph(graph)
        log(f'graph stopped (exit {code})')
    return reports


def success_table(reports: dict) -> str:
    rows = [f'{"task":6s} {"condition":10s} {"success":>8s} {"final dist (m)":>15s} {"plan p50/p95 (ms)":>18s} '
            f'{"e2e p50/p95 (ms)":>17s}']

    def fmt(pair, digits=0):
        return '-' if pair['p50'] is None else f'{pair["p50"]:.{digits}f}/{pair["p95"]:.{digits}f}'

    for task, report in reports.items():
        conditions = {}
        if 'mode' in report:
            conditions[report['mode']] = report
        conditions.update({c: report[c] for c in AGENT_CONDITIONS if c in report})
        conditions.update(report['baselines'])
        for name, r in conditions.items():
            rows.append(f'{task:6s} {name:10s} {r["success_rate"] * 100:7.0f}% {r["final_distance_m"]["mean"]:15.3f} '
                        f'{fmt(r["plan_latency_ms"]):>18s} {fmt(r["e2e_latency_ms"]):>17s}')
        perception = report.get('perception') or {}
        if perception.get('reports'):
            rows.append(f'{task:6s} perception per frame p50/p95: {fmt(perception["latency_ms"], 1)} ms '
                        f'(its own CPU time {fmt(perception["cpu_ms"], 1)} ms)')
    return '\n'.join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='jepa eval', description=__doc__.split('\n')[0])
    parser.add_argument('--task', choices=['reach', 'push'], action='append',
                        help='task to evaluate (repeat for both; default reach)')
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', type=Path, help='write the report here')
    parser.add_argument('--conditions', default='mode2,mode1,random,oracle',
                        help='comma-separated subset of mode2, mode1, random, oracle')
    parser.add_argument('--video', type=Path, help='MP4 of the first episode with the planned path drawn')
    parser.add_argument('--log-dir', type=Path, default=Path('runs/eval'))
    parser.add_argument('launch_args', nargs='*', help='graph arguments name:=value (device:=cuda, checkpoint:=...)')
    args = parser.parse_args(argv)
    conditions = [c for c in args.conditions.split(',') if c]
    unknown = set(conditions) - set(AGENT_CONDITIONS) - set(BASELINES)
    if unknown or not conditions:
        parser.error(f'unknown conditions {sorted(unknown)} (mode2, mode1, random, oracle)')
    if args.episodes < 1:
        parser.error('--episodes must be >= 1')
    try:
        camera = graph_camera(args.launch_args)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        reports = run(args.task or ['reach'], args.episodes, args.seed, conditions, args.launch_args, args.video,
                      args.log_dir, camera)
    except (KeyboardInterrupt, ExternalShutdownException):
        # rclpy turns Ctrl-C into a context shutdown; run() has already brought the graph down.
        print('jepa eval: interrupted; no report written', file=sys.stderr)
        return 130
    print(success_table(reports))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = reports[next(iter(reports))] if len(reports) == 1 else reports
        args.json.write_text(json.dumps(out, indent=2))
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
