"""robot_description and TF for RViz: config/graph.yaml's robot_state_publisher and camera static transform in
the sim and arm graphs, and `jepa launch` leaving them out, with one notice, where ROS is installed from PyPI.
ROS-free: nothing is started."""
import io
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import yaml

from jepa_bringup import launcher
from jepa_bringup.description import DescriptionError, UrdfValue, materialize, optical_frame_rotation, \
    quaternion_xyzw
from jepa_bringup.graph import GraphError, GraphFile, NodeSpec
from jepa_sim.camera import CameraConfig

CONFIG = Path(__file__).resolve().parents[1] / 'config'
# The simulator's camera as the graph runs it: sim_node's defaults with config/sim.yaml on top.
SIM_CAMERA = {'camera_eye': list(CameraConfig.eye), 'camera_target': list(CameraConfig.target),
              **yaml.safe_load((CONFIG / 'sim.yaml').read_text())['sim']['ros__parameters']}


@pytest.fixture(scope='module')
def graph():
    return GraphFile(CONFIG / 'graph.yaml')


def by_name(specs):
    return {s.name: s for s in specs}


def transform(args: list[str]) -> tuple[dict, np.ndarray]:
    """static_transform_publisher's arguments -> ({flag: value}, rotation matrix of --qx..--qw)."""
    flags = dict(zip(args[::2], args[1::2]))
    x, y, z, w = (float(flags[k]) for k in ('--qx', '--qy', '--qz', '--qw'))
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return flags, rotation


def test_sim_graph_describes_the_simulated_panda_and_the_camera_it_renders_from(graph):
    nodes = by_name(graph.resolve('sim'))
    publisher, camera = nodes['robot_state_publisher'], nodes['camera_tf']
    assert publisher.requires_ros_install and camera.requires_ros_install
    assert (camera.package, camera.executable) == ('tf2_ros', 'static_transform_publisher')
    # The URDF is read when the node starts; then it is the Panda's, with every mesh a file RViz can open.
    assert publisher.parameters['robot_description'] == UrdfValue('robot_description', '')
    urdf = ET.fromstring(materialize(publisher.parameters)['robot_description'])
    meshes = [mesh.get('filename') for mesh in urdf.iter('mesh')]
    assert urdf.get('name') == 'panda' and meshes
    assert all(urlparse(m).scheme == 'file' and Path(unquote(urlparse(m).path)).is_file() for m in meshes)

    flags, rotation = transform(materialize(camera.args))
    # sim_node's frames: its poses are in panda_link0, its images in camera_optical_frame.
    assert (flags['--frame-id'], flags['--child-frame-id']) == ('panda_link0', 'camera_optical_frame')
    eye, target = np.array(SIM_CAMERA['camera_eye']), np.array(SIM_CAMERA['camera_target'])
    assert [float(flags[k]) for k in ('--x', '--y', '--z')] == pytest.approx(eye)
    # Optical frame: z looks at the target, x (image right) is level, y (image down) points downwards.
    assert rotation[:, 2] == pytest.approx((target - eye) / np.linalg.norm(target - eye), abs=1e-6)
    assert rotation[2, 0] == pytest.approx(0.0, abs=1e-6) and rotation[2, 1] < 0


def test_sim_camera_file_moves_the_camera_transform_as_it_moves_the_simulator_camera(graph, tmp_path):
    camera = tmp_path / 'sim_camera.yaml'
    camera.write_text(yaml.safe_dump({'sim': {'ros__parameters': {'camera_eye': [0.4, -0.9, 0.6]}}}))
    nodes = by_name(graph.resolve('sim', {'sim_camera': str(camera)}))
    flags, rotation = transform(materialize(nodes['camera_tf'].args))
    assert [float(flags[k]) for k in ('--x', '--y', '--z')] == pytest.approx([0.4, -0.9, 0.6])
    # The target is still the simulator's: params files override key by key, as for sim_node.
    direction = np.array(SIM_CAMERA['camera_target']) - [0.4, -0.9, 0.6]
    assert rotation[:, 2] == pytest.approx(direction / np.linalg.norm(direction), abs=1e-6)


def test_arm_graph_publishes_the_model_for_fake_arm_and_the_calibrated_camera(graph, tmp_path):
    # A driver's launch file runs its own robot_state_publisher; no calibration, no camera transform.
    assert not {'robot_state_publisher', 'camera_tf'} & set(by_name(graph.resolve('arm', {'arm': 'ur5e'})))

    calibration = tmp_path / 'sim_camera.yaml'
    calibration.write_text(yaml.safe_dump({'sim': {'ros__parameters': {'camera_eye': [1.1, 0.75, 0.85],
                                                                        'camera_target': [0.4, 0.0, 0.2]}}}))
    nodes = by_name(graph.resolve('arm', {'arm': 'ur5e', 'fake_arm': 'true', 'camera_pose': str(calibration)}))
    urdf = str(Path('~/.jepa/arms/ur5e.urdf').expanduser())
    assert nodes['robot_state_publisher'].parameters['robot_description'] == UrdfValue('robot_description', urdf)
    flags = dict(zip(nodes['camera_tf'].args[::2], nodes['camera_tf'].args[1::2]))
    assert flags['--frame-id'] == UrdfValue('root_link', urdf)
    assert flags['--child-frame-id'] == 'camera_color_optical_frame'
    # The plan is drawn in the arm's own base frame (the actor's default, panda_link0, is the simulator's).
    assert nodes['actor'].parameters['frame_id'] == UrdfValue('root_link', urdf)
    assert [float(flags[k]) for k in ('--x', '--y', '--z')] == pytest.approx([1.1, 0.75, 0.85])
    # Resolving needs no URDF (jepa launch --print before the URDF is saved); starting the node does.
    if not Path(urdf).exists():
        with pytest.raises(DescriptionError, match='ur5e.urdf'):
            materialize(nodes['robot_state_publisher'].parameters)

    # urdf:= replaces the preset's URDF for every node: kinematics, limits and the robot model alike.
    panda = by_name(graph.resolve('arm', {'arm': 'ur5e', 'fake_arm': 'true', 'urdf': ''}))
    assert {s.parameters['urdf_path'] for s in panda.values()} == {''}
    assert materialize(panda['actor'].parameters)['frame_id'] == 'panda_link0'
    assert ET.fromstring(materialize(panda['robot_state_publisher'].parameters)['robot_description']).get('name') \
        == 'panda'


def test_camera_pose_that_does_not_exist_is_refused_before_anything_starts(graph, tmp_path):
    with pytest.raises(GraphError, match='does not exist'):
        graph.resolve('arm', {'camera_pose': str(tmp_path / 'missing.yaml')})


def test_optical_frame_rotation_is_a_rotation_and_its_quaternion_rebuilds_it():
    for eye, target in (([1.2, 0.75, 0.75], [0.45, 0.0, 0.15]), ([0.0, 0.0, 1.0], [0.3, 0.0, 0.0]),
                        ([-1.0, 0.2, 0.1], [0.5, 0.1, 0.3])):
        rotation = optical_frame_rotation(eye, target)
        assert rotation.T @ rotation == pytest.approx(np.eye(3), abs=1e-9) and np.linalg.det(rotation) > 0
        quaternion = quaternion_xyzw(rotation)
        args = [t for k, v in zip(('--qx', '--qy', '--qz', '--qw'), quaternion) for t in (k, str(v))]
        assert transform(args)[1] == pytest.approx(rotation, abs=1e-9)
    with pytest.raises(DescriptionError, match='no image orientation'):
        optical_frame_rotation([0.5, 0.0, 1.0], [0.5, 0.0, 0.0])


@pytest.mark.parametrize('key', ['sim', '/sim', '/**/sim', '/**'])
def test_the_camera_pose_is_read_from_any_params_file_section_that_reaches_the_sim_node(tmp_path, key):
    from jepa_bringup.description import camera_pose
    camera = tmp_path / 'sim_camera.yaml'
    camera.write_text(yaml.safe_dump({key: {'ros__parameters': {'camera_eye': [0.4, -0.9, 0.6]}},
                                      'other': {'ros__parameters': {'camera_target': [9.0, 9.0, 9.0]}}}))
    assert camera_pose([str(camera)]) == ([0.4, -0.9, 0.6], list(CameraConfig.target))


def test_jepa_launch_leaves_out_the_nodes_that_need_a_ros_install_with_one_notice(monkeypatch, capsys):
    # Only the venv's packages: robot_state_publisher and tf2_ros are not among them.
    monkeypatch.setenv('AMENT_PREFIX_PATH', sys.prefix)
    assert launcher.main(['sim', '--print']) == 0
    out, err = capsys.readouterr()
    notice = err.strip().splitlines()
    assert len(notice) == 1 and 'robot_state_publisher, camera_tf' in notice[0] and 'RViz' in notice[0]
    assert 'sim_node' in out and 'robot_state_publisher' not in out and 'static_transform_publisher' not in out

    stream = io.StringIO()
    sim = NodeSpec('sim', 'jepa_sim', 'sim_node')
    ros_only = NodeSpec('viewer', 'no_such_ros_package', 'no_such_executable', requires_ros_install=True)
    started = launcher.Launcher([sim, ros_only], printer=launcher.Printer(stream))
    assert [node.spec.name for node in started.nodes] == ['sim']
    assert stream.getvalue().count('\n') == 1 and 'not starting viewer' in stream.getvalue()
    # Any other node that is not installed is an error.
    with pytest.raises(GraphError, match='not found'):
        launcher.Launcher([sim, NodeSpec('other', 'no_such_ros_package', 'no_such_executable')])
