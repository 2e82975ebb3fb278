"""A UR5e with a Robotiq 2F-85 knuckle, as a URDF written by the tests: the joint names, frames and home of arm
preset ur5e (config/arms/ur5e.yaml) on ur_description's UR5e kinematics (base_link turned half a turn about z from
the arm's base), without meshes or inertias. The preset's own URDF (~/.jepa/arms/ur5e.urdf) is the user's; this
one stands in for it where a test needs a second arm that is not the Panda."""
import math
from pathlib import Path

import yaml

PRESET = yaml.safe_load((Path(__file__).resolve().parents[1] / 'config' / 'arms' / 'ur5e.yaml').read_text())
ARM_JOINTS = tuple(PRESET['joints']['arm'])
GRIPPER_JOINTS = tuple(PRESET['joints']['gripper'])
HOME = tuple(PRESET['kinematics']['home'])
EE_FRAME = PRESET['kinematics']['ee_frame']
WORKSPACE = tuple(zip(PRESET['workspace']['min'], PRESET['workspace']['max']))


def ur5e_urdf() -> str:
    half, pi = math.pi / 2, math.pi

    def joint(name, parent, child, xyz, rpy, lower=-2 * pi, upper=2 * pi, velocity=3.14, axis='0 0 1'):
        return (f'<link name="{child}"/><joint name="{name}" type="revolute"><parent link="{parent}"/>'
                f'<child link="{child}"/><origin xyz="{xyz}" rpy="{rpy}"/><axis xyz="{axis}"/>'
                f'<limit lower="{lower}" upper="{upper}" effort="150" velocity="{velocity}"/></joint>')

    def fixed(name, parent, child, xyz, rpy):
        return (f'<link name="{child}"/><joint name="{name}" type="fixed"><parent link="{parent}"/>'
                f'<child link="{child}"/><origin xyz="{xyz}" rpy="{rpy}"/></joint>')

    return '\n'.join([
        '<?xml version="1.0"?>', '<robot name="ur5e_robotiq">', '<link name="base_link"/>',
        fixed('base_link-base_link_inertia', 'base_link', 'base_link_inertia', '0 0 0', f'0 0 {pi}'),
        joint('shoulder_pan_joint', 'base_link_inertia', 'shoulder_link', '0 0 0.1625', '0 0 0'),
        joint('shoulder_lift_joint', 'shoulder_link', 'upper_arm_link', '0 0 0', f'{half} 0 0'),
        joint('elbow_joint', 'upper_arm_link', 'forearm_link', '-0.425 0 0', '0 0 0', -pi, pi),
        joint('wrist_1_joint', 'forearm_link', 'wrist_1_link', '-0.3922 0 0.1333', '0 0 0', velocity=6.28),
        joint('wrist_2_joint', 'wrist_1_link', 'wrist_2_link', '0 -0.0997 0', f'{half} 0 0', velocity=6.28),
        joint('wrist_3_joint', 'wrist_2_link', 'wrist_3_link', '0 0.0996 0', f'{half} {pi} {pi}', velocity=6.28),
        fixed('wrist_3-flange', 'wrist_3_link', 'flange', '0 0 0', f'0 {-half} {-half}'),
        fixed('flange-tool0', 'flange', 'tool0', '0 0 0', f'{half} 0 {half}'),
        joint('robotiq_85_left_knuckle_joint', 'tool0', 'robotiq_85_left_knuckle_link', '0 0.03 0.06', '0 0 0',
              0.0, 0.8, 2.0, axis='1 0 0'),
        '</robot>'])


def write_ur5e_urdf(path) -> Path:
    path = Path(path)
    path.write_text(ur5e_urdf())
    return path


def ur5e_kinematics(path, workspace=WORKSPACE):
    from jepa_common.kinematics import ArmKinematics
    return ArmKinematics(str(path), ARM_JOINTS, GRIPPER_JOINTS, EE_FRAME, home=HOME, workspace=workspace)
