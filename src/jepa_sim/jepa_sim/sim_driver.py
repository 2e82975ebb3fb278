"""sim_driver_node's settings and its arm (ROS-free): a simulated arm that stands in for a real arm's driver.

The arm is `ArmSim` with the kinematics the arm preset gives every node of the `arm` graph (URDF, joints,
end-effector frame, home, workspace box); the scene (the cube's region, the referee's start region) lies inside the
workspace box.
"""
import math
import os
from dataclasses import dataclass

from jepa_common.kinematics import DEFAULT_WORKSPACE, PANDA_ARM_JOINTS, PANDA_EE_FRAME, PANDA_FINGER_JOINTS, \
    ArmKinematics
from jepa_common.settings import setting
from jepa_sim.arm_sim import PHYSICS_HZ, ArmSim, Scene
from jepa_sim.camera import CameraConfig

# The privileged interface's namespace (relative): the true state and seeded resets, for an evaluation referee
# only. No driver of a physical arm has it, and no node of the agent's graph uses it.
REFEREE_NAMESPACE = 'referee'


@dataclass
class SimDriverConfig:
    """sim_driver_node's settings (its parameters, all read-only: the world is built once, at start)."""
    urdf_path: str = setting('', "the arm's URDF; '' = the simulator's Panda")
    arm_joints: list[str] = setting(list(PANDA_ARM_JOINTS), 'arm joints, base to tool (the driver\'s names)')
    finger_joints: list[str] = setting(list(PANDA_FINGER_JOINTS), 'gripper joints the controller commands')
    ee_frame: str = setting(PANDA_EE_FRAME, "the URDF's end-effector frame (the referee's end-effector pose)")
    home: list[float] = setting([], 'start positions of the arm joints (rad); [] = the Panda\'s home')
    workspace_min: list[float] = setting([lo for lo, _ in DEFAULT_WORKSPACE],
                                         'workspace box corner x, y, z (m, base frame): the scene lies inside it')
    workspace_max: list[float] = setting([hi for _, hi in DEFAULT_WORKSPACE],
                                         'workspace box corner x, y, z (m, base frame): the scene lies inside it')
    gui: bool = setting(False, 'show the PyBullet GUI window (needs a display)')
    physics_rate: float = setting(PHYSICS_HZ, 'physics steps per second (Hz)', (10.0, 10000.0))
    # Publishing happens on whole physics steps, so a rate becomes physics_rate / n.
    joint_state_rate: float = setting(120.0, 'joint_states rate (Hz), rounded to physics_rate / n', (0.1, 10000.0))
    camera_rate: float = setting(10.0, 'camera image and camera info rate (Hz), rounded to physics_rate / n',
                                 (0.1, 10000.0))
    fast_visuals: bool = setting(True, 'draw the arm with its collision meshes (renders faster than the visual '
                                 'meshes)')
    seed: int = setting(0, 'seed of the start state (with randomize_cube)', (0, 2**31 - 1))
    randomize_cube: bool = setting(False, 'start with the cube at a random place instead of the workspace centre')
    max_stamp_skew: float = setting(5.0, "a trajectory stamped further than this from the driver's clock (s) "
                                    'starts on arrival instead', (0.0, 1e9))
    referee: bool = setting(False, f'also serve the privileged {REFEREE_NAMESPACE}/ interface (true end-effector '
                            'and cube poses, seeded resets, renders of other states) for an evaluation referee; no '
                            'real driver has it and the agent must never use it')

    def __post_init__(self):
        if not self.arm_joints:
            raise ValueError('arm_joints must name at least one joint')
        if self.home and len(self.home) != len(self.arm_joints):
            raise ValueError(f'home has {len(self.home)} values for {len(self.arm_joints)} arm joints '
                             f'{list(self.arm_joints)}')
        if not all(math.isfinite(v) for v in self.home):
            raise ValueError(f'home must be finite numbers, got {list(self.home)}')
        if len(self.workspace_min) != 3 or len(self.workspace_max) != 3 or \
                not all(lo < hi for lo, hi in zip(self.workspace_min, self.workspace_max)):
            raise ValueError(f'workspace_min {list(self.workspace_min)} and workspace_max {list(self.workspace_max)} '
                             'must be x, y, z corners with min < max on each axis')
        for name in ('physics_rate', 'joint_state_rate', 'camera_rate'):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f'{name} must be a positive number, got {getattr(self, name)}')
        if not 0 <= self.max_stamp_skew < math.inf:
            raise ValueError(f'max_stamp_skew must be >= 0, got {self.max_stamp_skew}')

    @property
    def workspace(self) -> tuple:
        return tuple(zip(self.workspace_min, self.workspace_max))

    def kinematics(self) -> ArmKinematics:
        return ArmKinematics(os.path.expanduser(self.urdf_path) if self.urdf_path else None,
                             arm_joints=self.arm_joints, finger_joints=self.finger_joints, ee_frame=self.ee_frame,
                             home=self.home or None, workspace=self.workspace)


def driver_arm(config: SimDriverConfig, camera: CameraConfig | None = None) -> ArmSim:
    """The simulated arm these settings describe, at home, the cube on the table inside the workspace box."""
    arm = ArmSim(config.kinematics(), Scene.inside(config.workspace), gui=config.gui, camera=camera,
                 physics_hz=config.physics_rate, fast_visuals=config.fast_visuals)
    arm.reset(config.seed, randomize_arm=False, randomize_cube=config.randomize_cube)
    return arm
