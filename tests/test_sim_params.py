"""sim_node's and fake_arm_node's parameters (in-process nodes, no other process): every one is declared from
the config dataclasses with a description (numeric ones with a range), read-only where the node does not apply
changes while running (all but sim_node's perturb_* ones, which reach the running simulator), and a value the
config refuses stops the node at start, naming the parameter."""
import pybullet as p
import pytest
from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter

from jepa_sim.camera import CameraConfig
from jepa_sim.fake_arm import FakeArmConfig
from jepa_sim.fake_arm_node import FakeArmNode
from jepa_sim.panda_sim import SimConfig
from jepa_sim.perturbation import CUBE_MASS, Perturbation
from jepa_sim.sim_node import SimNode


@pytest.fixture
def context(rclpy_context):
    return rclpy_context


# Parameters every rclpy node has.
RCLPY_OWN = ('use_sim_time', 'start_type_description_service')


def make(node_class, context, **overrides):
    return node_class(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def assert_described_and_read_only(node, expected: set[str], live: frozenset[str] = frozenset()) -> None:
    """Every parameter in `expected` is declared, described (numeric ones with a range), and read-only unless it
    is in `live`."""
    names = [n for n in node._parameters if n not in RCLPY_OWN]
    assert set(names) == expected
    for name, descriptor in zip(names, node.describe_parameters(names)):
        assert descriptor.description and descriptor.read_only == (name not in live), name
        if descriptor.type in (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER):
            assert descriptor.floating_point_range or descriptor.integer_range, name
    (result,) = node.set_parameters([Parameter(names[0], value=node.get_parameter(names[0]).value)])
    assert not result.successful and 'read-only' in result.reason


def test_sim_node_parameters_are_described_read_only_and_reach_the_simulator(context):
    node = make(SimNode, context, camera_width=64, camera_eye=[1.0, 0.5, 0.8], joint_state_rate=60.0)
    try:
        settings = {f.name for f in SimConfig.__dataclass_fields__.values()}
        camera = {'camera_' + n for n in ('width', 'height', 'fov_deg', 'eye', 'target')}
        perturbation = {'perturb_' + f.name for f in Perturbation.__dataclass_fields__.values()}
        assert_described_and_read_only(node, settings | camera | perturbation | {'controller_topic'},
                                       live=frozenset(perturbation))
        assert node.sim.camera.width == 64 and node.sim.camera.eye == (1.0, 0.5, 0.8)
        assert node.sim.camera.target == CameraConfig.target
        assert node.joint_state_every == 4  # 240 Hz physics / 60 Hz
        # Relative names: the node runs under whatever namespace it is given.
        assert node.get_parameter('controller_topic').value == 'arm_controller/joint_trajectory'
        assert node.joint_state_pub.topic_name == '/joint_states'
    finally:
        node.close()
        node.destroy_node()


def test_sim_node_perturbations_reach_the_running_simulator(context):
    """The perturb_* parameters are live: set on the running node, the simulator (physics thread running) has
    them; a value the perturbation refuses is refused and changes nothing."""
    node = make(SimNode, context, perturb_cube_mass_scale=2.0)
    try:
        assert node.sim.perturbation.cube_mass_scale == 2.0
        results = node.set_parameters([Parameter('perturb_arm_tracking', value=0.65),
                                       Parameter('perturb_camera_shift', value=[0.03, 0.0, 0.0])])
        assert all(r.successful for r in results), [r.reason for r in results]
        assert node.follower.tracking == 0.65 and node.sim.perturbation.camera_shift == (0.03, 0.0, 0.0)
        assert node.sim.camera.eye != node.sim.nominal_camera.eye
        mass = node._work.call(lambda: p.getDynamicsInfo(node.sim.cube, -1, physicsClientId=node.sim.client)[0])
        assert mass == pytest.approx(2.0 * CUBE_MASS)
        for name, value, message in (('perturb_arm_tracking', 0.0, 'perturb_arm_tracking'),
                                     ('perturb_cube_rgb', [0.5, 2.0, 0.0], 'cube_rgb')):
            (result,) = node.set_parameters([Parameter(name, value=value)])
            assert not result.successful and message in result.reason, result.reason
        assert node.follower.tracking == 0.65 and node.sim.perturbation.cube_rgb == Perturbation.cube_rgb
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
