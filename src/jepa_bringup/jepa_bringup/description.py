"""What RViz needs to place the arm, the plan and the camera: robot_description and TF. ROS-free.

config/graph.yaml gives robot_state_publisher the arm's URDF (`$(robot_description NAME)`) and a
static_transform_publisher the camera's pose (`$(camera_transform NAME)`, `$(root_link NAME)`); both are on a
ROS install only. The URDF is read when its node starts (`UrdfValue`), not when the graph is resolved: graphs
resolve (the graph tests, the Docker checks) where the presets' URDFs do not exist.

The camera pose is the simulator's parameterization that `jepa calibrate` also writes (sim_camera.yaml): the
camera's position (`camera_eye`) and the point at the image centre (`camera_target`) in the arm base frame,
image up towards +z. Its frame is an optical frame (REP 103): z forward, x right, y down in the image.
"""
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

# The params file that places the simulator's camera (next to graph.yaml), and the node its parameters are for.
SIM_PARAMS_FILE = 'sim.yaml'
SIM_NODE = 'sim'
UP = (0.0, 0.0, 1.0)


class DescriptionError(ValueError):
    """A URDF or camera pose that cannot be described; the message names the file."""


def urdf_file(path: str) -> Path:
    """The URDF file a graph names: '' is the simulator's Panda (pybullet_data), like every node's urdf_path."""
    if not path:
        from jepa_common.kinematics import panda_urdf_path
        return Path(panda_urdf_path())
    return Path(os.path.expanduser(path))


def _parse(path: Path) -> ET.ElementTree:
    try:
        return ET.parse(path)
    except (OSError, ET.ParseError) as error:
        raise DescriptionError(f'cannot read URDF {path}: {error}') from error


def robot_description(path: str) -> str:
    """The URDF's text for robot_description. Mesh names RViz could not resolve become file:// URIs: relative
    names, and package:// names whose "package" is a folder next to the URDF (pybullet_data's Panda writes
    package://meshes/...). package:// URIs of installed ROS packages stay as they are."""
    urdf = urdf_file(path)
    tree = _parse(urdf)
    base = urdf.resolve().parent
    for mesh in tree.getroot().iter('mesh'):
        name = mesh.get('filename', '')
        local = name[len('package://'):] if name.startswith('package://') else name
        if '://' not in local and (base / local).is_file():
            mesh.set('filename', (base / local).as_uri())
    return ET.tostring(tree.getroot(), encoding='unicode')


def root_link(path: str) -> str:
    """The URDF's root link: the arm base frame, in which workspace boxes and camera poses are given."""
    root = _parse(urdf_file(path)).getroot()
    children = {child.get('link') for child in root.iter('child')}
    roots = [link.get('name') for link in root.iter('link') if link.get('name') not in children]
    if len(roots) != 1:
        raise DescriptionError(f'URDF {urdf_file(path)} has {len(roots)} root links ({roots}), not one')
    return roots[0]


@dataclass(frozen=True)
class UrdfValue:
    """A parameter or argument read from a URDF when its node starts: `what` is robot_description or
    root_link, `path` the URDF file ('' = the simulator's Panda)."""
    what: str
    path: str

    READERS = {'robot_description': robot_description, 'root_link': root_link}

    def __post_init__(self):
        if self.what not in self.READERS:
            raise ValueError(f'unknown URDF value {self.what!r}; one of {", ".join(self.READERS)}')

    def read(self) -> str:
        return self.READERS[self.what](self.path)


def materialize(value):
    """value with every UrdfValue in it read (lists and dicts element by element)."""
    if isinstance(value, UrdfValue):
        return value.read()
    if isinstance(value, list):
        return [materialize(v) for v in value]
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    return value


def node_parameters(data, node: str) -> dict | None:
    """The ros__parameters a parsed params file gives node `node` (in the root namespace): its sections for all
    nodes (/**), for this node in any namespace (/**/node) and for the node itself (node, /node), later sections
    winning as in the file; None when the file has no section for it."""
    parameters = None
    if isinstance(data, dict):
        for key, section in data.items():
            if str(key) in ('/**', f'/**/{node}', node, f'/{node}') and isinstance(section, dict):
                parameters = {**(parameters or {}), **(section.get('ros__parameters') or {})}
    return parameters


def camera_pose(params_files: list[str]) -> tuple[list[float], list[float]]:
    """(eye, target) of the simulator's camera as these params files set them, later files winning (the way
    sim_node reads its params files), else sim_node's defaults."""
    from jepa_sim.camera import CameraConfig
    eye, target = CameraConfig.eye, CameraConfig.target
    for name in params_files:
        try:
            data = yaml.safe_load(Path(name).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise DescriptionError(f'cannot read camera params file {name}: {error}') from error
        parameters = node_parameters(data, SIM_NODE) or {}
        eye = parameters.get('camera_eye', eye)
        target = parameters.get('camera_target', target)
    try:
        return [float(v) for v in eye], [float(v) for v in target]
    except (TypeError, ValueError) as error:
        raise DescriptionError(f'camera_eye {eye!r} and camera_target {target!r} of {params_files} must be lists '
                               f'of numbers') from error


def optical_frame_rotation(eye, target, up=UP) -> np.ndarray:
    """3x3 rotation whose columns are the optical frame's x (image right), y (image down) and z (forward)
    axes in the base frame, for a camera at eye looking at target with image up towards `up`."""
    forward = np.subtract(target, eye).astype(float)
    right = np.cross(forward, up)
    if np.linalg.norm(forward) < 1e-9 or np.linalg.norm(right) < 1e-9 * np.linalg.norm(forward):
        raise DescriptionError(f'camera at {list(eye)} looking at {list(target)}: no image orientation with up '
                               f'{list(up)} (same points, or looking straight along up)')
    z = forward / np.linalg.norm(forward)
    x = right / np.linalg.norm(right)
    return np.column_stack([x, np.cross(z, x), z])


def quaternion_xyzw(rotation: np.ndarray) -> list[float]:
    """Unit quaternion [x, y, z, w] of a rotation matrix, w >= 0."""
    r = rotation
    # From the largest of the four squared components, which keeps the division well away from zero.
    squares = [1 + r[0, 0] - r[1, 1] - r[2, 2], 1 - r[0, 0] + r[1, 1] - r[2, 2],
               1 - r[0, 0] - r[1, 1] + r[2, 2], 1 + r[0, 0] + r[1, 1] + r[2, 2]]
    i = int(np.argmax(squares))
    s = 2.0 * np.sqrt(squares[i])
    q = {0: [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s],
         1: [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s],
         2: [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s],
         3: [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]}[i]
    q = np.asarray(q) / np.linalg.norm(q)
    return (q if q[3] >= 0 else -q).tolist()


def camera_transform_arguments(params_files: list[str]) -> list[str]:
    """static_transform_publisher's translation and rotation arguments (--x ... --qw) for the optical frame of
    the camera these params files place."""
    eye, target = camera_pose(params_files)
    values = [*eye, *quaternion_xyzw(optical_frame_rotation(eye, target))]
    return [text for flag, value in zip(('--x', '--y', '--z', '--qx', '--qy', '--qz', '--qw'), values)
            for text in (flag, f'{value:.9g}')]
