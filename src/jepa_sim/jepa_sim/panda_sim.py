"""PyBullet Franka Panda on a table with a cube and a fixed exocentric camera; no ROS.

`PandaSim` is `jepa_sim.arm_sim.ArmSim` with the Panda's kinematics and the scene the shipped world model was
trained on; sim_node's settings (`SimConfig`) live here too. The arm base frame (`panda_link0`) is the world
frame; the table top is the plane z = 0.
"""
from dataclasses import dataclass

from jepa_common.kinematics import ArmKinematics
from jepa_common.settings import setting
from jepa_sim.arm_sim import PHYSICS_HZ, ArmSim, Scene
from jepa_sim.camera import CameraConfig

# Region in front of the arm where a reset may place the cube (x, y), and the end effector (x, y, z).
CUBE_REGION = ((0.4, 0.65), (-0.2, 0.2))
ARM_START_REGION = ((0.35, 0.6), (-0.2, 0.2), (0.15, 0.4))
CUBE_HOME = (0.5, 0.0)
PANDA_SCENE = Scene(cube_region=CUBE_REGION, arm_start_region=ARM_START_REGION, cube_home=CUBE_HOME)


@dataclass
class SimConfig:
    """sim_node's settings (its parameters, all read-only: the world is built once, at start)."""
    gui: bool = setting(False, 'show the PyBullet GUI window (needs a display)')
    real_time_factor: float = setting(1.0, 'simulated seconds per wall-clock second; 0 = as fast as possible',
                                      (0.0, 1000.0))
    physics_rate: float = setting(PHYSICS_HZ, 'physics steps per simulated second (Hz)', (10.0, 10000.0))
    seed: int = setting(0, 'seed of the start state before the first sim/reset', (0, 2**31 - 1))
    randomize_arm: bool = setting(False, 'start from a random arm pose instead of home')
    randomize_cube: bool = setting(False, 'start with the cube at a random place instead of in front of the arm')
    # Publishing happens on whole physics steps (stamps stay exact), so a rate becomes physics_rate / n.
    joint_state_rate: float = setting(120.0, 'joint_states rate (Hz of sim time), rounded to physics_rate / n',
                                      (0.1, 10000.0))
    camera_rate: float = setting(10.0, 'camera image, camera info and pose rate (Hz of sim time), rounded to '
                                 'physics_rate / n', (0.1, 10000.0))
    fast_visuals: bool = setting(True, 'draw the arm with its collision meshes (renders several times faster '
                                 'than the detailed visual meshes)')
    max_stamp_skew: float = setting(5.0, 'a trajectory stamped further than this from sim time (s; another '
                                    'clock) starts on arrival instead', (0.0, 1e9))

    def __post_init__(self):
        for name in ('physics_rate', 'joint_state_rate', 'camera_rate'):
            if not 0 < getattr(self, name) < float('inf'):
                raise ValueError(f'{name} must be a positive number, got {getattr(self, name)}')
        if not 0 <= self.real_time_factor < float('inf'):
            raise ValueError(f'real_time_factor must be >= 0 (0 = as fast as possible), got {self.real_time_factor}')
        if not self.max_stamp_skew >= 0:
            raise ValueError(f'max_stamp_skew must be >= 0, got {self.max_stamp_skew}')


class PandaSim(ArmSim):
    """The simulated Panda. Joint order everywhere is `joint_names` = arm joints then finger joints."""

    def __init__(self, gui: bool = False, camera: CameraConfig | None = None, kinematics: ArmKinematics | None = None,
                 physics_hz: float = PHYSICS_HZ, seed: int = 0, fast_visuals: bool = True):
        super().__init__(kinematics or ArmKinematics(), PANDA_SCENE, gui=gui, camera=camera, physics_hz=physics_hz,
                         seed=seed, fast_visuals=fast_visuals)
