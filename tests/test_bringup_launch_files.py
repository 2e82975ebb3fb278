"""launch/*.launch.py: they compile, declare exactly the arguments config/graph.yaml gives their graph, and
build one launch_ros Node per resolved node with the graph's name, command-line arguments, parameters (values read
from a URDF read in), remaps, restart policy and niceness.

launch and launch_ros cannot be installed in the pip environment, so this runs the launch files against
minimal stand-ins of the few classes they use, recording what they are given; the real `ros2 launch` runs in
the Docker image.
"""
import py_compile
import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

from jepa_bringup.description import materialize
from jepa_bringup.graph import GraphFile
from jepa_common.kinematics import panda_urdf_path

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILES = {'sim': REPO / 'launch' / 'sim.launch.py', 'arm': REPO / 'launch' / 'arm.launch.py'}


class Recorded:
    """Stands in for a launch class: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class ParameterValue(Recorded):
    def __eq__(self, other):
        return self.args[0] == other and self.kwargs == {'value_type': str}


class LaunchConfiguration(Recorded):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


@pytest.fixture
def launch_stand_ins(monkeypatch):
    classes = {'LaunchDescription': type('LaunchDescription', (Recorded,), {}),
               'DeclareLaunchArgument': type('DeclareLaunchArgument', (Recorded,), {}),
               'OpaqueFunction': type('OpaqueFunction', (Recorded,), {}),
               'Shutdown': type('Shutdown', (Recorded,), {}),
               'Node': type('Node', (Recorded,), {})}
    modules = {'launch': {'LaunchDescription': classes['LaunchDescription']},
               'launch.actions': {k: classes[k] for k in ('DeclareLaunchArgument', 'OpaqueFunction', 'Shutdown')},
               'launch.substitutions': {'LaunchConfiguration': LaunchConfiguration},
               'launch_ros': {}, 'launch_ros.actions': {'Node': classes['Node']},
               'launch_ros.parameter_descriptions': {'ParameterValue': ParameterValue}}
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, 'jepa_bringup.ros_launch', raising=False)
    return classes


def yaml_arguments(graph: str) -> set[str]:
    """The graph's arguments read straight from the YAML (its own and its included graphs')."""
    graphs = yaml.safe_load((REPO / 'config' / 'graph.yaml').read_text())['graphs']
    names, todo = set(), [graph]
    while todo:
        part = graphs[todo.pop()]
        names |= set(part.get('arguments') or [])
        todo += part.get('include') or []
    return names


@pytest.mark.parametrize('graph', sorted(LAUNCH_FILES))
def test_launch_file_compiles(graph, tmp_path):
    py_compile.compile(str(LAUNCH_FILES[graph]), cfile=str(tmp_path / 'out.pyc'), doraise=True)
    py_compile.compile(str(REPO / 'src/jepa_bringup/jepa_bringup/ros_launch.py'), cfile=str(tmp_path / 'r.pyc'),
                       doraise=True)


@pytest.mark.parametrize('graph', sorted(LAUNCH_FILES))
def test_launch_file_declares_the_graph_arguments_and_builds_its_nodes(graph, launch_stand_ins, tmp_path):
    description = runpy.run_path(str(LAUNCH_FILES[graph]))['generate_launch_description']()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs for e in entities if isinstance(e, launch_stand_ins['DeclareLaunchArgument'])}
    # Every graph also takes `namespace`, which graph.py adds.
    assert set(declared) == yaml_arguments(graph) | {'namespace'} and declared
    graph_file = GraphFile(REPO / 'config' / 'graph.yaml')
    for name, arg in graph_file.arguments(graph).items():
        assert declared[name]['default_value'] == arg.default
        assert declared[name]['description'] == arg.description

    # ros2 launch fills the configurations from defaults and command line, then runs the OpaqueFunction.
    values = {name: kwargs['default_value'] for name, kwargs in declared.items()}
    camera = tmp_path / 'sim_camera.yaml'
    camera.write_text(yaml.safe_dump({'sim': {'ros__parameters': {'camera_eye': [1.0, 0.5, 0.8],
                                                                   'camera_target': [0.5, 0.0, 0.1]}}}))
    # The ur5e preset's URDF is not on this machine: robot_state_publisher (fake_arm) gets the Panda's.
    values.update({'sim': {'record': 'true', 'namespace': 'arm1'},
                   'arm': {'fake_arm': 'true', 'arm': 'ur5e', 'urdf': panda_urdf_path(),
                           'camera_pose': str(camera)}}[graph])
    context = types.SimpleNamespace(launch_configurations=values)
    opaque = [e for e in entities if isinstance(e, launch_stand_ins['OpaqueFunction'])]
    assert len(opaque) == 1
    nodes = {n.kwargs['name']: n.kwargs for n in opaque[0].kwargs['function'](context)}
    specs = {s.name: s for s in graph_file.resolve(graph, values)}
    assert set(nodes) == set(specs)
    for name, spec in specs.items():
        node = nodes[name]
        assert (node['package'], node['executable']) == (spec.package, spec.executable)
        assert node['namespace'] == (spec.namespace or None)
        assert node['arguments'] == materialize(spec.args)
        parameters = materialize(spec.parameters)
        assert node['parameters'] == [*spec.params_files, parameters]
        # Strings stay strings (launch_ros would read 'true' as a bool); typed values pass as they are.
        assert all(isinstance(node['parameters'][-1][key], ParameterValue) == isinstance(value, str)
                   for key, value in parameters.items())
        assert node['remappings'] == spec.remaps
        assert node['respawn'] == spec.respawn
        assert node['prefix'] == (f'nice -n {spec.nice}' if spec.nice else None)
        assert bool(node['on_exit']) == spec.required  # a required node's exit shuts the launch down
    gate = nodes['safety']
    assert not gate['respawn'] and isinstance(gate['on_exit'][0], launch_stand_ins['Shutdown'])
    # RViz's robot model and TF, on a ROS install: the URDF's text, the camera under the URDF's root link.
    assert '<robot name="panda"' in nodes['robot_state_publisher']['parameters'][-1]['robot_description'].args[0]
    camera_tf = nodes['camera_tf']['arguments']
    assert camera_tf[camera_tf.index('--frame-id') + 1] == 'panda_link0'
    # namespace:= puts every node under it (the sim case above), with the graph's own clock.
    expected = '/arm1' if graph == 'sim' else None
    assert all(node['namespace'] == expected for node in nodes.values())
    assert all((('/clock', 'clock') in node['remappings']) == (graph == 'sim') for node in nodes.values())
