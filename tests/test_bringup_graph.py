"""config/graph.yaml through the graph loader: the nodes each graph starts, argument resolution, arm presets and
the errors for wrong input. ROS-free."""
from pathlib import Path

import pytest
import yaml

from jepa_bringup.graph import GraphError, GraphFile, parse_assignments

CONFIG = Path(__file__).resolve().parents[1] / 'config'
AGENT_NODES = {'perception', 'world_model', 'cost', 'short_term_memory', 'actor', 'configurator'}
# robot_description and TF for RViz (ROS install only; tests/test_bringup_description.py).
DESCRIPTION_NODES = {'robot_state_publisher', 'camera_tf'}
PRESETS = ('franka_fr3', 'panda', 'ur5e', 'kinova_gen3', 'xarm6')


@pytest.fixture(scope='module')
def graph():
    return GraphFile(CONFIG / 'graph.yaml')


def by_name(specs):
    return {s.name: s for s in specs}


def test_sim_graph_starts_simulator_gate_and_agent_and_recorder_only_when_recording(graph):
    nodes = by_name(graph.resolve('sim'))
    assert set(nodes) == {'sim', 'safety'} | AGENT_NODES | DESCRIPTION_NODES
    assert (nodes['sim'].package, nodes['sim'].executable) == ('jepa_sim', 'sim_node')
    assert (nodes['actor'].package, nodes['actor'].executable) == ('jepa_actor', 'actor_node')
    recorded = by_name(graph.resolve('sim', {'record': 'true'}))
    assert set(recorded) == set(nodes) | {'recorder'}
    assert recorded['recorder'].executable == 'recorder_node'


def test_arm_graph_replaces_the_simulator_by_the_driver_or_fake_arm(graph):
    nodes = by_name(graph.resolve('arm'))
    assert set(nodes) == {'safety'} | AGENT_NODES
    with_fake = by_name(graph.resolve('arm', {'fake_arm': 'true'}))
    assert set(with_fake) == {'safety', 'fake_arm', 'robot_state_publisher'} | AGENT_NODES
    assert with_fake['fake_arm'].executable == 'fake_arm_node'


def test_gate_and_arm_are_required_never_respawned_and_learned_nodes_respawn(graph):
    for graph_name, args in (('sim', {}), ('arm', {'fake_arm': 'true'})):
        nodes = by_name(graph.resolve(graph_name, args))
        arm = 'sim' if graph_name == 'sim' else 'fake_arm'
        for name in ('safety', arm):
            assert nodes[name].required and not nodes[name].respawn, (graph_name, name)
        for name in AGENT_NODES:
            assert nodes[name].respawn and not nodes[name].required, (graph_name, name)


def test_bookkeeping_nodes_yield_the_cores_to_the_command_path(graph):
    nodes = by_name(graph.resolve('sim', {'record': 'true'}))
    for name in ('world_model', 'cost', 'short_term_memory', 'configurator'):
        assert nodes[name].nice == 10, name
    for name in ('sim', 'safety', 'perception', 'actor', 'recorder'):
        assert nodes[name].nice == 0, name


def test_the_simulator_starts_on_a_goal_and_a_physical_arm_waits_for_one(graph):
    """`jepa launch sim` alone does something: the configurator starts its task on the named goal `center`; a
    physical arm's graph starts without one (named goals need images of the real scene)."""
    assert by_name(graph.resolve('sim'))['configurator'].parameters['goal_name'] == 'center'
    assert by_name(graph.resolve('sim', {'goal': 'left'}))['configurator'].parameters['goal_name'] == 'left'
    assert by_name(graph.resolve('arm', {'arm': 'ur5e'}))['configurator'].parameters['goal_name'] == ''


def test_argument_values_reach_parameters_typed(graph):
    nodes = by_name(graph.resolve('sim', {'mode': 'policy', 'device': 'cuda:0', 'gui': 'true', 'task': 'push'}))
    assert nodes['actor'].parameters['mode'] == 'policy'
    assert nodes['actor'].parameters['device'] == 'cuda:0'
    assert nodes['perception'].parameters['device'] == 'cuda:0'
    assert nodes['configurator'].parameters['task'] == 'push'
    assert nodes['sim'].parameters['gui'] is True
    assert nodes['actor'].parameters['use_sim_time'] is True
    assert all(Path(f).is_file() and Path(f).parent == CONFIG for s in nodes.values() for f in s.params_files)
    assert nodes['actor'].params_files == [str(CONFIG / 'agent.yaml')]


def test_arm_graph_defaults_to_wall_clock_and_takes_topics_and_kinematics_from_the_preset(graph):
    preset = yaml.safe_load((CONFIG / 'arms' / 'ur5e.yaml').read_text())
    nodes = by_name(graph.resolve('arm', {'arm': 'ur5e'}))
    actor, safety = nodes['actor'], nodes['safety']
    assert actor.parameters['use_sim_time'] is False
    assert dict(actor.remaps)['camera/image_raw'] == preset['camera']['image_topic']
    assert dict(safety.remaps)['arm_controller/joint_trajectory'] == \
        'scaled_joint_trajectory_controller/joint_trajectory'
    assert safety.parameters['arm_joints'] == preset['joints']['arm']
    assert safety.parameters['gripper_joints'] == actor.parameters['finger_joints'] == preset['joints']['gripper']
    assert actor.parameters['workspace_min'] == preset['workspace']['min']
    assert not safety.parameters['urdf_path'].startswith('~')  # expanded for the nodes
    # An explicit argument beats the preset's default.
    nodes = by_name(graph.resolve('arm', {'arm': 'ur5e', 'camera_topic': '/scene_cam/image_raw'}))
    assert dict(nodes['perception'].remaps)['camera/image_raw'] == '/scene_cam/image_raw'


@pytest.mark.parametrize('preset', PRESETS)
def test_every_preset_resolves_and_is_consistent(graph, preset):
    data = yaml.safe_load((CONFIG / 'arms' / f'{preset}.yaml').read_text())
    assert len(data['kinematics']['home']) == len(data['joints']['arm'])
    assert data['controller']['topic'].endswith('/joint_trajectory')
    # Relative, like the agent's own names: a namespaced graph finds the driver in its namespace.
    assert not any(t.startswith('/') for t in (data['controller']['topic'], data['camera']['image_topic'],
                                               data['camera']['info_topic']))
    assert all(lo < hi for lo, hi in zip(data['workspace']['min'], data['workspace']['max']))
    # ROS types parameters from their YAML: the nodes declare double arrays, so no integers here.
    numbers = [*data['kinematics']['home'], *data['workspace']['min'], *data['workspace']['max'],
               data['limits']['velocity_scale']]
    assert all(isinstance(v, float) for v in numbers)
    nodes = by_name(graph.resolve('arm', {'arm': preset, 'fake_arm': 'true'}))
    assert dict(nodes['safety'].remaps)['arm_controller/joint_trajectory'] == data['controller']['topic']


def test_unknown_argument_is_an_error_naming_it_and_the_known_ones(graph):
    with pytest.raises(GraphError, match=r"unknown launch argument\(s\) colour for graph 'sim'.*gui"):
        graph.resolve('sim', {'colour': 'red'})
    with pytest.raises(GraphError, match=r"unknown launch argument\(s\) gui for graph 'arm'"):
        graph.resolve('arm', {'gui': 'true'})


def test_bad_values_graphs_and_presets_are_clear_errors(graph):
    with pytest.raises(GraphError, match="unknown graph 'simulation' in .*graphs: .*sim_arm"):
        graph.resolve('simulation')
    with pytest.raises(GraphError, match='mode must be one of mpc, policy'):
        graph.resolve('sim', {'mode': 'greedy'})
    with pytest.raises(GraphError, match="graph 'arm': unknown arm preset 'ur10'.*ur5e"):
        graph.resolve('arm', {'arm': 'ur10'})
    with pytest.raises(GraphError, match='name:=value'):
        parse_assignments(['gui=true'])
    assert parse_assignments(['gui:=true', 'checkpoint:=']) == {'gui': 'true', 'checkpoint': ''}


def test_malformed_graph_files_are_rejected_with_the_reason(tmp_path):
    def load(text):
        path = tmp_path / 'graph.yaml'
        path.write_text(text)
        return GraphFile(path)
    with pytest.raises(GraphError, match='not valid YAML'):
        load('graphs: [')
    with pytest.raises(GraphError, match="uses argument 'gui', not declared"):
        load('graphs:\n  g:\n    arguments: [gui]\n')
    with pytest.raises(GraphError, match='cycle'):
        load('graphs:\n  a: {include: [b]}\n  b: {include: [a]}\n')
    with pytest.raises(GraphError, match='both required and respawned'):
        load('graphs:\n  g:\n    nodes: [{name: n, package: p, executable: e, required: true, respawn: true}]\n')
    for nice in (-5, 20, 2.5, "'ten'"):
        with pytest.raises(GraphError, match="node 'n' of graph 'g': nice must be an integer from 0 to 19"):
            load(f'graphs:\n  g:\n    nodes: [{{name: n, package: p, executable: e, nice: {nice}}}]\n')
    missing = load('graphs:\n  g:\n    nodes: [{name: n, package: p, executable: e, params: [nope.yaml]}]\n')
    with pytest.raises(GraphError, match='params file .*nope.yaml does not exist'):
        missing.resolve('g')
    bad_ref = load('arguments: {a: {default: x, description: d}}\n'
                   'graphs:\n  g:\n    arguments: [a]\n'
                   '    nodes: [{name: n, package: p, executable: e, parameters: {k: $(var b)}}]\n')
    with pytest.raises(GraphError, match=r"node 'n'.*\$\(var b\) names an argument the graph does not declare"):
        bad_ref.resolve('g')


def test_docker_split_runs_every_node_of_sim_exactly_once(graph):
    """The CPU service runs sim_host, the GPU service runs inference: together they are the sim graph."""
    host = set(by_name(graph.resolve('sim_host', {'record': 'true'})))
    inference = set(by_name(graph.resolve('inference')))
    assert not host & inference
    assert host | inference == set(by_name(graph.resolve('sim', {'record': 'true'})))
    assert {'perception', 'world_model', 'actor'} <= inference


def test_namespace_puts_every_node_of_a_graph_under_it_with_its_own_clock_and_params(graph):
    plain = by_name(graph.resolve('sim', {'record': 'true'}))
    assert {s.namespace for s in plain.values()} == {''} and not any(('/clock', 'clock') in s.remaps
                                                                      for s in plain.values())
    for given in ('arm1', '/arm1', '/arm1/'):
        nodes = by_name(graph.resolve('sim', {'record': 'true', 'namespace': given}))
        assert set(nodes) == set(plain)
        assert {s.namespace for s in nodes.values()} == {'/arm1'}
    for name, spec in nodes.items():
        # /clock is the graph's own: two simulators must not interleave their times.
        assert ('/clock', 'clock') in spec.remaps, name
        # A params file reaches a node under its fully qualified name: the copies are keyed by /arm1/<node>.
        assert len(spec.params_files) == len(plain[name].params_files)
        for copy, original in zip(spec.params_files, plain[name].params_files):
            renamed, source = yaml.safe_load(Path(copy).read_text()), yaml.safe_load(Path(original).read_text())
            assert renamed == {(k if k.startswith('/') else f'/arm1/{k}'): v for k, v in source.items()}
    assert nodes['safety'].params_files != plain['safety'].params_files
    # The arm graph's remaps keep applying: relative names, matched in the node's namespace.
    arm = by_name(graph.resolve('arm', {'arm': 'ur5e', 'namespace': 'cell_2/arm'}))
    assert arm['actor'].namespace == '/cell_2/arm'
    assert dict(arm['actor'].remaps)['camera/image_raw'] == 'camera/camera/color/image_raw'
    assert 'namespace' in graph.arguments('gate') and graph.arguments('gate')['namespace'].default == ''


@pytest.mark.parametrize('bad', ['arm 1', '1arm', 'arm//1', 'arm-1', '~/arm'])
def test_a_namespace_that_is_not_a_ros_namespace_is_refused(graph, bad):
    with pytest.raises(GraphError, match='namespace must be a ROS namespace'):
        graph.resolve('sim_arm', {'namespace': bad})


def test_namespace_cannot_be_redeclared_and_its_value_can_be_substituted(tmp_path):
    path = tmp_path / 'graph.yaml'
    path.write_text('arguments: {namespace: {default: x, description: d}}\ngraphs:\n  g: {}\n')
    with pytest.raises(GraphError, match="'namespace' is every graph's own"):
        GraphFile(path)
    path.write_text('graphs:\n  g:\n    nodes: [{name: n, package: p, executable: e, '
                    'parameters: {prefix: $(var namespace)}}]\n')
    (spec,) = GraphFile(path).resolve('g', {'namespace': 'arm2'})
    assert spec.parameters['prefix'] == 'arm2' and spec.namespace == '/arm2'
