"""world_model_node's parameters on an in-process node (no other process needed): each is declared from
WorldModelNodeConfig with a description, numeric ones with a range; the read-only ones are refused at run time,
and the live `checkpoint` loads the model it names (or is refused, keeping the model in service)."""
import numpy as np
import pytest
import rclpy
import torch
from rcl_interfaces.msg import ParameterType
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from jepa_common.settings import config_fields
from jepa_world_model.model import read_checkpoint
from jepa_world_model.runtime import WorldModelNodeConfig
from test_world_model_node_core import make_checkpoint


RCLPY_PARAMETERS = {'use_sim_time', 'start_type_description_service'}  # every rclpy node declares these


def check_parameters(node: Node, expected: set[str]) -> set[str]:
    """Every parameter of node (rclpy's own aside) is one of `expected`, all of them are declared, each has a
    description, numeric ones a range; -> the names of the live (not read-only) ones."""
    names = [name for name in node._parameters if name not in RCLPY_PARAMETERS]
    assert set(names) == expected
    live = set()
    for name, descriptor in zip(names, node.describe_parameters(names)):
        assert descriptor.description, name
        if descriptor.type in (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER):
            assert descriptor.floating_point_range or descriptor.integer_range, name
        if not descriptor.read_only:
            live.add(name)
    return live


@pytest.fixture
def make_node():
    """make(NodeClass, **parameter overrides) -> an in-process node of a fresh context."""
    context = Context()
    rclpy.init(context=context)
    nodes = []

    def make(cls, **overrides):
        node = cls(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        nodes.append(node)
        return node
    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.fixture
def world_model(make_node, tmp_path, one_torch_thread):
    from jepa_world_model.world_model_node import WorldModelNode
    return make_node(WorldModelNode, checkpoint=make_checkpoint(tmp_path / 'a.pt'), device='cpu')


def test_every_parameter_is_described_with_a_range_and_only_the_checkpoint_is_live(world_model):
    live = check_parameters(world_model, {f.name for f in config_fields(WorldModelNodeConfig)})
    assert live == {'checkpoint'}


@pytest.mark.parametrize('name, value', [('device', 'cuda'), ('action_window', 0.2), ('max_gap', 1.0),
                                         ('max_rollout_elements', 10), ('torch_threads', 2),
                                         ('diagnostics_period', 1.0)])
def test_a_read_only_parameter_is_refused_and_keeps_its_value(world_model, name, value):
    before = world_model.get_parameter(name).value
    (outcome,) = world_model.set_parameters([Parameter(name, value=value)])
    assert not outcome.successful and 'read-only' in outcome.reason
    assert world_model.get_parameter(name).value == before and getattr(world_model.config, name) == before


def test_setting_the_checkpoint_loads_that_model_and_a_broken_one_is_refused(world_model, tmp_path):
    announced = []
    world_model.version_pub.publish = announced.append
    second = make_checkpoint(tmp_path / 'b.pt', seed=1)
    (outcome,) = world_model.set_parameters([Parameter('checkpoint', value=second)])
    assert outcome.successful, outcome.reason
    assert world_model.loaded.model_id == read_checkpoint(second)[1] and announced[-1].data == second
    assert world_model.config.checkpoint == second
    # Predictions come from the new model.
    z = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    action = np.array([0.02, 0.0, 0.0, 1.0], np.float32)
    predictor = world_model.predictor
    predictor.observe_latent(z, 1_000_000_000)
    predicted, _ = predictor.observe_action(action, 1_010_000_000)
    with torch.no_grad():
        expected = world_model.loaded.model.predict(torch.from_numpy(z)[None], torch.from_numpy(action)[None])[0]
    np.testing.assert_allclose(predicted, expected.numpy(), rtol=1e-5, atol=1e-6)
    (tmp_path / 'broken.pt').write_bytes(b'garbage')
    (outcome,) = world_model.set_parameters([Parameter('checkpoint', value=str(tmp_path / 'broken.pt'))])
    assert not outcome.successful and 'keeping the current model' in outcome.reason
    assert world_model.get_parameter('checkpoint').value == second and world_model.config.checkpoint == second


@pytest.mark.parametrize('changes, field', [({'device': 'tpu'}, 'device'), ({'action_window': 0.0}, 'action_window'),
                                            ({'max_gap': -1.0}, 'max_gap')])
def test_the_config_refuses_values_it_cannot_use_by_name(changes, field):
    with pytest.raises(ValueError, match=field):
        WorldModelNodeConfig(**changes)
