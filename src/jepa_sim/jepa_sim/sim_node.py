"""sim_node (node `sim`): the PyBullet Panda behind a ros2_control-like interface, and the /clock source.

Publishes joint_states, camera/image_raw, camera/camera_info, sim/ee_pose and sim/cube_pose (privileged
state, for datasets and the referee), and /clock; follows trajectory_msgs/JointTrajectory on controller_topic
(arm_controller/joint_trajectory); serves sim/reset and sim/render_state. Names are relative, so the node runs
under a namespace; /clock stays global (a namespaced graph remaps it, see jepa_bringup.graph).

The physics runs in its own thread, which owns the simulator: it steps, publishes on whole physics steps, and
paces itself by real_time_factor (0 = as fast as possible). Subscription and service callbacks (executor
thread) hand their work to it through a queue, so a command takes effect at the next physics step and the
executor's per-callback overhead is not paid once per step. Everything is stamped with simulated time,
which /clock publishes.
"""
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np
from geometry_msgs.msg import Point, Pose, PoseStamped
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from jepa_common.conversions import rgb_to_image, sec_to_stamp
from jepa_common.node import run_node
from jepa_common.parameters import declare, declare_config
from jepa_common.qos import RELIABLE
from jepa_interfaces.srv import RenderState, ResetSim
from jepa_sim.camera import CameraConfig
from jepa_sim.panda_sim import PandaSim, SimConfig
from jepa_sim.trajectory_command import CONTROLLER_TOPIC, apply_trajectory
from jepa_sim.trajectory_follower import TrajectoryFollower

BASE_FRAME = 'panda_link0'
CAMERA_FRAME = 'camera_optical_frame'
# How far the simulation may fall behind its real-time schedule before it stops trying to catch up.
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


class SimNode(Node):
    def __init__(self, **node_options):
        super().__init__('sim', **node_options)
        config = declare_config(self, SimConfig)
        camera = declare_config(self, CameraConfig, prefix=CameraConfig.PARAMETER_PREFIX)
        controller_topic = declare(self, 'controller_topic', CONTROLLER_TOPIC,
                                   'the trajectory_msgs/JointTrajectory topic the arm follows (the safety gate '
                                   'publishes there)')
        self.real_time_factor = config.real_time_factor
        self.max_stamp_skew = config.max_stamp_skew
        self.sim = PandaSim(gui=config.gui, camera=camera, physics_hz=config.physics_rate,
                            fast_visuals=config.fast_visuals)
        self.sim.reset(config.seed, randomize_arm=config.randomize_arm, randomize_cube=config.randomize_cube)
        self.follower = TrajectoryFollower(self.sim.joint_names, self.sim.lower, self.sim.upper,
                                           self.sim.joint_positions())
        # Publishing on whole physics steps keeps stamps exact: the rates become physics_rate / n.
        self.joint_state_every = self._steps_per(config.joint_state_rate, 'joint_state_rate')
        self.camera_every = self._steps_per(config.camera_rate, 'camera_rate')

        self.clock_pub = self.create_publisher(ClockMsg, '/clock', RELIABLE)
        self.joint_state_pub = self.create_publisher(JointState, 'joint_states', RELIABLE)
        self.image_pub = self.create_publisher(Image, 'camera/image_raw', RELIABLE)
        self.camera_info_pub = self.create_publisher(CameraInfo, 'camera/camera_info', RELIABLE)
        self.ee_pose_pub = self.create_publisher(PoseStamped, 'sim/ee_pose', RELIABLE)
        self.cube_pose_pub = self.create_publisher(PoseStamped, 'sim/cube_pose', RELIABLE)
        commands = self.create_subscription(JointTrajectory, controller_topic, self._on_trajectory, RELIABLE)
        self.create_service(ResetSim, 'sim/reset', self._on_reset)
        self.create_service(RenderState, 'sim/render_state', self._on_render_state)
        self.camera_info = self._make_camera_info()

        self._joint_state = JointState(name=list(self.sim.joint_names))
        self._sent = None
        self._work = queue.SimpleQueue()
        self._stop = threading.Event()
        self._publish_state(camera=True)
        self._thread = threading.Thread(target=self._physics_loop, name='physics', daemon=True)
        self._thread.start()
        pace = 'as fast as possible' if self.real_time_factor <= 0 else f'{self.real_time_factor}x real time'
        self.get_logger().info(
            f'simulating the Panda at {config.physics_rate:.0f} Hz, {pace}; {self.joint_state_pub.topic_name} at '
            f'{config.physics_rate / self.joint_state_every:.1f} Hz, camera {camera.width}x{camera.height} at '
            f'{config.physics_rate / self.camera_every:.1f} Hz; following {commands.topic_name}')

    def _steps_per(self, rate: float, name: str) -> int:
        steps = max(1, int(round(self.sim.physics_hz / rate)))
        if abs(self.sim.physics_hz / steps - rate) > 1e-6:
            self.get_logger().warning(f'{name} {rate} Hz is not physics_rate / n; publishing at '
                                      f'{self.sim.physics_hz / steps:.2f} Hz')
        return steps

    def _make_camera_info(self) -> CameraInfo:
        cam = self.sim.camera
        k = cam.intrinsics()
        info = CameraInfo()
        info.header.frame_id = CAMERA_FRAME
        info.width, info.height = cam.width, cam.height
        info.distortion_model = 'plumb_bob'
        info.d = [0.0] * 5
        info.k = k.ravel().tolist()
        info.r = np.eye(3).ravel().tolist()
        info.p = np.c_[k, np.zeros(3)].ravel().tolist()
        return info

    # -- the physics thread
    def _physics_loop(self) -> None:
        # Paced on the monotonic wall clock: this node is the source of sim time, not its follower.
        chunk = self.joint_state_every
        wall_start, sim_start = time.monotonic(), self.sim.time
        try:
            while not self._stop.is_set():
                self._run_queued_work()
                self._step(chunk)
                if self.real_time_factor > 0:
                    due = wall_start + (self.sim.time - sim_start) / self.real_time_factor
                    lag = (time.monotonic() - due) * self.real_time_factor
                    if lag > MAX_LAG_S:
                        self.get_logger().warning(
                            f'the simulation runs slower than real_time_factor {self.real_time_factor}; '
                            f'dropping {lag:.2f} s of schedule', throttle_duration_sec=10.0)
                        wall_start, sim_start = time.monotonic(), self.sim.time
                    else:
                        self._stop.wait(max(0.0, due - time.monotonic()))
        except Exception as error:  # noqa: BLE001 - a dead physics thread must not go unnoticed
            # At shutdown the context goes away under a publish; that is not a failure.
            if not self._stop.is_set() and self.context.ok():
                # A simulator without physics must not linger: stop the node so the launcher sees it.
                self.get_logger().fatal(f'physics thread stopped: {error!r}; shutting the node down')
                self.context.try_shutdown()

    def _run_queued_work(self) -> None:
        while True:
            try:
                work, future = self._work.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(work())
            except Exception as error:  # noqa: BLE001 - handed back to the waiting callback
                future.set_exception(error)

    def _in_physics_thread(self, work):
        """Run work() between physics steps and return its result (from an executor callback)."""
        future = Future()
        self._work.put((work, future))
        return future.result(timeout=SERVICE_TIMEOUT_S)

    def _step(self, steps: int) -> None:
        for _ in range(steps):
            target, velocity = self.follower.sample(self.sim.time)
            # While holding, the motors keep their targets: skip re-sending the same ones every step.
            if velocity.any() or not np.array_equal(target, self._sent):
                self._sent = self.sim.send_joint_targets(target, velocity)
            self.sim.step()
            if self.sim.steps % self.joint_state_every == 0:
                self._publish_state(camera=self.sim.steps % self.camera_every == 0)

    def _publish_state(self, camera: bool) -> None:
        stamp = sec_to_stamp(self.sim.time)
        self.clock_pub.publish(ClockMsg(clock=stamp))
        states = self.sim.joint_states()
        msg = self._joint_state
        msg.header.stamp = stamp
        msg.position = states.position.tolist()
        msg.velocity = states.velocity.tolist()
        msg.effort = states.effort.tolist()
        self.joint_state_pub.publish(msg)
        if camera:
            self.image_pub.publish(rgb_to_image(self.sim.render(), stamp, CAMERA_FRAME))
            self.camera_info.header.stamp = stamp
            self.camera_info_pub.publish(self.camera_info)
            for publisher, pose in ((self.ee_pose_pub, self.sim.ee_pose()), (self.cube_pose_pub, self.sim.cube_pose())):
                out = PoseStamped(pose=pose_msg(pose))
                out.header.stamp, out.header.frame_id = stamp, BASE_FRAME
                publisher.publish(out)

    # -- commands and services
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        self._work.put((lambda: apply_trajectory(self.follower, msg, self.sim.time, self.sim.joint_positions(),
                                                 self.get_logger(), self.max_stamp_skew), Future()))

    def _on_reset(self, request: ResetSim.Request, response: ResetSim.Response) -> ResetSim.Response:
        def reset():
            q, cube = self.sim.reset(int(request.seed), request.randomize_arm, request.randomize_cube)
            self.follower.hold(q, self.sim.time)
            return q, cube
        q, cube = self._in_physics_thread(reset)
        response.success, response.message = True, f'reset with seed {request.seed}'
        response.joint_positions = q.tolist()
        response.cube_pose = pose_msg(cube)
        self.get_logger().info(f'{response.message} (randomize arm: {request.randomize_arm}, '
                               f'cube: {request.randomize_cube})')
        return response

    def _on_render_state(self, request: RenderState.Request, response: RenderState.Response) -> RenderState.Response:
        try:
            q = self._requested_positions(list(request.joint_names), list(request.joint_positions))
            cube = pose_array(request.cube_pose) if request.set_cube else None
            n_arm = len(self.sim.arm_joints)
            image, ee = self._in_physics_thread(lambda: self.sim.render_state(q[:n_arm], cube, fingers=q[n_arm:]))
        except ValueError as error:
            self.get_logger().error(f'render_state request rejected: {error}')
            response.success, response.message = False, str(error)
            return response
        response.success, response.message = True, 'rendered'
        response.image = rgb_to_image(image, sec_to_stamp(self.sim.time), CAMERA_FRAME)
        response.ee_position = Point(x=float(ee[0]), y=float(ee[1]), z=float(ee[2]))
        return response

    def _requested_positions(self, names: list[str], positions: list[float]) -> np.ndarray:
        """Current joint positions with the requested ones substituted."""
        if len(names) != len(positions):
            raise ValueError(f'{len(names)} joint names but {len(positions)} joint positions')
        index = {n: i for i, n in enumerate(self.sim.joint_names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ValueError(f'unknown joints {unknown} (known: {list(self.sim.joint_names)})')
        q = self._in_physics_thread(self.sim.joint_positions)
        for name, value in zip(names, positions):
            q[index[name]] = value
        if not np.all(np.isfinite(q)):
            raise ValueError('joint positions contain NaN or inf')
        return q

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.sim.close()


def main(args=None) -> int:
    return run_node(SimNode, args)


if __name__ == '__main__':
    main()
