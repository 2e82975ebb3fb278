"""Mock arm hardware without physics (ROS-free core of fake_arm_node), and the node's settings."""
import math
from dataclasses import dataclass

import numpy as np

from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_EE_FRAME, PANDA_FINGER_JOINTS, PANDA_HOME
from jepa_common.settings import setting


@dataclass
class FakeArmConfig:
    """fake_arm_node's settings (its parameters, all read-only). Joint limits come from the URDF when urdf_path
    names one, else from joint_lower / joint_upper / joint_velocity (arm joints, then fingers)."""
    arm_joints: list[str] = setting(list(PANDA_ARM_JOINTS), 'arm joints, in the order actions use')
    finger_joints: list[str] = setting(list(PANDA_FINGER_JOINTS), 'gripper joints; may be empty')
    urdf_path: str = setting('', "URDF the joint limits come from; '' = joint_lower / joint_upper / joint_velocity")
    ee_frame: str = setting(PANDA_EE_FRAME, "the URDF's end-effector frame")
    joint_lower: list[float] = setting([], 'lower joint limits (rad or m; arm joints, then fingers) without a URDF')
    joint_upper: list[float] = setting([], 'upper joint limits (rad or m; arm joints, then fingers) without a URDF')
    joint_velocity: list[float] = setting([], 'joint velocity limits (rad/s or m/s; arm joints, then fingers) '
                                          'without a URDF')
    home: list[float] = setting(list(PANDA_HOME), 'start positions of the arm joints (rad); the fingers start open')
    publish_rate: float = setting(100.0, 'joint_states rate (Hz, node clock)', (0.1, 10000.0))
    command_latency: float = setting(0.02, "seconds between a trajectory's arrival and its start (bus and "
                                     'controller cycle of a real arm)', (0.0, 10.0))
    tracking_time_constant: float = setting(0.05, 'first-order lag of the joints behind the reference (s)',
                                            (0.0, 10.0))
    max_stamp_skew: float = setting(5.0, "a trajectory stamped further than this from the node's clock (s) "
                                    'starts on arrival instead', (0.0, 1e9))

    def __post_init__(self):
        if not self.arm_joints:
            raise ValueError('arm_joints must name at least one joint')
        if len(self.home) != len(self.arm_joints):
            raise ValueError(f'home has {len(self.home)} values for {len(self.arm_joints)} arm joints '
                             f'{list(self.arm_joints)}')
        if not all(math.isfinite(v) for v in self.home):
            raise ValueError(f'home must be finite numbers, got {list(self.home)}')
        if not 0 < self.publish_rate < math.inf:
            raise ValueError(f'publish_rate must be positive, got {self.publish_rate}')
        for name in ('command_latency', 'tracking_time_constant', 'max_stamp_skew'):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')


class FakeArm:
    """Joints that follow their target with a first-order lag (time constant, s), rate-limited per joint."""

    def __init__(self, initial: np.ndarray, max_velocity: np.ndarray, time_constant: float):
        self.position = np.array(initial, dtype=float)
        self.velocity = np.zeros_like(self.position)
        self.max_velocity = np.asarray(max_velocity, dtype=float)
        self.time_constant = float(time_constant)

    def update(self, target: np.ndarray, dt: float) -> None:
        if dt <= 0:
            return
        gain = 1.0 if self.time_constant <= 0 else 1.0 - math.exp(-dt / self.time_constant)
        step = np.clip((target - self.position) * gain, -self.max_velocity * dt, self.max_velocity * dt)
        self.position += step
        self.velocity = step / dt
