"""safety_node's parameters -> SafetyGate, at start and at run time (in-process nodes; no other process needed)."""
import time

import numpy as np
import pytest
import rclpy
from rcl_interfaces.msg import ParameterType, SetParametersResult
from rclpy.context import Context
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_FINGER_JOINTS, PANDA_HOME, ArmKinematics
from jepa_safety.gate import Trajectory, TrajectoryPoint
from jepa_safety.safety_node import SafetyNode, build_gate

KIN = ArmKinematics()
ARM = list(PANDA_ARM_JOINTS)
NAMES = ARM + list(PANDA_FINGER_JOINTS)
HOME = list(PANDA_HOME) + [0.02, 0.02]


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
    make.context, make.nodes = context, nodes
    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


def test_defaults_are_the_panda_urdf_limits_and_the_sim_workspace(make_node):
    gate = build_gate(make_node())
    kinematics = KIN
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
    assert gate.max_velocity[0] == pytest.approx(2.175 * 0.25) and gate.limits.velocity[0] == pytest.approx(2.175)
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
    with pytest.raises((OSError, ValueError, ParameterException), match=error):
        build_gate(make_node(**overrides))


# ---- parameters at run time (set through rclpy on an in-process node: the path /safety/set_parameters takes) --

@pytest.fixture
def safety(make_node):
    """A SafetyNode holding a fresh Panda joint state, with a command in force."""
    node = SafetyNode(context=make_node.context)
    make_node.nodes.append(node)
    node.gate.on_joint_state(NAMES, HOME, time.monotonic())
    return node


def forward(node, target, duration=0.1):
    decision = node.gate.on_trajectory(Trajectory(ARM, [TrajectoryPoint(duration, list(target))]), time.monotonic())
    assert not decision.hold, decision.reasons
    return decision.trajectory.points[0]


def live_settings(gate) -> tuple:
    box = None if gate.workspace is None else (gate.workspace.lower.tolist(), gate.workspace.upper.tolist())
    return gate.velocity_scale, box, gate.stale_timeout, gate.command_timeout


def set_one(node, name, value) -> SetParametersResult:
    (result,) = node.set_parameters([Parameter(name, value=value)])
    return result


def test_every_parameter_has_a_description_numeric_ones_a_range_and_each_is_live_or_read_only(safety):
    names = [n for n in safety._parameters if n != 'use_sim_time']  # use_sim_time is rclpy's own
    live = set()
    for name, descriptor in zip(names, safety.describe_parameters(names)):
        assert descriptor.description, name
        if descriptor.type in (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER):
            assert descriptor.floating_point_range or descriptor.integer_range, name
        if not descriptor.read_only:
            live.add(name)
    assert live == {'max_joint_velocity_scale', 'workspace_enabled', 'workspace_min', 'workspace_max',
                    'stale_timeout', 'command_timeout'}
    assert {'urdf_path', 'limits.panda_joint1.upper', 'max_reach', 'output_topic'} <= set(names) - live


@pytest.mark.parametrize('name, value', [('urdf_path', '/tmp/other.urdf'), ('limits.panda_joint1.upper', 5.0),
                                         ('max_reach', 0.5), ('max_points', 10), ('output_topic', '/elsewhere')])
def test_read_only_parameters_are_refused_with_a_reason(safety, name, value):
    before = safety.get_parameter(name).value
    result = set_one(safety, name, value)
    assert not result.successful and 'read-only' in result.reason
    assert safety.get_parameter(name).value == before


def test_tightening_applies_at_once_and_holds_the_command_checked_under_the_old_values(safety):
    outputs = []
    safety.apply = lambda decision, event: outputs.append(decision)
    step = np.array(PANDA_HOME) + [0.5, 0, 0, 0, 0, 0, 0]
    assert forward(safety, step).time_from_start == pytest.approx(0.5 / 2.175)
    assert set_one(safety, 'max_joint_velocity_scale', 0.2).successful
    assert outputs and outputs[-1].hold, 'the command in force was checked at the old speed'
    assert forward(safety, step).time_from_start == pytest.approx(0.5 / (2.175 * 0.2))

    # A smaller box, min and max together (set_parameters_atomically): the elbow now stops at z 0.5.
    result = safety.set_parameters_atomically([Parameter('workspace_min', value=[0.3, -0.3, 0.05]),
                                               Parameter('workspace_max', value=[0.7, 0.3, 0.5])])
    assert result.successful, result.reason
    up = forward(safety, np.array(PANDA_HOME) + [0, 0, 0, 1.0, 0, 0, 0], duration=10.0)
    assert KIN.fk(up.positions)[2] == pytest.approx(0.5, abs=2e-3)

    assert set_one(safety, 'stale_timeout', 0.05).successful and safety.gate.stale_timeout == 0.05
    assert set_one(safety, 'command_timeout', 0.1).successful and safety.gate.command_timeout == 0.1


@pytest.mark.parametrize('name, value', [('max_joint_velocity_scale', 1.0), ('workspace_enabled', False),
                                         ('workspace_max', [0.9, 0.5, 0.8]), ('stale_timeout', 5.0),
                                         ('command_timeout', 0.0)])
def test_loosening_is_refused_unless_the_estop_is_latched_and_then_changes_the_gate(safety, name, value):
    """Loosening (raising the speed, a bigger or no box, longer or no timeouts) is an operator's act with the
    arm held: refused otherwise, with the reason, leaving both the parameter and the gate as they were."""
    assert set_one(safety, 'max_joint_velocity_scale', 0.5).successful
    result = set_one(safety, name, value)
    assert not result.successful and 'e-stop is latched' in result.reason
    assert safety.get_parameter(name).value != value
    gate_before = live_settings(safety.gate)
    assert gate_before[:2] == (0.5, ([0.25, -0.35, 0.02], [0.75, 0.35, 0.6]))

    safety.gate.on_estop(True)
    assert set_one(safety, name, value).successful
    assert safety.get_parameter(name).value == value
    assert live_settings(safety.gate) != gate_before


@pytest.mark.parametrize('name, value, reason', [
    ('max_joint_velocity_scale', 0.0, 'out of range'), ('max_joint_velocity_scale', 1.5, 'out of range'),
    ('stale_timeout', 100.0, 'out of range'), ('command_timeout', -1.0, 'out of range'),
    ('workspace_min', [0.8, 0.0, 0.0], 'empty'), ('workspace_max', [0.5, 0.5], '3 finite numbers'),
    ('max_joint_velocity_scale', 1, 'Wrong parameter type'),
])
def test_invalid_values_are_refused_with_a_reason(safety, name, value, reason):
    result = set_one(safety, name, value)
    assert not result.successful and reason in result.reason
