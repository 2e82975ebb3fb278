"""The simulator's fixed camera: where it is, what it sees, and its pinhole model (ROS-free, no PyBullet)."""
from dataclasses import dataclass

import numpy as np

from jepa_common.settings import config_fields, setting


@dataclass
class CameraConfig:
    """The fixed camera. The fields declared with setting() are sim_node parameters, named with PARAMETER_PREFIX
    (camera_width, ...). The defaults are the shipped world model's camera, framed on the workspace: every
    end-effector position the tasks use stays in view and the 5-cm cube spans ~4-5 pixels (~3 in the model's
    64x64 input)."""
    width: int = setting(96, 'image width (pixels)', (1, 4096))
    height: int = setting(96, 'image height (pixels)', (1, 4096))
    fov_deg: float = setting(40.0, 'vertical field of view (degrees)', (1.0, 179.0))
    # Front-right, above: sees the table in front of the arm, the cube and the gripper from the side.
    eye: tuple = setting((1.2, 0.75, 0.75), 'camera position x, y, z (m, arm base frame)')
    target: tuple = setting((0.45, 0.0, 0.15), 'the point at the image centre x, y, z (m, arm base frame)')
    up: tuple = (0.0, 0.0, 1.0)
    near: float = 0.05
    far: float = 3.0

    PARAMETER_PREFIX = 'camera_'

    @classmethod
    def from_parameters(cls, value_of) -> 'CameraConfig':
        """The camera the sim node's parameters describe: value_of(parameter name, default) -> value, with the
        defaults of this class (a params file's dict.get, as the node's params files hold them)."""
        values = {}
        for field in config_fields(cls):
            default = getattr(cls, field.name)
            # ROS parameters hold lists, not tuples.
            values[field.name] = value_of(cls.PARAMETER_PREFIX + field.name,
                                          list(default) if isinstance(default, tuple) else default)
        return cls(**values)

    def __post_init__(self):
        self.eye, self.target, self.up = (tuple(float(v) for v in point) for point in (self.eye, self.target, self.up))
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f'camera size must be positive, got {self.width}x{self.height}')
        if not 0 < self.fov_deg < 180:
            raise ValueError(f'camera field of view must be in (0, 180) degrees, got {self.fov_deg}')
        if len(self.eye) != 3 or len(self.target) != 3 or np.allclose(self.eye, self.target):
            raise ValueError(f'camera eye {self.eye} and target {self.target} must be distinct 3D points')

    def intrinsics(self) -> np.ndarray:
        """3x3 pinhole matrix K matching PyBullet's projection (square pixels, centred principal point)."""
        f = (self.height / 2.0) / np.tan(np.radians(self.fov_deg) / 2.0)
        return np.array([[f, 0.0, self.width / 2.0], [0.0, f, self.height / 2.0], [0.0, 0.0, 1.0]])
