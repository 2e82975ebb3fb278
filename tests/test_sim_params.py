"""sim_node's and fake_arm_node's parameters (in-process nodes, no other process): every one is declared from
the config dataclasses with a description (numeric ones with a range), read-only (neither node applies changes
while running), and a value the config refuses stops the node at start, naming the parameter."""
import pytest
from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter

from jepa_sim.camera import CameraConfig
from jepa_sim.fake_arm import FakeArmConfig
from jepa_sim.fake_arm_node import FakeArmNode
from jepa_sim.panda_sim import SimConfig
from jepa_sim.sim_node import SimNode


@pytest.fixture
def context(rclpy_context):
    return rclpy_context


# Parameters every rclpy node has.
RCLPY_OWN = ('use_sim_time', 'start_type_description_service')


def make(node_class, context, **overrides):
    return node_class(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def assert_described_and_read_only(node, expected: set[str]) -> None:
    names = [n for n in node._parameters if n not in RCLPY_OWN]
    assert set(names) == expected
    for name, descriptor in zip(names, node.describe_parameters(names)):
        assert descriptor.description and descriptor.read_only, name
        if descriptor.type in (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER):
            assert descriptor.floating_point_range or descriptor.integer_range, name
    (result,) = node.set_parameters([Parameter(names[0], value=node.get_parameter(names[0]).value)])
    assert not result.successful and 'read-only' in result.reason


def test_sim_node_parameters_are_described_read_only_and_reach_the_simulator(context):
    node = make(SimNode, context, camera_width=64, camera_eye=[1.0, 0.5, 0.8], joint_state_rate=60.0)
    try:
        settings = {f.name for f in SimConfig.__dataclass_fields__.values()}
        camera = {'camera_' + n for n in ('width', 'height', 'fov_deg', 'eye', 'target')}
        assert_described_and_read_only(node, settings | camera | {'controller_topic'})
        assert node.sim.camera.width == 64 and node.sim.camera.eye == (1.0, 0.5, 0.8)
        assert node.sim.camera.target == CameraConfig.target
        assert node.joint_state_every == 4  # 240 Hz physics / 60 Hz
        # Relative names: the node runs under whatever namespace it is given.
        assert node.get_parameter('controller_topic').value == 'arm_controller/joint_trajectory'
        assert node.joint_state_pub.topic_name == '/joint_states'
    finally:
        node.close()
        node.destroy_node()


@pytest.mark.parametrize('name, value, message', [('camera_rate', 0.0, 'out of range'),
                                                  ('camera_eye', [0.45, 0.0, 0.15], 'distinct'),
                                                  ('camera_width', 96.0, 'camera_width')])
def test_sim_node_refuses_to_start_with_a_value_it_cannot_use(context, name, value, message):
    with pytest.raises(Exception, match=message):
        make(SimNode, context, **{name: value})


def test_fake_arm_parameters_are_described_read_only_and_namespaced(context):
    node = FakeArmNode(context=context, namespace='/arm2')
    try:
        settings = {f.name for f in FakeArmConfig.__dataclass_fields__.values()}
        assert_described_and_read_only(node, settings | {'controller_topic'})
        assert node.joint_state_pub.topic_name == '/arm2/joint_states'
    finally:
        node.destroy_node()


@pytest.mark.parametrize('overrides, message', [({'home': [0.0, 1.0]}, 'home has 2 values for 7 arm joints'),
                                                ({'publish_rate': 0.0}, 'out of range')])
def test_fake_arm_refuses_to_start_with_a_value_it_cannot_use(context, overrides, message):
    with pytest.raises(Exception, match=message):
        make(FakeArmNode, context, **overrides)
