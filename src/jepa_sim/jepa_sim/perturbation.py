"""Perturbations of the simulated world, not of the agent (ROS-free, no PyBullet): a moved camera, a sluggish arm,
a heavier and grippier cube, a recoloured cube.

`Perturbation`'s fields are sim_node parameters, named with PARAMETER_PREFIX (perturb_camera_shift, ...), and live:
the node applies a change at once, between two physics steps. Its defaults are the nominal world.
`named_perturbation(['camera_moved', ...])` builds one from the named perturbations `jepa eval --perturb NAME` sets
(PERTURBATIONS). The referee keeps scoring from the true state: a perturbation changes what the agent sees and how
the world answers its commands, never the privileged poses.
"""
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from jepa_common.settings import check_spans, config_fields, setting
from jepa_sim.camera import CameraConfig

# The nominal cube: its mass (kg), lateral friction coefficient and colour (RGB, 0-1).
CUBE_MASS = 0.1
CUBE_FRICTION = 0.8
CUBE_RGB = (0.9, 0.1, 0.1)


@dataclass
class Perturbation:
    """How the simulated world differs from the nominal one. The camera's shift and rotation are in its optical
    frame (x right, y down, z forward, as the image's axes), so they mean the same wherever the camera stands."""
    camera_shift: tuple = setting((0.0, 0.0, 0.0), 'the camera moved by x, y, z (m, its optical frame: x right, '
                                  'y down, z forward) from where camera_eye puts it', live=True)
    camera_rotation: tuple = setting((0.0, 0.0, 0.0), 'the camera turned about its own centre by this rotation '
                                     'vector x, y, z (degrees, its optical frame; its length is the angle, +y turns '
                                     'it to the right)', live=True)
    arm_tracking: float = setting(1.0, 'share of each commanded trajectory step the arm controller follows (1 = all '
                                  'of it; 0.65: a sluggish arm that stops short of every target)', (0.05, 1.0),
                                  live=True)
    cube_mass_scale: float = setting(1.0, f'the cube\'s mass, times its nominal {CUBE_MASS} kg', (0.01, 100.0),
                                     live=True)
    cube_friction_scale: float = setting(1.0, f'the cube\'s lateral friction, times its nominal {CUBE_FRICTION}',
                                         (0.01, 10.0), live=True)
    cube_rgb: tuple = setting(CUBE_RGB, 'the cube\'s colour red, green, blue (0-1)', live=True)

    PARAMETER_PREFIX = 'perturb_'

    def __post_init__(self):
        for name in ('camera_shift', 'camera_rotation', 'cube_rgb'):
            value = getattr(self, name)
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f'{name} must be 3 numbers, got {value!r}') from None
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(f'{name} must be 3 finite numbers, got {list(value)}')
            setattr(self, name, value)
        for name in ('arm_tracking', 'cube_mass_scale', 'cube_friction_scale'):
            try:
                setattr(self, name, float(getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f'{name} must be a number, got {getattr(self, name)!r}') from None
        if not all(0.0 <= v <= 1.0 for v in self.cube_rgb):
            raise ValueError(f'cube_rgb must be 3 numbers in [0, 1], got {list(self.cube_rgb)}')
        check_spans(self)

    def moved_camera(self, camera: CameraConfig) -> CameraConfig:
        """`camera` shifted and turned about its eye as this perturbation says (the same camera when it does not)."""
        if not any(self.camera_shift) and not any(self.camera_rotation):
            return camera
        eye, target, up = (np.asarray(v, dtype=float) for v in (camera.eye, camera.target, camera.up))
        forward = (target - eye) / np.linalg.norm(target - eye)
        right = np.cross(forward, up)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        optical = np.stack([right, down, forward], axis=1)  # optical frame -> world
        turn = optical @ _rotation(np.radians(self.camera_rotation)) @ optical.T
        new_eye = eye + optical @ np.asarray(self.camera_shift)
        return dataclasses.replace(camera, eye=tuple(new_eye), target=tuple(new_eye + turn @ (target - eye)),
                                   up=tuple(turn @ up))

    def parameters(self) -> dict:
        """{parameter name: value} of every field, as the sim node declares them (lists for the tuples)."""
        return {self.PARAMETER_PREFIX + f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in config_fields(type(self))}


# The named perturbations (jepa eval --perturb NAME): the fields each sets; the others stay nominal.
PERTURBATIONS = {
    # Moved 3 cm to the right (of its image) and turned 4 degrees to the right: the scene slides left in the image.
    'camera_moved': {'camera_shift': (0.03, 0.0, 0.0), 'camera_rotation': (0.0, 4.0, 0.0)},
    # The controller follows 65 % of each commanded step.
    'sluggish_arm': {'arm_tracking': 0.65},
    # Four times the mass, twice the friction.
    'heavy_cube': {'cube_mass_scale': 4.0, 'cube_friction_scale': 2.0},
    # Blue instead of red: against the brown table and the grey arm as clear as the red one.
    'recoloured_cube': {'cube_rgb': (0.1, 0.3, 0.9)},
}


def named_perturbation(names, overrides: dict | None = None) -> Perturbation:
    """The perturbation the named ones make together, with `overrides` ({field: value}) on top; ValueError naming
    an unknown name or field, two names that set the same field, or a value the perturbation refuses."""
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ValueError(f'unknown perturbations {unknown} (known: {", ".join(PERTURBATIONS)})')
    values, set_by = {}, {}
    for name in names:
        for field, value in PERTURBATIONS[name].items():
            if field in set_by and set_by[field] != name:
                raise ValueError(f'perturbations {set_by[field]} and {name} both set {field}')
            values[field], set_by[field] = value, name
    fields = [f.name for f in config_fields(Perturbation)]
    unknown = [f for f in (overrides or {}) if f not in fields]
    if unknown:
        raise ValueError(f'unknown perturbation settings {unknown} (known: {", ".join(fields)})')
    return Perturbation(**{**values, **(overrides or {})})


def apply_perturbation(sim, follower, perturbation: Perturbation) -> None:
    """The world of `sim` (an ArmSim) and its controller `follower` (a TrajectoryFollower) perturbed: the camera and
    the cube are the simulator's, the arm's tracking is the controller's."""
    sim.perturb(perturbation)
    follower.tracking = perturbation.arm_tracking


def _rotation(vector: np.ndarray) -> np.ndarray:
    """The rotation matrix of a rotation vector (radians; Rodrigues' formula)."""
    angle = float(np.linalg.norm(vector))
    if angle == 0.0:
        return np.eye(3)
    x, y, z = vector / angle
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * k @ k
