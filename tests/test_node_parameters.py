"""Every node's parameters, asked over ROS as a user's `ros2 param describe` would: each has a description, each
numeric one a range, and the ones a running node applies (live) are exactly those the node says it applies;
every other one is read-only, so setting it is refused with a reason instead of answering "successful" and
changing nothing.

All eleven node executables run as processes in one graph (real DDS), on their defaults.
"""
from pathlib import Path

import pytest
import yaml
from rcl_interfaces.msg import Parameter as ParameterMsg, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters

REPO = Path(__file__).resolve().parents[1]
AGENT_EXECUTABLES = {'perception_node', 'world_model_node', 'cost_node', 'short_term_memory_node', 'actor_node',
                     'configurator_node'}
# rclpy's own parameters, not ours to describe.
RCLPY_OWN = {'use_sim_time', 'start_type_description_service'}
NUMERIC = {ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_DOUBLE}

# node name -> (executable, parameters the running node applies). Everything else must be read-only.
NODES = {
    'sim': ('sim_node', {'perturb_camera_shift', 'perturb_camera_rotation', 'perturb_arm_tracking',
                         'perturb_cube_mass_scale', 'perturb_cube_friction_scale', 'perturb_cube_rgb'}),
    'fake_arm': ('fake_arm_node', set()),
    'sim_driver': ('sim_driver_node', set()),
    'safety': ('safety_node', {'max_joint_velocity_scale', 'stale_timeout', 'command_timeout', 'workspace_enabled',
                               'workspace_min', 'workspace_max'}),
    'recorder': ('recorder_node', set()),
    'perception': ('perception_node', {'checkpoint'}),
    'world_model': ('world_model_node', {'checkpoint'}),
    'cost': ('cost_node', None),
    'short_term_memory': ('short_term_memory_node', set()),
    'actor': ('actor_node', None),
    'configurator': ('configurator_node', None),
}


def describe(graph, node: str) -> dict:
    names = graph.call(ListParameters, f'/{node}/list_parameters', ListParameters.Request(), timeout=60).result.names
    request = DescribeParameters.Request(names=[n for n in names if n not in RCLPY_OWN
                                                and not n.startswith('qos_overrides.')])
    return {d.name: d for d in graph.call(DescribeParameters, f'/{node}/describe_parameters', request).descriptors}


@pytest.fixture(scope='module')
def described(tmp_path_factory):
    from rosharness import RosGraph
    graph = RosGraph(tmp_path_factory.mktemp('node_parameters'))
    try:
        for name, (executable, _) in NODES.items():
            params = {'output': str(graph.log_dir / 'bag')} if name == 'recorder' else {}
            if name == 'configurator':
                params['work_dir'] = str(graph.log_dir / 'agent')
            # The agent's nodes as the graphs start them: with config/agent.yaml (the configurator declares a
            # goal's parameters for each goal it names).
            params_file = str(REPO / 'config' / 'agent.yaml') if executable in AGENT_EXECUTABLES else None
            graph.start(executable, name=name, params=params, params_file=params_file)
        yield graph, {name: describe(graph, name) for name in NODES}
    finally:
        graph.shutdown()


@pytest.mark.integration
@pytest.mark.parametrize('node', sorted(NODES))
def test_every_parameter_has_a_description_and_numeric_ones_a_range(described, node):
    _, descriptors = described
    missing = sorted(n for n, d in descriptors[node].items() if not d.description.strip())
    assert not missing, f'{node}: parameters without a description: {missing}'
    unbounded = sorted(n for n, d in descriptors[node].items()
                       if d.type in NUMERIC and not d.dynamic_typing
                       and not (d.integer_range or d.floating_point_range))
    assert not unbounded, f'{node}: numeric parameters without a range: {unbounded}'


@pytest.mark.integration
@pytest.mark.parametrize('node', sorted(NODES))
def test_every_parameter_has_a_value_a_client_can_read(described, node):
    """`ros2 param get` and `jepa eval`'s provenance read parameters through get_parameters: one parameter without
    a value (declared by type only) makes the whole answer empty."""
    graph, descriptors = described
    names = sorted(descriptors[node])
    values = graph.call(GetParameters, f'/{node}/get_parameters', GetParameters.Request(names=names)).values
    assert len(values) == len(names), f'{node}: get_parameters answered {len(values)} of {len(names)} values'


@pytest.mark.integration
@pytest.mark.parametrize('node', sorted(NODES))
def test_only_the_parameters_a_node_applies_are_writable(described, node):
    graph, descriptors = described
    writable = {n for n, d in descriptors[node].items() if not d.read_only}
    expected = NODES[node][1]
    if expected is not None:
        assert writable == expected, f'{node}: writable parameters {sorted(writable)}, expected {sorted(expected)}'
    read_only = sorted(set(descriptors[node]) - writable)
    if read_only:
        d = descriptors[node][read_only[0]]
        value = ParameterValue(type=d.type)
        request = SetParameters.Request(parameters=[ParameterMsg(name=d.name, value=value)])
        result = graph.call(SetParameters, f'/{node}/set_parameters', request).results[0]
        assert not result.successful and result.reason, f'{node}: setting read-only {d.name} was not refused'


def flatten(parameters: dict, prefix: str = '') -> set[str]:
    """Parameter names of a ros__parameters mapping (nested mappings are dotted names)."""
    names = set()
    for key, value in parameters.items():
        if isinstance(value, dict):
            names |= flatten(value, f'{prefix}{key}.')
        else:
            names.add(f'{prefix}{key}')
    return names


@pytest.mark.integration
def test_every_parameter_a_graph_passes_is_one_its_node_declares(described):
    """rclpy drops an override for a parameter the node never declares: a graph argument or params-file value
    that names no declared parameter would be accepted and ignored. A graph's own `parameters` go to every node
    of it, each taking those it declares (the arm preset's kinematics), so each of those must be declared by
    some node of the graph instead."""
    from jepa_bringup.description import node_parameters
    from jepa_bringup.graph import GraphFile
    _, descriptors = described
    executables = {executable: name for name, (executable, _) in NODES.items()}
    graph_file = GraphFile()
    raw = yaml.safe_load((REPO / 'config' / 'graph.yaml').read_text())['graphs']
    ignored = []
    def broadcast_of(graph: str) -> set[str]:
        """A graph's own `parameters` and those of the graphs it includes (each for that graph's nodes)."""
        names = flatten(raw[graph].get('parameters') or {})
        for included in raw[graph].get('include') or []:
            names |= broadcast_of(included)
        return names

    for graph in graph_file.graph_names:
        broadcast = broadcast_of(graph)
        declared_somewhere = set()
        for spec in graph_file.resolve(graph, {}):
            node = executables.get(spec.executable)
            if node is None:
                continue
            declared_somewhere |= broadcast & set(descriptors[node])
            given = flatten(spec.parameters) - broadcast
            for path in spec.params_files:
                given |= flatten(node_parameters(yaml.safe_load(open(path)), spec.name) or {})
            # A section for a goal, read by name (goals.<name>.*), is declared when its name is in goal_names.
            unknown = sorted(n for n in given - RCLPY_OWN if n not in descriptors[node])
            ignored += [f'{graph}/{spec.name}: {n}' for n in unknown]
        ignored += [f'{graph} (every node): {n}' for n in sorted(broadcast - declared_somewhere)]
    assert not ignored, 'parameters passed but never declared (silently ignored):\n' + '\n'.join(ignored)
