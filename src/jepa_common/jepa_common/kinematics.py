"""Arm kinematics from a URDF (pinocchio): joint limits, end-effector FK, and the `ee_delta` action mapping.

The action space (docs/architecture.md) is `[dx, dy, dz, gripper]`: a Cartesian step of the end effector in
the arm base frame per control period, with the tool kept pointing down at a fixed yaw, and a gripper
command in [-1 (closed), 1 (open)]. `ArmKinematics.action_to_joint_target` turns that into joint targets
with a few damped-least-squares IK iterations, so every consumer (actor, collectors, safety gate) maps
actions to joints the same way.
"""
import os
import xml.etree.ElementTree as ET
from typing import Sequence

import numpy as np
import pinocchio as pin

PANDA_ARM_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))
PANDA_FINGER_JOINTS = ('panda_finger_joint1', 'panda_finger_joint2')
# The Panda's "ready" pose: tool pointing down above the table centre, well inside all limits.
PANDA_HOME = (0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4)
# pybullet_data's panda.urdf has a frame between the fingertips; other URDFs may name it differently.
PANDA_EE_FRAME = 'panda_grasptarget'
# Tool z axis pointing down (-z of the base), tool x along base x: the fixed orientation of ee_delta.
TOOL_DOWN = np.diag([1.0, -1.0, -1.0])
# End-effector workspace box in the base frame (x, y, z), metres.
DEFAULT_WORKSPACE = ((0.25, 0.75), (-0.35, 0.35), (0.02, 0.6))
MAX_STEP = 0.03
# Position range given to continuous (unlimited) joints: one turn either way keeps every limit finite.
CONTINUOUS_RANGE = 2 * np.pi


def panda_urdf_path() -> str:
    import pybullet_data
    return os.path.join(pybullet_data.getDataPath(), 'franka_panda', 'panda.urdf')


def _revolute_urdf(path: str) -> str:
    """The URDF's text with continuous joints made revolute within +-CONTINUOUS_RANGE: pinocchio gives a
    continuous joint two coordinates (cos, sin), which would break the one-number-per-joint interface."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as error:
        raise ValueError(f'cannot parse URDF {path}: {error}') from error
    for joint in tree.getroot().iter('joint'):
        if joint.get('type') == 'continuous':
            joint.set('type', 'revolute')
            limit = joint.find('limit')
            if limit is None:
                limit = ET.SubElement(joint, 'limit', effort='0', velocity='1.0')
            limit.set('lower', str(-CONTINUOUS_RANGE))
            limit.set('upper', str(CONTINUOUS_RANGE))
    return ET.tostring(tree.getroot(), encoding='unicode')


class ArmKinematics:
    """Kinematics of one arm (+ parallel gripper) read from its URDF.

    Attributes (numpy arrays, in the order of `arm_joints` / `finger_joints`): `lower`, `upper`, `velocity`,
    `finger_lower`, `finger_upper`, `finger_velocity`; `limits` maps every joint name to (lower, upper, velocity).
    """

    def __init__(self, urdf_path: str | None = None, arm_joints: Sequence[str] = PANDA_ARM_JOINTS,
                 finger_joints: Sequence[str] = PANDA_FINGER_JOINTS, ee_frame: str = PANDA_EE_FRAME,
                 ee_offset: Sequence[float] = (0.0, 0.0, 0.0), home: Sequence[float] | None = None,
                 tool_rotation: np.ndarray = TOOL_DOWN, max_step: float = MAX_STEP,
                 workspace=DEFAULT_WORKSPACE, ik_iterations: int = 4, damping: float = 1e-3,
                 orientation_weight: float = 0.5, posture_gain: float = 0.05):
        self.urdf_path = os.path.expanduser(urdf_path) if urdf_path else panda_urdf_path()
        if not os.path.isfile(self.urdf_path):
            raise FileNotFoundError(f'URDF not found: {self.urdf_path}')
        full = pin.buildModelFromXML(_revolute_urdf(self.urdf_path))
        self.arm_joints = tuple(arm_joints)
        self.finger_joints = tuple(finger_joints)
        unknown = [n for n in (*self.arm_joints, *self.finger_joints) if not full.existJointName(n)]
        if unknown:
            raise ValueError(f'joints {unknown} are not in {self.urdf_path}')
        if not full.existFrame(ee_frame):
            raise ValueError(f'end-effector frame {ee_frame!r} is not in {self.urdf_path}')

        def limits_of(names):
            ids = [full.joints[full.getJointId(n)].idx_q for n in names]
            return (full.lowerPositionLimit[ids].copy(), full.upperPositionLimit[ids].copy(),
                    full.velocityLimit[ids].copy())

        self.lower, self.upper, self.velocity = limits_of(self.arm_joints)
        self.finger_lower, self.finger_upper, self.finger_velocity = limits_of(self.finger_joints)
        self.limits = {n: (float(lo), float(hi), float(v)) for n, lo, hi, v in zip(
            (*self.arm_joints, *self.finger_joints), np.r_[self.lower, self.finger_lower],
            np.r_[self.upper, self.finger_upper], np.r_[self.velocity, self.finger_velocity])}

        # A reduced model with only the arm joints free makes q and the Jacobian columns match arm_joints.
        locked = [j for j in range(1, full.njoints) if full.names[j] not in self.arm_joints]
        self.model = pin.buildReducedModel(full, locked, pin.neutral(full))
        order = [self.model.joints[self.model.getJointId(n)].idx_q for n in self.arm_joints]
        if order != list(range(len(self.arm_joints))):
            # pinocchio orders joints by the kinematic tree; keep a permutation for non-chain orders.
            self._perm = np.array(order)
        else:
            self._perm = None
        parent = self.model.frames[self.model.getFrameId(ee_frame)]
        offset = pin.SE3(np.eye(3), np.asarray(ee_offset, dtype=float))
        self.ee_frame_id = self.model.addFrame(pin.Frame('jepa_tcp', parent.parentJoint, parent.parentFrame,
                                                         parent.placement * offset, pin.FrameType.OP_FRAME))
        self.data = self.model.createData()

        if home is None:
            # Without one (a node that never goes home, like the safety gate): the Panda's for a 7-joint arm, else
            # the arm's zero pose within its limits.
            home = PANDA_HOME if len(self.arm_joints) == len(PANDA_HOME) else np.clip(0.0, self.lower, self.upper)
        self.home = np.asarray(home, dtype=float)
        if self.home.shape != (len(self.arm_joints),):
            raise ValueError(f'home has {self.home.size} values for {len(self.arm_joints)} arm joints')
        self.tool_rotation = np.asarray(tool_rotation, dtype=float)
        self.max_step = float(max_step)
        self.workspace = np.asarray(workspace, dtype=float)
        self.ik_iterations = int(ik_iterations)
        self.damping = float(damping)
        self._weights = np.array([1.0, 1.0, 1.0] + [orientation_weight] * 3)
        self.posture_gain = float(posture_gain)

    # -- conversions between our joint order and pinocchio's
    def _to_pin(self, q_arm: np.ndarray) -> np.ndarray:
        if self._perm is None:
            return q_arm
        q = np.empty_like(q_arm)
        q[self._perm] = q_arm
        return q

    def _from_pin(self, q: np.ndarray) -> np.ndarray:
        return q if self._perm is None else q[self._perm]

    def _check_q(self, q_arm) -> np.ndarray:
        q_arm = np.asarray(q_arm, dtype=float)
        if q_arm.shape[-1] != len(self.arm_joints):
            raise ValueError(f'expected {len(self.arm_joints)} arm joint positions, got shape {q_arm.shape}')
        if not np.all(np.isfinite(q_arm)):
            raise ValueError('arm joint positions contain NaN or inf')
        return q_arm

    def ee_pose(self, q_arm) -> tuple[np.ndarray, np.ndarray]:
        """(xyz, 3x3 rotation) of the end effector in the base frame for one configuration."""
        q = self._to_pin(self._check_q(q_arm))
        pin.forwardKinematics(self.model, self.data, q)
        placement = pin.updateFramePlacement(self.model, self.data, self.ee_frame_id)
        return placement.translation.copy(), placement.rotation.copy()

    def fk(self, q_arm) -> np.ndarray:
        """End-effector xyz in the base frame; q_arm (..., n_arm) -> (..., 3)."""
        q_arm = self._check_q(q_arm)
        flat = q_arm.reshape(-1, q_arm.shape[-1])
        out = np.empty((flat.shape[0], 3))
        for i, q in enumerate(flat):
            pin.forwardKinematics(self.model, self.data, self._to_pin(q))
            out[i] = pin.updateFramePlacement(self.model, self.data, self.ee_frame_id).translation
        return out.reshape(*q_arm.shape[:-1], 3)

    def position_jacobian(self, q_arm) -> np.ndarray:
        """d(ee xyz)/d(q_arm): (3, n_arm), columns in the order of arm_joints (analytic, base frame)."""
        q = self._to_pin(self._check_q(q_arm))
        pin.computeJointJacobians(self.model, self.data, q)
        pin.updateFramePlacement(self.model, self.data, self.ee_frame_id)
        jac = pin.getFrameJacobian(self.model, self.data, self.ee_frame_id, pin.LOCAL_WORLD_ALIGNED)[:3]
        return jac if self._perm is None else jac[:, self._perm]

    def clip_action(self, action) -> np.ndarray:
        """Clip (..., 4) actions to the action space: steps to +-max_step, gripper to [-1, 1]. NaN -> 0."""
        action = np.nan_to_num(np.asarray(action, dtype=float), nan=0.0, posinf=np.inf, neginf=-np.inf)
        if action.shape[-1] != 4:
            raise ValueError(f'ee_delta actions have 4 values [dx, dy, dz, gripper], got shape {action.shape}')
        bound = np.array([self.max_step] * 3 + [1.0])
        return np.clip(action, -bound, bound)

    def clip_joints(self, q_arm) -> np.ndarray:
        return np.clip(q_arm, self.lower, self.upper)

    def gripper_to_fingers(self, gripper) -> np.ndarray:
        """Gripper command in [-1, 1] -> finger joint targets (-1 closed = lower limit, 1 open = upper)."""
        opening = (np.clip(np.asarray(gripper, dtype=float), -1.0, 1.0)[..., None] + 1.0) / 2.0
        return self.finger_lower + opening * (self.finger_upper - self.finger_lower)

    def fingers_to_gripper(self, fingers) -> np.ndarray:
        span = self.finger_upper - self.finger_lower
        return np.mean((np.asarray(fingers, dtype=float) - self.finger_lower) / span, axis=-1) * 2.0 - 1.0

    def clip_to_workspace(self, xyz_target, xyz_current) -> np.ndarray:
        """Keep a target inside the workspace box, without ever pulling an outside end effector in by a jump:
        along each axis the target may not go further out than the current position is."""
        lo = np.minimum(self.workspace[:, 0], xyz_current)
        hi = np.maximum(self.workspace[:, 1], xyz_current)
        return np.clip(xyz_target, lo, hi)

    def ik(self, q_seed, xyz_target, rotation: np.ndarray | None = None, iterations: int | None = None) -> np.ndarray:
        """Damped-least-squares IK for one configuration: reach xyz_target with the tool at `rotation`
        (default: pointing down at fixed yaw), staying within joint limits. Returns joint positions."""
        rotation = self.tool_rotation if rotation is None else rotation
        q = self._to_pin(np.clip(self._check_q(q_seed), self.lower, self.upper))
        lower, upper = self._to_pin(self.lower), self._to_pin(self.upper)
        home = self._to_pin(self.home)
        w = self._weights
        eye = np.eye(6)
        for _ in range(self.ik_iterations if iterations is None else iterations):
            pin.computeJointJacobians(self.model, self.data, q)
            placement = pin.updateFramePlacement(self.model, self.data, self.ee_frame_id)
            error = np.concatenate([xyz_target - placement.translation,
                                    pin.log3(rotation @ placement.rotation.T)]) * w
            jac = pin.getFrameJacobian(self.model, self.data, self.ee_frame_id, pin.LOCAL_WORLD_ALIGNED) * w[:, None]
            jjt_inv = np.linalg.inv(jac @ jac.T + self.damping * eye)
            pinv = jac.T @ jjt_inv
            # The redundant (7th) degree of freedom drifts towards home, so long rollouts stay well-conditioned.
            dq = pinv @ error + (np.eye(len(q)) - pinv @ jac) @ (self.posture_gain * (home - q))
            q = np.clip(q + dq, lower, upper)
        return self._from_pin(q)

    def action_to_joint_target(self, q_arm, action) -> tuple[np.ndarray, np.ndarray]:
        """ee_delta action at configuration q_arm -> (arm joint targets, finger joint targets).

        Accepts one configuration (n_arm,) with one action (4,), or batches (B, n_arm) and (B, 4).
        The step is clipped to the action space and kept inside the workspace box.
        """
        q_arm = self._check_q(q_arm)
        action = self.clip_action(action)
        if q_arm.ndim == 1:
            return self._one_target(q_arm, action), self.gripper_to_fingers(action[3])
        if action.shape[:-1] != q_arm.shape[:-1]:
            raise ValueError(f'batch shapes differ: q_arm {q_arm.shape}, action {action.shape}')
        flat_q, flat_a = q_arm.reshape(-1, q_arm.shape[-1]), action.reshape(-1, 4)
        targets = np.stack([self._one_target(q, a) for q, a in zip(flat_q, flat_a)])
        return targets.reshape(q_arm.shape), self.gripper_to_fingers(action[..., 3])

    def _one_target(self, q_arm: np.ndarray, action: np.ndarray) -> np.ndarray:
        xyz = self.fk(q_arm)
        target = self.clip_to_workspace(xyz + action[:3], xyz)
        return self.ik(q_arm, target)
