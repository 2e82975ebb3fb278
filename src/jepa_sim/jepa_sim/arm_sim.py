"""A PyBullet arm on a table with a cube and a fixed exocentric camera, for any arm a URDF describes; no ROS.

In the style of LeRobot's `Robot`: this class is the hardware (joints, motors, camera); the ROS nodes are thin
adapters. The arm's URDF, joints, end-effector frame and home come from its `ArmKinematics` (the same pinocchio
model the agent plans with), the scene's regions from a `Scene`. The arm base frame (the URDF's root link) is the
world frame; the table top is the plane z = 0. jepa_sim.panda_sim.PandaSim is this class with the Panda's
defaults; jepa_sim.sim_driver_node puts another arm behind a driver's interface.
"""
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
import pinocchio as pin
import pybullet as p
import pybullet_data

from jepa_common.kinematics import ArmKinematics
from jepa_sim.camera import CameraConfig
from jepa_sim.perturbation import CUBE_FRICTION, CUBE_MASS, Perturbation

PHYSICS_HZ = 240.0
CUBE_SIZE = 0.05
# PyBullet position-control gains. With the reference velocity fed forward, the arm ends a 3 cm, 0.1 s
# ee_delta step within ~1 mm (the default gain without feed-forward lags ~1 cm behind).
POSITION_GAIN = 0.3
VELOCITY_GAIN = 1.0


@dataclass(frozen=True)
class Scene:
    """Where a reset may put things, in the arm base frame (metres)."""
    cube_region: tuple          # ((x lo, x hi), (y lo, y hi)) of the cube's centre
    arm_start_region: tuple     # ((x lo, x hi), (y lo, y hi), (z lo, z hi)) of the end effector
    cube_home: tuple            # (x, y) of the cube without randomization

    @classmethod
    def inside(cls, workspace, margin: float = 0.05) -> 'Scene':
        """A scene inside an end-effector workspace box ((x lo, x hi), (y lo, y hi), (z lo, z hi)): the arm
        starts `margin` inside it, the cube lies under its x-y area, `margin` inside."""
        box = np.asarray(workspace, dtype=float)
        inner = np.stack([box[:, 0] + margin, box[:, 1] - margin], axis=1)
        if np.any(inner[:, 0] >= inner[:, 1]):
            raise ValueError(f'workspace box {box.tolist()} is too small for a scene {margin} m inside it')
        centre = inner.mean(axis=1)
        return cls(cube_region=tuple(map(tuple, inner[:2])), arm_start_region=tuple(map(tuple, inner)),
                   cube_home=(float(centre[0]), float(centre[1])))


@dataclass
class JointStates:
    names: tuple
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


def urdf_mimics(urdf_path: str) -> dict[str, tuple[str, float, float]]:
    """The URDF's mimic joints: {joint: (the joint it follows, multiplier, offset)}."""
    mimics = {}
    for joint in ET.parse(urdf_path).getroot().iter('joint'):
        mimic = joint.find('mimic')
        if mimic is not None:
            mimics[joint.get('name')] = (mimic.get('joint'), float(mimic.get('multiplier', 1.0)),
                                         float(mimic.get('offset', 0.0)))
    return mimics


class ArmSim:
    """The simulated arm. Joint order everywhere is `joint_names` = arm joints then finger (gripper) joints.

    PyBullet does not enforce URDF mimic joints: a mimic joint the arm does not command itself (a gripper's
    linkage driven by one joint) is set and driven along with the joint it follows."""

    def __init__(self, kinematics: ArmKinematics, scene: Scene, gui: bool = False, camera: CameraConfig | None = None,
                 physics_hz: float = PHYSICS_HZ, seed: int = 0, fast_visuals: bool = True):
        """fast_visuals draws the arm with its (coarse) collision meshes: detailed visual meshes (the Panda's
        have about a million triangles) make even a 64x64 software render ~20 ms instead of ~3 ms."""
        self.kinematics = kinematics
        self.scene = scene
        self.camera = camera or CameraConfig()
        self.physics_hz = float(physics_hz)
        self.dt = 1.0 / self.physics_hz
        self.steps = 0
        if gui and os.name == 'posix' and not os.environ.get('DISPLAY'):
            # PyBullet exits the whole process when it cannot open its window; say why first.
            raise RuntimeError('the PyBullet GUI needs a display (DISPLAY is not set); run with gui:=false')
        self.client = p.connect(p.GUI if gui else p.DIRECT)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
        p.setGravity(0, 0, -9.81, physicsClientId=self.client)
        p.setTimeStep(self.dt, physicsClientId=self.client)
        # The table top is z = 0, the arm base stands on it.
        p.loadURDF('plane.urdf', [0, 0, -0.625], physicsClientId=self.client)
        table = p.loadURDF('table/table.urdf', [0.5, 0, -0.625], physicsClientId=self.client)
        self.robot = self._load_robot(self.kinematics.urdf_path, fast_visuals)
        half = CUBE_SIZE / 2
        # Mass, friction and colour: perturb().
        self.cube = p.createMultiBody(
            baseMass=CUBE_MASS,
            baseCollisionShapeIndex=p.createCollisionShape(p.GEOM_BOX, halfExtents=[half] * 3,
                                                           physicsClientId=self.client),
            baseVisualShapeIndex=p.createVisualShape(p.GEOM_BOX, halfExtents=[half] * 3, physicsClientId=self.client),
            basePosition=[*scene.cube_home, half], physicsClientId=self.client)

        index = {p.getJointInfo(self.robot, j, physicsClientId=self.client)[1].decode(): j
                 for j in range(p.getNumJoints(self.robot, physicsClientId=self.client))}
        self.arm_joints = self.kinematics.arm_joints
        self.finger_joints = self.kinematics.finger_joints
        self.joint_names = (*self.arm_joints, *self.finger_joints)
        missing = [n for n in self.joint_names if n not in index]
        if missing:
            raise ValueError(f'joints {missing} are not in PyBullet\'s model of {self.kinematics.urdf_path}')
        self._joint_ids = [index[n] for n in self.joint_names]
        for finger in self.finger_joints:
            p.changeDynamics(self.robot, index[finger], lateralFriction=1.5, physicsClientId=self.client)
        # Mimic joints nobody commands follow their source: (their PyBullet id, source column, multiplier, offset).
        column = {n: i for i, n in enumerate(self.joint_names)}
        self._mimics = [(index[name], column[source], multiplier, offset)
                        for name, (source, multiplier, offset) in urdf_mimics(self.kinematics.urdf_path).items()
                        if name in index and name not in column and source in column]
        k = self.kinematics
        self.lower = np.r_[k.lower, k.finger_lower]
        self.upper = np.r_[k.upper, k.finger_upper]
        self.max_velocity = np.r_[k.velocity, k.finger_velocity]
        self.max_force = np.array([p.getJointInfo(self.robot, j, physicsClientId=self.client)[10]
                                   for j in self._joint_ids])
        self._colour_scene(table, first_hand_link=max(self._joint_ids[:len(self.arm_joints)]) + 1)
        if gui:
            p.resetDebugVisualizerCamera(1.4, 50, -35, [0.45, 0.0, 0.1], physicsClientId=self.client)
        # The camera as configured; perturb() may move the one that renders (self.camera).
        self.nominal_camera = self.camera
        self._projection = p.computeProjectionMatrixFOV(self.camera.fov_deg, self.camera.width / self.camera.height,
                                                        self.camera.near, self.camera.far)
        self.perturb(Perturbation())
        self.commanded = np.zeros(len(self.joint_names))
        self.reset(seed, randomize_arm=False, randomize_cube=False)

    def _load_robot(self, urdf_path: str, fast_visuals: bool) -> int:
        if not fast_visuals:
            return p.loadURDF(urdf_path, [0, 0, 0], useFixedBase=True, flags=p.URDF_USE_INERTIA_FROM_FILE,
                              physicsClientId=self.client)
        tree = ET.parse(urdf_path)
        for link in tree.getroot().iter('link'):
            visual, collision = link.find('visual'), link.find('collision')
            if visual is not None and collision is not None and collision.find('geometry') is not None:
                visual.remove(visual.find('geometry'))
                visual.append(collision.find('geometry'))
        # The copy lives elsewhere, so relative and package:// mesh paths must become absolute.
        base = os.path.dirname(os.path.abspath(urdf_path))
        for mesh in tree.getroot().iter('mesh'):
            filename = mesh.get('filename', '')
            if filename.startswith('package://'):
                filename = filename[len('package://'):]
            if not os.path.isabs(filename):
                mesh.set('filename', os.path.join(base, filename))
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, os.path.basename(urdf_path))
            tree.write(copy)
            return p.loadURDF(copy, [0, 0, 0], useFixedBase=True, flags=p.URDF_USE_INERTIA_FROM_FILE,
                              physicsClientId=self.client)

    def _colour_scene(self, table: int, first_hand_link: int) -> None:
        """Contrasting colours: a brown table, a light arm with a dark hand (the links after the last arm
        joint); the cube's (red) is perturb()'s."""
        p.changeVisualShape(table, -1, rgbaColor=[0.55, 0.45, 0.35, 1], physicsClientId=self.client)
        hand_links = set(range(first_hand_link, p.getNumJoints(self.robot, physicsClientId=self.client)))
        for link in range(-1, p.getNumJoints(self.robot, physicsClientId=self.client)):
            colour = [0.25, 0.25, 0.28, 1] if link in hand_links else [0.9, 0.9, 0.9, 1]
            p.changeVisualShape(self.robot, link, rgbaColor=colour, physicsClientId=self.client)

    def perturb(self, perturbation: Perturbation) -> None:
        """Make the world differ from the nominal one as `perturbation` says (Perturbation() restores it): the
        camera moved, the cube's mass (its inertia with it), friction and colour. Takes effect at the next step and
        render. The arm's tracking is the trajectory follower's (TrajectoryFollower.tracking), not the
        simulator's."""
        self.perturbation = perturbation
        self.camera = perturbation.moved_camera(self.nominal_camera)
        self._view = p.computeViewMatrix(self.camera.eye, self.camera.target, self.camera.up)
        mass = CUBE_MASS * perturbation.cube_mass_scale
        p.changeDynamics(self.cube, -1, mass=mass, localInertiaDiagonal=[mass * CUBE_SIZE ** 2 / 6] * 3,
                         lateralFriction=CUBE_FRICTION * perturbation.cube_friction_scale, physicsClientId=self.client)
        p.changeVisualShape(self.cube, -1, rgbaColor=[*perturbation.cube_rgb, 1.0], physicsClientId=self.client)

    # -- world state
    def reset(self, seed: int, randomize_arm: bool = True,
              randomize_cube: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Put the arm and cube in a start state drawn from `seed`. Returns (joint positions, cube pose
        [x, y, z, qx, qy, qz, qw]). Sim time keeps running (a ROS clock must not go backwards)."""
        rng = np.random.default_rng(seed)
        k = self.kinematics
        if randomize_arm:
            xyz = rng.uniform(*np.array(self.scene.arm_start_region).T)
            q_arm = k.ik(k.home, xyz, iterations=100)
        else:
            q_arm = k.home.copy()
        if randomize_cube:
            x, y = rng.uniform(*np.array(self.scene.cube_region).T)
            yaw = rng.uniform(-np.pi / 4, np.pi / 4)
        else:
            (x, y), yaw = self.scene.cube_home, 0.0
        q = np.r_[q_arm, k.finger_upper]
        self._set_joints(q)
        self.send_joint_targets(q)
        p.resetBasePositionAndOrientation(self.cube, [x, y, CUBE_SIZE / 2],
                                          p.getQuaternionFromEuler([0, 0, yaw]), physicsClientId=self.client)
        p.resetBaseVelocity(self.cube, [0, 0, 0], [0, 0, 0], physicsClientId=self.client)
        return q, self.cube_pose()

    def _set_joints(self, q: np.ndarray) -> None:
        for j, value in zip(self._joint_ids, q):
            p.resetJointState(self.robot, j, float(value), 0.0, physicsClientId=self.client)
        for j, source, multiplier, offset in self._mimics:
            p.resetJointState(self.robot, j, multiplier * float(q[source]) + offset, 0.0, physicsClientId=self.client)

    def send_joint_targets(self, q, velocities=None) -> np.ndarray:
        """Position targets for all joints (joint_names order), optionally with the reference velocities
        (feed-forward). Returns the targets actually commanded after clipping to the joint limits; the
        motors also respect the joint velocity limits."""
        q = np.asarray(q, dtype=float)
        velocities = np.zeros_like(q) if velocities is None else np.asarray(velocities, dtype=float)
        if q.shape != (len(self.joint_names),) or velocities.shape != q.shape:
            raise ValueError(f'expected {len(self.joint_names)} joint targets {self.joint_names}, got shape '
                             f'{q.shape} (velocities {velocities.shape})')
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(velocities))):
            raise ValueError('joint targets contain NaN or inf')
        q = np.clip(q, self.lower, self.upper)
        velocities = np.clip(velocities, -self.max_velocity, self.max_velocity)
        for j, target, v, v_max, force in zip(self._joint_ids, q, velocities, self.max_velocity, self.max_force):
            self._motor(j, target, v, v_max, force)
        for j, source, multiplier, offset in self._mimics:
            self._motor(j, multiplier * q[source] + offset, multiplier * velocities[source],
                        abs(multiplier) * self.max_velocity[source], self.max_force[source])
        self.commanded = q
        return q.copy()

    def _motor(self, joint: int, target: float, velocity: float, max_velocity: float, force: float) -> None:
        p.setJointMotorControl2(self.robot, joint, p.POSITION_CONTROL, targetPosition=float(target),
                                targetVelocity=float(velocity), force=float(force), maxVelocity=float(max_velocity),
                                positionGain=POSITION_GAIN, velocityGain=VELOCITY_GAIN, physicsClientId=self.client)

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            p.stepSimulation(physicsClientId=self.client)
        self.steps += n

    @property
    def time(self) -> float:
        """Simulated seconds since start (counted in steps, so it never drifts)."""
        return self.steps / self.physics_hz

    def joint_states(self) -> JointStates:
        states = p.getJointStates(self.robot, self._joint_ids, physicsClientId=self.client)
        return JointStates(self.joint_names, np.array([s[0] for s in states]), np.array([s[1] for s in states]),
                           np.array([s[3] for s in states]))

    def joint_positions(self) -> np.ndarray:
        return np.array([s[0] for s in p.getJointStates(self.robot, self._joint_ids, physicsClientId=self.client)])

    def ee_pose(self) -> np.ndarray:
        """End effector [x, y, z, qx, qy, qz, qw] in the base frame (from the same kinematics the actor uses)."""
        xyz, rotation = self.kinematics.ee_pose(self.joint_positions()[:len(self.arm_joints)])
        return np.r_[xyz, _quaternion(rotation)]

    def cube_pose(self) -> np.ndarray:
        xyz, quat = p.getBasePositionAndOrientation(self.cube, physicsClientId=self.client)
        return np.r_[xyz, quat]

    # -- camera
    def render(self) -> np.ndarray:
        """(height, width, 3) uint8 RGB image of the fixed camera."""
        cam = self.camera
        _, _, rgba, _, _ = p.getCameraImage(cam.width, cam.height, self._view, self._projection,
                                            renderer=p.ER_TINY_RENDERER, flags=p.ER_NO_SEGMENTATION_MASK,
                                            physicsClientId=self.client)
        return np.asarray(rgba, dtype=np.uint8).reshape(cam.height, cam.width, 4)[:, :, :3].copy()

    def render_state(self, q_arm=None, cube_pose=None, fingers=None) -> tuple[np.ndarray, np.ndarray]:
        """Image (and end-effector xyz) of a hypothetical state: arm at q_arm (None = as now), cube at
        cube_pose [x, y, z(, qx, qy, qz, qw)] (None = as now). The running simulation is left unchanged."""
        current = self.joint_positions()
        q = current.copy()
        n_arm = len(self.arm_joints)
        if q_arm is not None:
            q[:n_arm] = self._checked(q_arm, n_arm, 'arm joint positions')
        if fingers is not None:
            q[n_arm:] = self._checked(fingers, len(self.finger_joints), 'finger positions')
        q = np.clip(q, self.lower, self.upper)
        if cube_pose is not None:
            cube_pose = self._checked(cube_pose, None, 'cube pose')
            if cube_pose.size not in (3, 7):
                raise ValueError(f'cube pose needs 3 (xyz) or 7 (xyz + quaternion) values, got {cube_pose.size}')
        saved = p.saveState(physicsClientId=self.client)
        try:
            self._set_joints(q)
            if cube_pose is not None:
                quat = cube_pose[3:] if cube_pose.size == 7 else [0, 0, 0, 1]
                p.resetBasePositionAndOrientation(self.cube, cube_pose[:3].tolist(), list(quat),
                                                  physicsClientId=self.client)
            image = self.render()
        finally:
            p.restoreState(saved, physicsClientId=self.client)
            p.removeState(saved, physicsClientId=self.client)
        return image, self.kinematics.fk(q[:n_arm])

    @staticmethod
    def _checked(values, size, what) -> np.ndarray:
        values = np.asarray(values, dtype=float).ravel()
        if size is not None and values.size != size:
            raise ValueError(f'{what}: expected {size} values, got {values.size}')
        if not np.all(np.isfinite(values)):
            raise ValueError(f'{what} contain NaN or inf')
        return values

    def close(self) -> None:
        if p.isConnected(self.client):
            p.disconnect(self.client)


def _quaternion(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation -> [qx, qy, qz, qw]."""
    q = pin.Quaternion(rotation)
    return np.array([q.x, q.y, q.z, q.w])
