"""The latest joint state of the arm, as the agent's nodes need it (position, stamp, arrival time)."""
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState

from jepa_common.conversions import joint_positions, stamp_to_sec


class JointStateCache:
    """The latest arm joint positions, with their stamp and when (steady clock) they arrived."""

    def __init__(self, node: Node, arm_joints):
        self.arm_joints = tuple(arm_joints)
        self.q: np.ndarray | None = None
        self.stamp = 0.0
        self.received = 0.0
        self._node = node

    def on_joint_state(self, msg: JointState) -> None:
        try:
            self.q = joint_positions(msg, self.arm_joints)
            self.stamp = stamp_to_sec(msg.header.stamp)
            self.received = time.monotonic()
        except ValueError as exc:
            self._node.get_logger().error(f'ignored joint state: {exc}', throttle_duration_sec=2.0)

    def fresh(self, max_age: float, at: float | None = None) -> np.ndarray | None:
        """The joint positions if they are no older than max_age: relative to stamp `at` (e.g. the image's)
        when both are stamped, so a callback queued behind a long computation still counts as on time;
        else by arrival time."""
        if self.q is None:
            return None
        if at is not None and self.stamp > 0:
            return self.q if at - self.stamp <= max_age else None
        return self.q if time.monotonic() - self.received <= max_age else None
