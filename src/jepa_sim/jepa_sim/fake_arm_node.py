"""fake_arm_node (node `fake_arm`): ros2_control's mock hardware behind a JointTrajectoryController, no physics.

It follows trajectories on controller_topic (arm_controller/joint_trajectory) within the joint position and
velocity limits, with a command latency and a first-order tracking lag, and publishes joint_states (relative
names: the node runs under a namespace). Joint names and limits come from parameters (FakeArmConfig), or from
the URDF (ArmKinematics) when `urdf_path` names one. It runs on the node clock, so `use_sim_time` works as for
any node.
"""
import collections
import math

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from jepa_common.conversions import sec_to_stamp
from jepa_common.kinematics import ArmKinematics
from jepa_common.node import run_node
from jepa_common.parameters import declare, declare_config
from jepa_common.qos import RELIABLE
from jepa_sim.fake_arm import FakeArm, FakeArmConfig
from jepa_sim.trajectory_command import CONTROLLER_TOPIC, apply_trajectory
from jepa_sim.trajectory_follower import TrajectoryFollower

# Limits used when neither a URDF nor per-joint limit parameters describe the arm.
FALLBACK_ARM_LIMITS = (-math.pi, math.pi, 1.0)
FALLBACK_FINGER_LIMITS = (0.0, 0.04, 0.1)


class FakeArmNode(Node):
    def __init__(self, **node_options):
        super().__init__('fake_arm', **node_options)
        config = declare_config(self, FakeArmConfig)
        topic = declare(self, 'controller_topic', CONTROLLER_TOPIC,
                        'the trajectory_msgs/JointTrajectory topic the arm follows (the safety gate publishes there)')
        arm_joints, finger_joints = list(config.arm_joints), list(config.finger_joints)
        self.joint_names = arm_joints + finger_joints
        lower, upper, velocity = self._limits(arm_joints, finger_joints, config)
        initial = np.clip(np.r_[np.array(config.home, dtype=float), upper[len(arm_joints):]], lower, upper)
        self.arm = FakeArm(initial, velocity, config.tracking_time_constant)
        self.follower = TrajectoryFollower(self.joint_names, lower, upper, initial)
        self.latency = config.command_latency
        self.max_stamp_skew = config.max_stamp_skew
        self._pending = collections.deque()

        self.joint_state_pub = self.create_publisher(JointState, 'joint_states', RELIABLE)
        subscription = self.create_subscription(JointTrajectory, topic, self._on_trajectory, RELIABLE)
        self._msg = JointState(name=self.joint_names)
        self._last = None
        self.create_timer(1.0 / config.publish_rate, self._update)
        self.get_logger().info(f'fake arm with joints {self.joint_names} on {subscription.topic_name}; latency '
                               f'{self.latency} s, tracking time constant {self.arm.time_constant} s')

    def _limits(self, arm_joints, finger_joints, config: FakeArmConfig):
        """Joint limits (lower, upper, velocity) in joint_names order: URDF, else parameters, else fallback."""
        urdf_path, lower, upper, velocity = (config.urdf_path, config.joint_lower, config.joint_upper,
                                             config.joint_velocity)
        if urdf_path:
            try:
                kin = ArmKinematics(urdf_path, arm_joints, finger_joints, config.ee_frame)
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
