"""sim_node (node `sim`): the PyBullet Panda behind a ros2_control-like interface, and the /clock source.

Publishes joint_states, camera/image_raw, camera/camera_info, sim/ee_pose and sim/cube_pose (privileged
state, for datasets and the referee), and /clock; follows trajectory_msgs/JointTrajectory on controller_topic
(arm_controller/joint_trajectory); serves sim/reset and sim/render_state. Names are relative, so the node runs
under a namespace; /clock stays global (a namespaced graph remaps it, see jepa_bringup.graph).

Its parameters are read-only (the world is built once, at start) except the perturb_* ones
(jepa_sim.perturbation.Perturbation: a moved camera, a sluggish arm, a heavier or recoloured cube), which apply at
once, between two physics steps; `jepa eval --perturb NAME` sets them.

The physics runs in its own thread, which owns the simulator: it steps, publishes on whole physics steps, and
paces itself by real_time_factor (0 = as fast as possible). Subscription and service callbacks (executor
thread) hand their work to it through a queue, so a command takes effect at the next physics step and the
executor's per-callback overhead is not paid once per step. Everything is stamped with simulated time,
which /clock publishes.
"""

from geometry_msgs.msg import PoseStamped
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from jepa_common.node import run_node
from jepa_common.parameters import apply_changes, declare, declare_config
from jepa_common.qos import RELIABLE
from jepa_interfaces.srv import RenderState, ResetSim
from jepa_sim.camera import CameraConfig
from jepa_sim.panda_sim import PandaSim, SimConfig
from jepa_sim.perturbation import Perturbation, apply_perturbation
from jepa_sim.sim_ros import SimulatedArmNode, camera_info_msg
from jepa_sim.trajectory_command import CONTROLLER_TOPIC, apply_trajectory
from jepa_sim.trajectory_follower import TrajectoryFollower

BASE_FRAME = 'panda_link0'
CAMERA_FRAME = 'camera_optical_frame'


class SimNode(SimulatedArmNode):
    def __init__(self, **node_options):
        super().__init__('sim', **node_options)
        self.camera_frame, self.base_frame = CAMERA_FRAME, BASE_FRAME
        config = declare_config(self, SimConfig)
        camera = declare_config(self, CameraConfig, prefix=CameraConfig.PARAMETER_PREFIX)
        self.perturbation = declare_config(self, Perturbation, prefix=Perturbation.PARAMETER_PREFIX)
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
        apply_perturbation(self.sim, self.follower, self.perturbation)
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
        self.camera_info = camera_info_msg(self.sim.camera, CAMERA_FRAME)

        self._start_physics()
        self.add_on_set_parameters_callback(self.on_parameters)
        pace = 'as fast as possible' if self.real_time_factor <= 0 else f'{self.real_time_factor}x real time'
        self.get_logger().info(
            f'simulating the Panda at {config.physics_rate:.0f} Hz, {pace}; {self.joint_state_pub.topic_name} at '
            f'{config.physics_rate / self.joint_state_every:.1f} Hz, camera {camera.width}x{camera.height} at '
            f'{config.physics_rate / self.camera_every:.1f} Hz; following {commands.topic_name}')

    def now(self) -> float:
        """Sim time: this node is the clock of its world."""
        return self.sim.time

    # -- the perturbations, the live parameters
    def on_parameters(self, parameters):
        """Only the perturb_* parameters are live (rclpy refuses the read-only ones before this is called); a
        change is applied between two physics steps before the answer."""
        new, answer = apply_changes(self.perturbation, parameters, prefix=Perturbation.PARAMETER_PREFIX)
        if answer.successful and new != self.perturbation:
            self._work.call(lambda: apply_perturbation(self.sim, self.follower, new))  # in the physics thread
            self.perturbation = new
            self.get_logger().info(f'world perturbation now {new}')
        return answer

    # -- commands and services
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        self._work.post(lambda: apply_trajectory(self.follower, msg, self.sim.time, self.sim.joint_positions(),
                                                 self.get_logger(), self.max_stamp_skew))


def main(args=None) -> int:
    return run_node(SimNode, args)


if __name__ == '__main__':
    main()
