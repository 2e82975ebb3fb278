"""ArmKinematics (pinocchio, from pybullet_data's Panda URDF): limits, FK, IK round trip, action mapping."""
import numpy as np
import pytest

from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_FINGER_JOINTS, PANDA_HOME, ArmKinematics, TOOL_DOWN


@pytest.fixture(scope='module')
def kin():
    return ArmKinematics()


def test_limits_read_from_urdf(kin):
    assert kin.arm_joints == PANDA_ARM_JOINTS and kin.finger_joints == PANDA_FINGER_JOINTS
    # Values from the <limit> tags of franka_panda/panda.urdf.
    assert kin.lower[3] == pytest.approx(-3.1416) and kin.upper[3] == pytest.approx(0.0)
    assert kin.upper[5] == pytest.approx(3.8223) and kin.velocity[6] == pytest.approx(2.61)
    assert np.allclose(kin.finger_lower, 0.0) and np.allclose(kin.finger_upper, 0.04)
    assert kin.limits['panda_joint1'] == pytest.approx((-2.9671, 2.9671, 2.175))
    assert set(kin.limits) == set(PANDA_ARM_JOINTS) | set(PANDA_FINGER_JOINTS)


def test_fk_home_points_down_between_fingers(kin):
    xyz, rot = kin.ee_pose(PANDA_HOME)
    # Hand flange at 0.59 m, grasp point 0.105 m below it.
    assert xyz == pytest.approx([0.3069, 0.0, 0.4853], abs=1e-3)
    assert np.allclose(rot, TOOL_DOWN, atol=1e-6)


def test_fk_batched_matches_single(kin):
    rng = np.random.default_rng(1)
    qs = rng.uniform(kin.lower, kin.upper, size=(2, 3, 7))
    batched = kin.fk(qs)
    assert batched.shape == (2, 3, 3)
    assert np.allclose(batched[1, 2], kin.fk(qs[1, 2]))


def test_ik_round_trip_within_5mm(kin):
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(40):
        target = rng.uniform([0.35, -0.25, 0.1], [0.65, 0.25, 0.5])
        q = kin.ik(PANDA_HOME, target, iterations=60)
        xyz, rot = kin.ee_pose(q)
        errors.append(np.linalg.norm(xyz - target))
        assert np.all(q >= kin.lower - 1e-12) and np.all(q <= kin.upper + 1e-12)
        assert np.allclose(rot, TOOL_DOWN, atol=0.05)
    assert max(errors) < 0.005


def test_action_steps_track_within_5mm_and_respect_limits(kin):
    rng = np.random.default_rng(2)
    q = np.array(PANDA_HOME)
    for _ in range(100):
        action = rng.uniform(-0.03, 0.03, 4)
        xyz = kin.fk(q)
        q_next, fingers = kin.action_to_joint_target(q, action)
        target = np.clip(xyz + action[:3], [0.35, -0.25, 0.1], [0.65, 0.25, 0.5])
        if np.allclose(target, xyz + action[:3]):  # away from the edge of reach
            assert np.linalg.norm(kin.fk(q_next) - target) < 0.005
        assert np.all(q_next >= kin.lower) and np.all(q_next <= kin.upper)
        assert np.all(fingers >= 0.0) and np.all(fingers <= 0.04)
        q = q_next if np.allclose(target, xyz + action[:3]) else kin.ik(q, target, iterations=30)


def test_clip_action(kin):
    clipped = kin.clip_action([0.1, -0.2, 0.01, 3.0])
    assert clipped == pytest.approx([0.03, -0.03, 0.01, 1.0])
    assert kin.clip_action([np.nan, 0, 0, -5]) == pytest.approx([0.0, 0.0, 0.0, -1.0])
    assert kin.clip_action(np.ones((5, 4))).shape == (5, 4)
    with pytest.raises(ValueError, match='4 values'):
        kin.clip_action([0.0, 0.0, 0.0])


def test_oversized_action_moves_at_most_max_step(kin):
    q_next, fingers = kin.action_to_joint_target(PANDA_HOME, [1.0, 0.0, 0.0, -1.0])
    moved = kin.fk(q_next) - kin.fk(PANDA_HOME)
    assert moved[0] == pytest.approx(0.03, abs=0.002) and abs(moved[1]) < 0.002
    assert fingers == pytest.approx([0.0, 0.0])


def test_workspace_box_is_not_left(kin):
    q = kin.ik(PANDA_HOME, [0.5, 0.0, 0.03], iterations=60)
    q_next, _ = kin.action_to_joint_target(q, [0.0, 0.0, -0.03, 1.0])
    assert kin.fk(q_next)[2] >= 0.02 - 0.002


def test_batched_action_mapping(kin):
    qs = np.stack([np.array(PANDA_HOME)] * 3)
    actions = np.array([[0.01, 0, 0, 1], [0, 0.01, 0, 0], [0, 0, -0.01, -1]])
    targets, fingers = kin.action_to_joint_target(qs, actions)
    assert targets.shape == (3, 7) and fingers.shape == (3, 2)
    assert np.allclose(targets[2], kin.action_to_joint_target(qs[2], actions[2])[0])
    assert fingers[:, 0] == pytest.approx([0.04, 0.02, 0.0])


def test_bad_inputs_raise_clear_errors(kin):
    with pytest.raises(ValueError, match='7 arm joint'):
        kin.fk([0.0] * 6)
    with pytest.raises(ValueError, match='NaN'):
        kin.action_to_joint_target([np.nan] * 7, [0, 0, 0, 0])
    with pytest.raises(ValueError, match='not in'):
        ArmKinematics(arm_joints=['panda_joint1', 'elbow'])
    with pytest.raises(ValueError, match='frame'):
        ArmKinematics(ee_frame='tool0')


def test_joint_order_other_than_the_tree(kin):
    reversed_kin = ArmKinematics(arm_joints=PANDA_ARM_JOINTS[::-1])
    q = np.array(PANDA_HOME) + 0.1
    assert np.allclose(reversed_kin.fk(q[::-1]), kin.fk(q))
    assert np.allclose(reversed_kin.lower, kin.lower[::-1])


@pytest.mark.parametrize('arm_joints', [PANDA_ARM_JOINTS, PANDA_ARM_JOINTS[::-1]])
def test_position_jacobian_matches_finite_differences(arm_joints):
    kin = ArmKinematics(arm_joints=arm_joints)
    q = np.array(PANDA_HOME)[[PANDA_ARM_JOINTS.index(n) for n in arm_joints]] + 0.05
    eps = 1e-6
    numeric = np.stack([(kin.fk(q + eps * e) - kin.fk(q - eps * e)) / (2 * eps) for e in np.eye(7)], axis=1)
    assert kin.position_jacobian(q) == pytest.approx(numeric, abs=1e-6)


TWO_LINK = '''<?xml version="1.0"?>
<robot name="two_link">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="tool"/><link name="finger"/>
  <joint name="shoulder" type="continuous"><parent link="base"/><child link="l1"/>
    <origin xyz="0 0 0.1"/><axis xyz="0 0 1"/><limit effort="10" velocity="1.5"/></joint>
  <joint name="elbow" type="revolute"><parent link="l1"/><child link="l2"/>
    <origin xyz="0.3 0 0"/><axis xyz="0 0 1"/><limit lower="-2" upper="2" effort="10" velocity="2.0"/></joint>
  <joint name="tool_joint" type="fixed"><parent link="l2"/><child link="tool"/><origin xyz="0.2 0 0"/></joint>
  <joint name="finger_joint" type="prismatic"><parent link="tool"/><child link="finger"/>
    <axis xyz="0 1 0"/><limit lower="0" upper="0.05" effort="5" velocity="0.1"/></joint>
</robot>
'''


def test_other_arms_from_their_own_urdf(tmp_path):
    urdf = tmp_path / 'two_link.urdf'
    urdf.write_text(TWO_LINK)
    kin = ArmKinematics(str(urdf), arm_joints=['shoulder', 'elbow'], finger_joints=['finger_joint'],
                        ee_frame='tool', ee_offset=(0.05, 0, 0), home=[0.0, 0.0])
    # The continuous shoulder gets a finite range and one coordinate like any revolute joint.
    assert kin.lower == pytest.approx([-2 * np.pi, -2.0]) and kin.upper == pytest.approx([2 * np.pi, 2.0])
    assert kin.velocity == pytest.approx([1.5, 2.0]) and kin.finger_upper == pytest.approx([0.05])
    assert kin.fk([0.0, 0.0]) == pytest.approx([0.55, 0.0, 0.1])
    assert kin.fk([np.pi / 2, 0.0]) == pytest.approx([0.0, 0.55, 0.1], abs=1e-9)
    assert kin.position_jacobian([0.0, 0.0]).shape == (3, 2)


def test_unreadable_urdf_is_named(tmp_path):
    broken = tmp_path / 'arm.urdf.xacro'
    broken.write_text('<robot name="r"><xacro:include filename="$(find x)/y"/>')
    with pytest.raises(ValueError, match='cannot parse URDF .*arm.urdf.xacro'):
        ArmKinematics(str(broken))
    with pytest.raises(FileNotFoundError, match='URDF not found'):
        ArmKinematics(str(tmp_path / 'missing.urdf'))
