"""fake_arm_node (node `fake_arm`): ros2_control's mock hardware behind a JointTrajectoryController, no physics.

It follows trajectories on the controller topic within the joint position and velocity limits, with a
command latency and a first-order tracking lag, and publishes /joint_states. Joint names and limits come
from parameters, or from the URDF (ArmKinematics) when `urdf_path` names one. It runs on the node clock, so
`use_sim_time` works as for any node.
"""
import collections
import math

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from jepa_common.conversions import sec_to_stamp
from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_EE_FRAME, PANDA_FINGER_JOINTS, PANDA_HOME, ArmKinematics
from jepa_common.node import run_node
from jepa_sim.fake_arm import FakeArm
from jepa_sim.trajectory_command import apply_trajectory
from jepa_sim.trajectory_follower import TrajectoryFollower

# Limits used when neither a URDF nor per-joint limit parameters describe the arm.
FALLBACK_ARM_LIMITS = (-math.pi, math.pi, 1.0)
FALLBACK_FINGER_LIMITS = (0.0, 0.04, 0.1)


class FakeArmNode(Node):
    def __init__(self):
        super().__init__('fake_arm')
        param = self.declare_parameter
        arm_joints = list(param('arm_joints', list(PANDA_ARM_JOINTS)).value)
        finger_joints = list(param('finger_joints', list(PANDA_FINGER_JOINTS)).value)
        self.joint_names = arm_joints + finger_joints
        lower, upper, velocity = self._limits(arm_joints, finger_joints, param('urdf_path', '').value,
                                              param('ee_frame', PANDA_EE_FRAME).value,
                                              *(param(name, Parameter.Type.DOUBLE_ARRAY).value or []
                                                for name in ('joint_lower', 'joint_upper', 'joint_velocity')))
        home = np.array(param('home', list(PANDA_HOME)).value, dtype=float)
        if home.size != len(arm_joints):
            raise ValueError(f'home has {home.size} values for {len(arm_joints)} arm joints {arm_joints}')
        initial = np.clip(np.r_[home, upper[len(arm_joints):]], lower, upper)
        self.arm = FakeArm(initial, velocity, param('tracking_time_constant', 0.05).value)
        self.follower = TrajectoryFollower(self.joint_names, lower, upper, initial)
        self.latency = float(param('command_latency', 0.02).value)
        self.max_stamp_skew = float(param('max_stamp_skew', 5.0).value)
        self._pending = collections.deque()

        self.joint_state_pub = self.create_publisher(JointState, '/joint_states', 10)
        topic = param('controller_topic', '/arm_controller/joint_trajectory').value
        self.create_subscription(JointTrajectory, topic, self._on_trajectory, 10)
        self._msg = JointState(name=self.joint_names)
        self._last = None
        self.create_timer(1.0 / float(param('publish_rate', 100.0).value), self._update)
        self.get_logger().info(f'fake arm with joints {self.joint_names} on {topic}; latency {self.latency} s, '
                               f'tracking time constant {self.arm.time_constant} s')

    def _limits(self, arm_joints, finger_joints, urdf_path, ee_frame, lower, upper, velocity):
        """Joint limits (lower, upper, velocity) in joint_names order: URDF, else parameters, else fallback."""
        if urdf_path:
            try:
                kin = ArmKinematics(urdf_path, arm_joints, finger_joints, ee_frame)
                return (np.r_[kin.lower, kin.finger_lower], np.r_[kin.upper, kin.finger_upper],
                        np.r_[kin.velocity, kin.finger_velocity])
            except (OSError, ValueError) as error:
                self.get_logger().warning(f'cannot read limits from URDF {urdf_path}: {error}; using parameters')
        n = len(self.joint_names)
        if len(lower) == len(upper) == len(velocity) == n:
            return np.array(lower, float), np.array(upper, float), np.array(velocity, float)
        self.get_logger().warning(
            f'joint_lower/joint_upper/joint_velocity have {len(lower)}/{len(upper)}/{len(velocity)} values for '
            f'{n} joints; using +-pi rad at 1 rad/s for the arm and 0..0.04 m at 0.1 m/s for the fingers')
        limits = [FALLBACK_ARM_LIMITS] * len(arm_joints) + [FALLBACK_FINGER_LIMITS] * len(finger_joints)
        return tuple(np.array(column, float) for column in zip(*limits))

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        self._pending.append((self._now() + self.latency, msg))

    def _update(self) -> None:
        now = self._now()
        while self._pending and self._pending[0][0] <= now:
            apply_trajectory(self.follower, self._pending.popleft()[1], now, self.arm.position, self.get_logger(),
                             self.max_stamp_skew)
        dt = 0.0 if self._last is None else min(now - self._last, 0.1)
        self._last = now
        self.arm.update(self.follower.sample(now)[0], dt)
        msg = self._msg
        msg.header.stamp = sec_to_stamp(now)
        msg.position = self.arm.position.tolist()
        msg.velocity = self.arm.velocity.tolist()
        msg.effort = [0.0] * len(self.joint_names)
        self.joint_state_pub.publish(msg)


def main(args=None) -> int:
    return run_node(FakeArmNode, args)


if __name__ == '__main__':
    main()
