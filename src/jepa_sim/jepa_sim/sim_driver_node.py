"""sim_driver_node (node `sim_driver`): a simulated arm that offers only what a real arm's driver offers.

It stands in for a ros2_control driver and a camera driver (`jepa launch sim_driver arm:=PRESET`), so the `arm`
graph, `jepa collect --arm` and `jepa train --arm` meet an arm they were not written for exactly as they would meet a
physical one. The driver contract, all of it (relative names, so the node runs under a namespace):
  subscribes controller_topic   trajectory_msgs/JointTrajectory, followed with a ros2_control
                                JointTrajectoryController's semantics (jepa_sim.trajectory_command)
  publishes  joint_states       the arm and gripper joints (the preset's names) at joint_state_rate
             image_topic        sensor_msgs/Image of a fixed scene camera looking at the table, at camera_rate
             <image_topic's folder>/camera_info   its CameraInfo (a camera driver's pairing)
It runs on the wall clock like a physical arm (physics paced at real time, messages stamped with the node clock)
and publishes no /clock and nothing under sim/.

With `referee:=true`, and only then, it also serves the privileged interface an evaluation referee scores with,
under referee/ (REFEREE_NAMESPACE). It is not part of the driver contract: no physical arm has it, and no node of
the agent's graph subscribes to it or calls it.
  publishes  referee/ee_pose, referee/cube_pose   geometry_msgs/PoseStamped, the true poses (arm base frame), with
                                                  every camera frame
             referee/clock                        rosgraph_msgs/Clock: the driver's clock, with every joint state
                                                  (an eval referee's sim time)
  serves     referee/reset          jepa_interfaces/ResetSim: a seeded start state (arm, cube)
             referee/render_state   jepa_interfaces/RenderState: the camera's image of another state (goal images)

The physics runs in its own thread, which owns the simulator, as in sim_node; callbacks hand it their work.
"""

from geometry_msgs.msg import PoseStamped
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from jepa_common.node import run_node
from jepa_common.parameters import declare, declare_config
from jepa_common.qos import RELIABLE
from jepa_interfaces.srv import RenderState, ResetSim
from jepa_sim.camera import CameraConfig
from jepa_sim.sim_driver import REFEREE_NAMESPACE, SimDriverConfig, driver_arm
from jepa_sim.sim_ros import SimulatedArmNode, camera_info_msg
from jepa_sim.trajectory_command import CONTROLLER_TOPIC, apply_trajectory
from jepa_sim.trajectory_follower import TrajectoryFollower

IMAGE_TOPIC = 'camera/image_raw'


class SimDriverNode(SimulatedArmNode):
    service_log_prefix = 'referee: '
    # Real time, like the arm it stands in for.
    real_time_factor = 1.0

    def __init__(self, **node_options):
        super().__init__('sim_driver', **node_options)
        if self.get_parameter('use_sim_time').value:
            raise ValueError('sim_driver runs on the wall clock, like the physical arm it stands in for (it publishes '
                             'no /clock): use_sim_time must be false')
        config = declare_config(self, SimDriverConfig)
        camera = declare_config(self, CameraConfig, prefix=CameraConfig.PARAMETER_PREFIX)
        controller_topic = declare(self, 'controller_topic', CONTROLLER_TOPIC,
                                   'the trajectory_msgs/JointTrajectory topic the arm follows (the arm preset\'s '
                                   'controller topic)')
        image_topic = declare(self, 'image_topic', IMAGE_TOPIC, 'the camera\'s sensor_msgs/Image topic (the arm '
                              'preset\'s camera topic); its CameraInfo goes to camera_info beside it')
        self.base_frame = declare(self, 'frame_id', 'panda_link0', "the URDF's root link, the arm base frame: "
                                  'frame_id of the referee\'s poses')
        self.camera_frame = declare(self, 'camera_frame', 'camera_color_optical_frame',
                                    'frame_id of the camera\'s images')
        self.max_stamp_skew = config.max_stamp_skew
        self.sim = driver_arm(config, camera)
        # The driver's clock: the node clock (wall time) at the sim time the physics thread has reached.
        self._offset = self._wall() - self.sim.time
        self.follower = TrajectoryFollower(self.sim.joint_names, self.sim.lower, self.sim.upper)
        self.follower.hold(self.sim.joint_positions(), self.now())
        self.joint_state_every = self._steps_per(config.joint_state_rate, 'joint_state_rate')
        self.camera_every = self._steps_per(config.camera_rate, 'camera_rate')

        self.joint_state_pub = self.create_publisher(JointState, 'joint_states', RELIABLE)
        self.image_pub = self.create_publisher(Image, image_topic, RELIABLE)
        info_topic = self.image_pub.topic_name.rsplit('/', 1)[0] + '/camera_info'
        self.camera_info_pub = self.create_publisher(CameraInfo, info_topic, RELIABLE)
        commands = self.create_subscription(JointTrajectory, controller_topic, self._on_trajectory, RELIABLE)
        self.referee = config.referee
        if self.referee:
            ns = REFEREE_NAMESPACE
            self.clock_pub = self.create_publisher(ClockMsg, f'{ns}/clock', RELIABLE)
            self.ee_pose_pub = self.create_publisher(PoseStamped, f'{ns}/ee_pose', RELIABLE)
            self.cube_pose_pub = self.create_publisher(PoseStamped, f'{ns}/cube_pose', RELIABLE)
            self.create_service(ResetSim, f'{ns}/reset', self._on_reset)
            self.create_service(RenderState, f'{ns}/render_state', self._on_render_state)
        self.camera_info = camera_info_msg(self.sim.camera, self.camera_frame)

        self._start_physics()
        self.get_logger().info(
            f'simulated arm {list(self.sim.arm_joints)} + gripper {list(self.sim.finger_joints)} from '
            f'{self.sim.kinematics.urdf_path}, in real time on the wall clock; following {commands.topic_name}; '
            f'{self.joint_state_pub.topic_name} at {self.sim.physics_hz / self.joint_state_every:.1f} Hz, camera '
            f'{self.image_pub.topic_name} {camera.width}x{camera.height} at '
            f'{self.sim.physics_hz / self.camera_every:.1f} Hz; privileged {REFEREE_NAMESPACE}/ interface '
            f'{"ON (evaluation referee only)" if self.referee else "off"}')

    def _wall(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def now(self) -> float:
        """The driver's clock (s): its stamps, and the time trajectories run on."""
        return self.sim.time + self._offset

    def _schedule_dropped(self) -> None:
        # Fallen behind (a loaded machine): the clock jumps ahead with the wall clock, as a controller's would.
        self._offset = max(self._offset, self._wall() - self.sim.time)

    # -- the driver's command input
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        self._work.post(lambda: apply_trajectory(self.follower, msg, self.now(), self.sim.joint_positions(),
                                                 self.get_logger(), self.max_stamp_skew))

    # -- the referee's privileged interface (referee:=true only)


def main(args=None) -> int:
    return run_node(SimDriverNode, args)


if __name__ == '__main__':
    main()
