"""safety_node's parameters -> SafetyGate (build_gate on an in-process node; no other process needed)."""
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from jepa_common.kinematics import ArmKinematics
from jepa_safety.safety_node import build_gate


@pytest.fixture
def make_node():
    context = Context()
    rclpy.init(context=context)
    nodes = []

    def make(**overrides) -> Node:
        node = Node('safety', context=context,
                    parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        nodes.append(node)
        return node
    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


def test_defaults_are_the_panda_urdf_limits_and_the_sim_workspace(make_node):
    gate = build_gate(make_node())
    kinematics = ArmKinematics()
    assert gate.joint_names == (*kinematics.arm_joints, *kinematics.finger_joints)
    np.testing.assert_allclose(gate.limits.upper, np.r_[kinematics.upper, kinematics.finger_upper])
    np.testing.assert_allclose(gate.limits.velocity, np.r_[kinematics.velocity, kinematics.finger_velocity])
    np.testing.assert_allclose(gate.workspace.lower, [0.25, -0.35, 0.02])
    assert gate.stale_timeout == 0.2 and gate.command_timeout == 0.5


def test_per_joint_overrides_velocity_scale_and_workspace(make_node):
    gate = build_gate(make_node(**{
        'limits.panda_joint4.upper': -0.5, 'limits.panda_finger_joint1.lower': 0,  # an int works too
        'max_joint_velocity_scale': 0.25, 'workspace_min': [0.3, -0.3, 0.05], 'workspace_max': [0.7, 0.3, 0.5]}))
    names = list(gate.joint_names)
    assert gate.limits.upper[names.index('panda_joint4')] == -0.5
    assert gate.limits.lower[names.index('panda_finger_joint1')] == 0.0
    assert gate.limits.velocity[0] == pytest.approx(2.175 * 0.25)
    np.testing.assert_allclose(gate.workspace.upper, [0.7, 0.3, 0.5])
    assert build_gate(make_node(workspace_enabled=False)).workspace is None


@pytest.mark.parametrize('overrides, error', [
    ({'max_joint_velocity_scale': 1.5}, 'max_joint_velocity_scale'),
    ({'urdf_path': '/nonexistent/arm.urdf'}, 'URDF not found'),
    ({'arm_joints': ['shoulder', 'elbow']}, 'not in'),
    ({'workspace_min': [0.7, 0.0, 0.0], 'workspace_max': [0.3, 1.0, 1.0]}, 'empty'),
    ({'limits.panda_joint2.lower': 2.0}, 'lower limit above'),
])
def test_a_gate_that_could_not_verify_commands_refuses_to_start(make_node, overrides, error):
    with pytest.raises((OSError, ValueError), match=error):
        build_gate(make_node(**overrides))
