"""Pieces the agent's nodes share: parameter declarations (arm kinematics, cost weights), latched QoS and
the latest-joint-state cache."""
import os
import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from jepa_common.conversions import joint_positions, stamp_to_sec
from jepa_common.kinematics import DEFAULT_WORKSPACE, PANDA_ARM_JOINTS, PANDA_EE_FRAME, PANDA_FINGER_JOINTS, \
    ArmKinematics
from jepa_planner.cost import CostWeights

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Plan on the newest state only: a latent that waited behind a slower plan is already stale.
NEWEST = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
MODE_ALIASES = {'mpc': 'mode2', 'policy': 'mode1'}


def normalize_mode(mode: str) -> str:
    """Launch arguments say mpc / policy; SetTask and the Plan message say mode2 / mode1."""
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in ('mode2', 'mode1', 'idle'):
        raise ValueError(f'unknown mode {mode!r} (mode2|mpc, mode1|policy, idle)')
    return mode


def declare_kinematics(node: Node) -> ArmKinematics:
    """The arm parameters the bringup graph passes to every node (arm presets), -> ArmKinematics."""
    urdf_path = node.declare_parameter('urdf_path', '').value
    arm_joints = list(node.declare_parameter('arm_joints', list(PANDA_ARM_JOINTS)).value)
    finger_joints = list(node.declare_parameter('finger_joints', list(PANDA_FINGER_JOINTS)).value)
    ee_frame = node.declare_parameter('ee_frame', '').value or PANDA_EE_FRAME
    home = list(node.declare_parameter('home', [0.0]).value)
    workspace_min = node.declare_parameter('workspace_min', [lo for lo, _ in DEFAULT_WORKSPACE]).value
    workspace_max = node.declare_parameter('workspace_max', [hi for _, hi in DEFAULT_WORKSPACE]).value
    max_step = node.declare_parameter('max_step', 0.03).value
    return ArmKinematics(os.path.expanduser(urdf_path) if urdf_path else None, arm_joints=arm_joints,
                         finger_joints=finger_joints, ee_frame=ee_frame, home=home if len(home) > 1 else None,
                         max_step=max_step, workspace=tuple(zip(workspace_min, workspace_max)))


def declare_weights(node: Node) -> CostWeights:
    defaults = CostWeights()
    return CostWeights(**{name: float(node.declare_parameter(f'weights.{name}', getattr(defaults, name)).value)
                          for name in CostWeights.names()})


def weight_changes(parameters) -> dict:
    """{weight name: value} for the weights.* among changed parameters; ValueError on a bad value."""
    changes = {}
    for p in parameters:
        if p.name.startswith('weights.'):
            name = p.name.split('.', 1)[1]
            if name not in CostWeights.names():
                raise ValueError(f'unknown cost weight {name!r} (known: {", ".join(CostWeights.names())})')
            value = float(p.value)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f'cost weight {name} must be finite and >= 0, got {p.value}')
            changes[name] = value
    return changes


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
