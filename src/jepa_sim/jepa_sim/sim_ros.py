"""ROS helpers the simulated arms' nodes share (sim_node, sim_driver_node): pose and camera messages, and the
queue through which executor callbacks hand work to the physics thread that owns the simulator."""
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseStamped
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, JointState

from jepa_common.conversions import rgb_to_image, sec_to_stamp
from jepa_sim.camera import CameraConfig

# How far a simulation may fall behind its real-time schedule before it stops trying to catch up.
MAX_LAG_S = 0.25
SERVICE_TIMEOUT_S = 10.0


def pose_msg(pose: np.ndarray) -> Pose:
    """[x, y, z, qx, qy, qz, qw] -> geometry_msgs/Pose."""
    msg = Pose()
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in pose[:3])
    o = msg.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in pose[3:7])
    return msg


def pose_array(msg: Pose) -> np.ndarray:
    q = msg.orientation
    quat = [q.x, q.y, q.z, q.w] if any((q.x, q.y, q.z, q.w)) else [0.0, 0.0, 0.0, 1.0]
    return np.array([msg.position.x, msg.position.y, msg.position.z, *quat])


def camera_info_msg(camera: CameraConfig, frame_id: str) -> CameraInfo:
    """The CameraInfo of the simulated pinhole camera (no distortion), unstamped."""
    k = camera.intrinsics()
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.width, info.height = camera.width, camera.height
    info.distortion_model = 'plumb_bob'
    info.d = [0.0] * 5
    info.k = k.ravel().tolist()
    info.r = np.eye(3).ravel().tolist()
    info.p = np.c_[k, np.zeros(3)].ravel().tolist()
    return info


def requested_positions(joint_names: Sequence[str], current: np.ndarray, names: list[str],
                        positions: list[float]) -> np.ndarray:
    """`current` (joint_names order) with the requested joints' positions substituted; ValueError naming what is
    wrong with the request."""
    if len(names) != len(positions):
        raise ValueError(f'{len(names)} joint names but {len(positions)} joint positions')
    index = {n: i for i, n in enumerate(joint_names)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ValueError(f'unknown joints {unknown} (known: {list(joint_names)})')
    q = np.array(current, dtype=float)
    for name, value in zip(names, positions):
        q[index[name]] = value
    if not np.all(np.isfinite(q)):
        raise ValueError('joint positions contain NaN or inf')
    return q


class PhysicsWork:
    """Work for the physics thread: callbacks `post` it (commands) or `call` it and wait for the result (services);
    the physics thread runs what is pending between its steps (`run_pending`), so a command takes effect at the
    next physics step and the executor's per-callback overhead is not paid once per step."""

    def __init__(self):
        self._queue = queue.SimpleQueue()

    def post(self, work) -> Future:
        future = Future()
        self._queue.put((work, future))
        return future

    def call(self, work, timeout: float = SERVICE_TIMEOUT_S):
        """Run work() between physics steps and return its result (from an executor callback)."""
        return self.post(work).result(timeout=timeout)

    def run_pending(self) -> None:
        while True:
            try:
                work, future = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(work())
            except Exception as error:  # noqa: BLE001 - handed back to the waiting callback
                future.set_exception(error)


def serve_reset(work, sim, follower, now: Callable[[], float], request, response):
    """A ResetSim request: the simulator reset in its physics thread (work: PhysicsWork), the follower holding the
    arm where it now is (at time now()); -> the filled response."""
    def reset():
        q, cube = sim.reset(int(request.seed), request.randomize_arm, request.randomize_cube)
        follower.hold(q, now())
        return q, cube
    q, cube = work.call(reset)
    response.success, response.message = True, f'reset with seed {request.seed}'
    response.joint_positions = q.tolist()
    response.cube_pose = pose_msg(cube)
    return response


def serve_render_state(work, sim, now: Callable[[], float], frame_id: str, request, response) -> str:
    """A RenderState request: the scene rendered with the requested joint positions (and cube pose) in the
    physics thread, the simulator left as it was; fills the response; -> '' or what was wrong with the request."""
    try:
        q = requested_positions(sim.joint_names, work.call(sim.joint_positions), list(request.joint_names),
                                list(request.joint_positions))
        cube = pose_array(request.cube_pose) if request.set_cube else None
        n_arm = len(sim.arm_joints)
        image, ee = work.call(lambda: sim.render_state(q[:n_arm], cube, fingers=q[n_arm:]))
    except ValueError as error:
        response.success, response.message = False, str(error)
        return str(error)
    response.success, response.message = True, 'rendered'
    response.image = rgb_to_image(image, sec_to_stamp(now()), frame_id)
    response.ee_position = Point(x=float(ee[0]), y=float(ee[1]), z=float(ee[2]))
    return ''


class SimulatedArmNode(Node):
    """What the simulated arms' nodes share: stepping the simulator in its physics thread (following the
    trajectory on the node's `now()`), and publishing joint states every `joint_state_every` physics steps and
    the camera every `camera_every`, all stamped with `now()`. A subclass sets sim, follower, the publishers
    (clock_pub and the pose publishers may be None: not offered), camera_info, camera_frame and base_frame."""
    clock_pub = ee_pose_pub = cube_pose_pub = None
    real_time_factor = 1.0    # 0: as fast as possible
    service_log_prefix = ''   # names whose services the log lines are about (the driver's: 'referee: ')

    def now(self) -> float:
        raise NotImplementedError

    def _steps_per(self, rate: float, name: str) -> int:
        """Publishing on whole physics steps keeps stamps exact: the rates become physics_rate / n."""
        steps = max(1, int(round(self.sim.physics_hz / rate)))
        if abs(self.sim.physics_hz / steps - rate) > 1e-6:
            self.get_logger().warning(f'{name} {rate} Hz is not physics_rate / n; publishing at '
                                      f'{self.sim.physics_hz / steps:.2f} Hz')
        return steps

    def _start_physics(self) -> None:
        """Publish the first state, then hand the simulator to the physics thread (the subclass has set it up)."""
        self._joint_state = JointState(name=list(self.sim.joint_names))
        self._sent = None
        self._work = PhysicsWork()
        self._stop = threading.Event()
        self._publish_state(camera=True)
        self._thread = threading.Thread(target=self._physics_loop, name='physics', daemon=True)
        self._thread.start()

    def _schedule_dropped(self) -> None:
        """Called in the physics thread when the simulation fell behind its schedule and gave the lag up."""

    def _physics_loop(self) -> None:
        # Paced on the monotonic wall clock by real_time_factor; work the executor callbacks posted runs between
        # chunks of steps.
        chunk = self.joint_state_every
        wall_start, sim_start = time.monotonic(), self.sim.time
        try:
            while not self._stop.is_set():
                self._work.run_pending()
                self._step(chunk)
                if self.real_time_factor > 0:
                    due = wall_start + (self.sim.time - sim_start) / self.real_time_factor
                    lag = (time.monotonic() - due) * self.real_time_factor
                    if lag > MAX_LAG_S:
                        self.get_logger().warning(
                            f'the simulation runs slower than {self.real_time_factor}x real time; dropping '
                            f'{lag:.2f} s of schedule', throttle_duration_sec=10.0)
                        wall_start, sim_start = time.monotonic(), self.sim.time
                        self._schedule_dropped()
                    else:
                        self._stop.wait(max(0.0, due - time.monotonic()))
        except Exception as error:  # noqa: BLE001 - a dead physics thread must not go unnoticed
            # At shutdown the context goes away under a publish; that is not a failure.
            if not self._stop.is_set() and self.context.ok():
                # A simulator without physics must not linger: stop the node so the launcher sees it.
                self.get_logger().fatal(f'physics thread stopped: {error!r}; shutting the node down')
                self.context.try_shutdown()

    def _step(self, steps: int) -> None:
        for _ in range(steps):
            target, velocity = self.follower.sample(self.now())
            # While holding, the motors keep their targets: skip re-sending the same ones every step.
            if velocity.any() or not np.array_equal(target, self._sent):
                self._sent = self.sim.send_joint_targets(target, velocity)
            self.sim.step()
            if self.sim.steps % self.joint_state_every == 0:
                self._publish_state(camera=self.sim.steps % self.camera_every == 0)

    def _publish_state(self, camera: bool) -> None:
        stamp = sec_to_stamp(self.now())
        if self.clock_pub is not None:
            self.clock_pub.publish(ClockMsg(clock=stamp))
        states = self.sim.joint_states()
        msg = self._joint_state
        msg.header.stamp = stamp
        msg.position = states.position.tolist()
        msg.velocity = states.velocity.tolist()
        msg.effort = states.effort.tolist()
        self.joint_state_pub.publish(msg)
        if not camera:
            return
        self.image_pub.publish(rgb_to_image(self.sim.render(), stamp, self.camera_frame))
        self.camera_info.header.stamp = stamp
        self.camera_info_pub.publish(self.camera_info)
        if self.ee_pose_pub is not None:
            for publisher, pose in ((self.ee_pose_pub, self.sim.ee_pose()), (self.cube_pose_pub, self.sim.cube_pose())):
                out = PoseStamped(pose=pose_msg(pose))
                out.header.stamp, out.header.frame_id = stamp, self.base_frame
                publisher.publish(out)

    def _on_reset(self, request, response):
        response = serve_reset(self._work, self.sim, self.follower, self.now, request, response)
        self.get_logger().info(f'{self.service_log_prefix}{response.message} (randomize arm: '
                               f'{request.randomize_arm}, cube: {request.randomize_cube})')
        return response

    def _on_render_state(self, request, response):
        error = serve_render_state(self._work, self.sim, self.now, self.camera_frame, request, response)
        if error:
            self.get_logger().error(f'{self.service_log_prefix}render_state request rejected: {error}')
        return response

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.sim.close()
