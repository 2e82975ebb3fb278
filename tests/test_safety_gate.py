"""SafetyGate core (no ROS): every rule, and a seeded fuzz test that nothing unsafe is ever forwarded."""
import math

import numpy as np
import pytest

from jepa_common.kinematics import PANDA_HOME, ArmKinematics
from jepa_safety.gate import Decision, JointLimits, SafetyGate, Trajectory, TrajectoryPoint, WorkspaceBox

KIN = ArmKinematics()
NAMES = (*KIN.arm_joints, *KIN.finger_joints)
ARM = list(KIN.arm_joints)
FINGERS = list(KIN.finger_joints)
LIMITS = JointLimits(NAMES, [KIN.limits[n][0] for n in NAMES], [KIN.limits[n][1] for n in NAMES],
                     [KIN.limits[n][2] for n in NAMES])
BOX = WorkspaceBox([0.25, -0.35, 0.02], [0.75, 0.35, 0.6])
HOME = np.r_[PANDA_HOME, 0.02, 0.02]


def make_gate(**kwargs) -> SafetyGate:
    return SafetyGate(LIMITS, workspace=BOX, fk=KIN.fk, fk_joints=ARM, **kwargs)


def ready_gate(q=HOME, now=0.0, **kwargs) -> SafetyGate:
    gate = make_gate(**kwargs)
    assert gate.on_joint_state(NAMES, q, now) is None
    return gate


def arm_cmd(*points, names=ARM) -> Trajectory:
    """points: (t, positions) or (t, positions, velocities)."""
    return Trajectory(list(names), [TrajectoryPoint(p[0], p[1], p[2] if len(p) > 2 else ()) for p in points])


def full_config(gate_names, positions, measured):
    q = np.array(measured, dtype=float)
    for name, value in zip(gate_names, positions):
        q[NAMES.index(name)] = value
    return q


def test_forwards_a_small_valid_command_unchanged():
    gate = ready_gate()
    target = np.array(PANDA_HOME) + 0.01
    decision = gate.on_trajectory(arm_cmd((0.1, target)), 0.01)
    assert not decision.hold and decision.reasons == []
    (point,) = decision.trajectory.points
    np.testing.assert_allclose(point.positions, target)
    assert point.time_from_start == pytest.approx(0.1)
    assert gate.counters['forwarded'] == 1 and gate.state(0.01) == 'forwarding'


def test_clamps_arm_and_finger_positions_to_joint_limits():
    gate = ready_gate()
    target = np.array(PANDA_HOME)
    target[6] = 4.0  # panda_joint7 (turns the hand about its own axis: the workspace check does not interfere)
    decision = gate.on_trajectory(arm_cmd((5.0, target)), 0.0)
    assert decision.trajectory.points[0].positions[6] == LIMITS.upper[6]
    assert gate.counters['clamped_limits'] == 1 and 'panda_joint7' in decision.reasons[0]

    decision = gate.on_trajectory(arm_cmd((5.0, [0.08, -0.01]), names=FINGERS), 0.0)
    np.testing.assert_allclose(decision.trajectory.points[0].positions, [0.04, 0.0])


def test_clamps_to_the_workspace_box_along_the_joint_space_segment():
    gate = ready_gate()
    # Straightening the elbow: the end effector would rise above z 0.6 and come back behind x 0.25.
    target = np.array(PANDA_HOME) + [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert BOX.excess(KIN.fk(target)) > 0.05
    decision = gate.on_trajectory(arm_cmd((10.0, target)), 0.0)
    reached = decision.trajectory.points[0].positions
    assert gate.counters['clamped_workspace'] == 1
    xyz = KIN.fk(reached)
    assert BOX.excess(xyz) <= 1e-6
    assert BOX.margin(xyz) < 2e-3, 'the clamp stops at the wall, not short of it'
    # On the segment from the measured position towards the target, and the whole way there inside the box.
    fraction = (reached - PANDA_HOME) / (target - PANDA_HOME + 1e-300)
    moved = np.abs(target - PANDA_HOME) > 0
    assert np.allclose(fraction[moved], fraction[moved][0]) and 0 < fraction[moved][0] < 1
    for s in np.linspace(0, 1, 200):
        assert BOX.excess(KIN.fk(PANDA_HOME + s * (reached - PANDA_HOME))) <= 1e-4


def test_an_arm_outside_the_box_may_move_back_in_but_not_further_out():
    outside = np.array(PANDA_HOME) + [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    start_excess = BOX.excess(KIN.fk(outside))
    assert start_excess > 0.01
    gate = ready_gate(np.r_[outside, 0.02, 0.02])
    back_in = gate.on_trajectory(arm_cmd((10.0, PANDA_HOME)), 0.0).trajectory.points[0].positions
    np.testing.assert_allclose(back_in, PANDA_HOME)
    further = gate.on_trajectory(arm_cmd((10.0, outside + [0, 0, 0, 0.7, 0, 0, 0])), 0.0).trajectory
    assert BOX.excess(KIN.fk(further.points[0].positions)) <= start_excess + 1e-6


def test_finger_commands_skip_the_workspace_check():
    gate = ready_gate()
    decision = gate.on_trajectory(arm_cmd((0.5, [0.04, 0.04]), names=FINGERS), 0.0)
    assert not decision.hold and gate.counters['clamped_workspace'] == 0


def test_stretches_time_to_respect_velocity_limits_including_the_first_segment():
    gate = ready_gate()
    a = np.array(PANDA_HOME) + [0.5, 0, 0, 0, 0, 0, 0]      # 0.5 rad from the measured position
    b = a + [0, 0, 0, 0, 0, 0, 1.0]                          # then 1 rad of joint 7
    decision = gate.on_trajectory(arm_cmd((0.05, a), (0.1, b)), 0.0)
    p0, p1 = decision.trajectory.points
    assert p0.time_from_start == pytest.approx(0.5 / LIMITS.velocity[0])
    assert p1.time_from_start - p0.time_from_start == pytest.approx(1.0 / LIMITS.velocity[6])
    assert gate.counters['retimed'] == 1
    np.testing.assert_allclose(p1.positions, b)  # slower, never shorter


def test_commanded_velocities_are_validated_but_not_forwarded():
    """Cubic segments through them could bulge out of the verified straight segments; linear ones cannot."""
    gate = ready_gate()
    target = np.array(PANDA_HOME) + [0.2, 0, 0, 0, 0, 0, 0]
    decision = gate.on_trajectory(arm_cmd((0.1, target, [5.0] + [0.0] * 6)), 0.0)
    point = decision.trajectory.points[0]
    assert len(point.velocities) == 0 and len(point.accelerations) == 0
    np.testing.assert_allclose(point.positions, target)
    assert point.time_from_start == pytest.approx(0.1)


@pytest.mark.parametrize('trajectory, expected', [
    (Trajectory([], [TrajectoryPoint(0.1, [])]), 'no joint names'),
    (Trajectory(ARM[:6] + ['wrist_of_another_robot'], [TrajectoryPoint(0.1, [0.0] * 7)]), 'unknown joint'),
    (Trajectory(ARM[:6] + ARM[:1], [TrajectoryPoint(0.1, [0.0] * 7)]), 'duplicate'),
    (arm_cmd((0.1, [0.0] * 6)), '6 values for 7'),
    (arm_cmd((0.1, [0.0] * 6 + [math.nan])), 'NaN or inf'),
    (arm_cmd((0.1, [0.0] * 6 + [math.inf])), 'NaN or inf'),
    (arm_cmd((math.nan, list(PANDA_HOME))), 'time_from_start'),
    (arm_cmd((-0.1, list(PANDA_HOME))), 'negative'),
    (arm_cmd((1e12, list(PANDA_HOME))), 'beyond'),
    (arm_cmd((0.2, list(PANDA_HOME)), (0.1, list(PANDA_HOME))), 'out of time order'),
    (arm_cmd((0.2, list(PANDA_HOME)), (0.2, list(PANDA_HOME))), 'out of time order'),
    (arm_cmd((0.1, list(PANDA_HOME), [0.0] * 3)), 'velocities: 3 values'),
    (arm_cmd((0.1, list(PANDA_HOME), [math.nan] * 7)), 'velocities contain NaN'),
    (arm_cmd((0.1, list(PANDA_HOME), [0.0] * 7), (0.2, list(PANDA_HOME))), 'some points'),
    (arm_cmd((0.1, ['a'] * 7)), 'not numbers'),
    (Trajectory(ARM, [TrajectoryPoint(0.1, list(PANDA_HOME), (), [0.0])]), 'accelerations'),
    (arm_cmd(*[(0.1 * (i + 1), list(PANDA_HOME)) for i in range(1001)]), 'max_points'),
])
def test_unverifiable_commands_are_rejected_with_a_hold_and_a_reason(trajectory, expected):
    gate = ready_gate()
    decision = gate.on_trajectory(trajectory, 0.0)
    assert decision.hold and decision.rejected
    assert expected in decision.reasons[0] and expected in gate.last_error
    assert gate.counters['rejected'] == 1 and gate.counters['holds'] == 1
    # and the gate keeps working
    assert not gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.0).hold


def test_no_joint_state_yet_means_no_command():
    gate = make_gate()
    decision = gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.0)
    assert decision.rejected and 'no joint state' in decision.reasons[0]
    assert gate.state(0.0) == 'no_state'
    assert gate.tick(1.0) is None  # nothing to hold yet: no command ever went out


def test_joint_states_may_arrive_split_and_all_gated_joints_must_be_fresh():
    gate = make_gate()
    gate.on_joint_state(ARM + ['some_other_joint'], list(PANDA_HOME) + [3.0], 0.0)
    assert gate.missing_joints() == FINGERS
    assert gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.0).rejected
    gate.on_joint_state(FINGERS, [0.02, 0.02], 0.0)
    assert not gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.1).hold
    gate.on_joint_state(ARM, PANDA_HOME, 0.3)  # fingers not updated since 0.0
    assert 'stale' in gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.3).reasons[0]


def test_a_joint_state_whose_names_and_positions_do_not_pair_up_is_reported_and_changes_nothing():
    gate = ready_gate()
    error = gate.on_joint_state(NAMES, HOME[:-1], 0.1)
    assert 'names but' in error and gate.counters['bad_joint_states'] == 1
    assert gate._state_age(0.1) == pytest.approx(0.1) and gate.state(0.1) == 'holding'


def test_an_out_of_limit_measured_state_is_never_the_start_of_a_forwarded_command():
    """A glitching encoder, a wrong URDF or a spoofed driver reports panda_joint1 = 10 (limit +-2.9671): an
    in-limit command must not leave with panda_joint1 = 10 (the workspace clamp would slide it back to the
    measurement if the measurement were trusted)."""
    gate = make_gate()
    error = gate.on_joint_state(NAMES, np.r_[10.0, HOME[1:]], 0.0)
    assert 'panda_joint1' in error and '10.0000' in error and 'limits' in error
    decision = gate.on_trajectory(arm_cmd((1.0, PANDA_HOME)), 0.0)
    assert decision.rejected and 'panda_joint1 measured 10.0000' in decision.reasons[0]
    assert gate.state(0.0) == 'fault' and gate.counters['forwarded'] == 0


@pytest.mark.parametrize('value, expected', [
    (10.0, 'outside its limits'),
    (-2.9671 - 0.02, 'outside its limits'),
    (math.nan, 'not a finite number'),
    (math.inf, 'not a finite number'),
    ('x', 'not a finite number'),
    (0.5, 'faster than its velocity limit'),   # 0.5 rad in 10 ms: 50 rad/s
])
def test_an_implausible_joint_state_holds_once_refuses_commands_and_clears_when_states_are_plausible(value, expected):
    gate = ready_gate()
    assert not gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.0).hold
    error = gate.on_joint_state(NAMES, [value, *HOME[1:]], 0.01)
    assert error.startswith('panda_joint1 measured') and expected in error
    decision = gate.tick(0.011)
    assert decision.hold and expected in decision.reasons[0] and expected in gate.last_error
    assert gate.tick(0.012) is None, 'one hold per fault'
    refused = gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.013)
    assert refused.rejected and 'panda_joint1 measured' in refused.reasons[0]
    assert gate.state(0.013) == 'fault'
    assert gate.counters['state_faults'] == 1 and gate.counters['bad_joint_states'] == 1
    # The encoder recovers: a plausible reading of the joint ends the fault (after a jump the way back is a
    # jump too, so the reading after it).
    gate.on_joint_state(NAMES, HOME, 0.02)
    assert gate.on_joint_state(NAMES, HOME, 0.03) is None
    assert gate.tick(0.031) is None and gate.state(0.031) == 'holding'
    assert not gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.032).hold


def test_the_jump_check_follows_real_motion_and_trusts_a_new_position_once_readings_agree_again():
    gate = ready_gate()
    moving = HOME.copy()
    for k in range(1, 11):  # 2 rad/s, just under panda_joint1's 2.175 rad/s
        moving[0] += 0.02
        assert gate.on_joint_state(NAMES, moving, 0.01 * k) is None
    # Two readings that arrive together are fine: the check allows state_jitter (0.05 s) of arrival jitter.
    moving[0] += 0.02
    assert gate.on_joint_state(NAMES, moving, 0.1) is None
    # A simulator reset moves the arm 1 rad at once: a fault, until the next reading agrees with it.
    reset = moving.copy()
    reset[0] -= 1.0
    assert 'faster than' in gate.on_joint_state(NAMES, reset, 0.11)
    assert gate.state(0.11) == 'fault'
    assert gate.on_joint_state(NAMES, reset, 0.12) is None and gate.state(0.12) == 'holding'
    # A one-reading spike faults the joint twice (out and back) and then it is trusted again.
    spike = reset.copy()
    spike[0] += 0.5
    assert gate.on_joint_state(NAMES, spike, 0.13) and gate.on_joint_state(NAMES, reset, 0.14)
    assert gate.on_joint_state(NAMES, reset, 0.15) is None and gate.state(0.15) == 'holding'


def test_a_measured_state_just_past_a_limit_counts_as_at_the_limit():
    """Within state_tolerance (sensor noise, a controller settling at a limit) a reading is plausible, and the
    workspace clamp slides targets back towards the limit, not towards the reading past it."""
    start = HOME.copy()
    start[0] = LIMITS.upper[0] + 0.005     # turned round to the back: far outside the box
    gate = ready_gate(start)
    assert BOX.excess(KIN.fk(start[:7])) > 0.5
    target = np.array(PANDA_HOME) + [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    target[0] = 2.9                          # and straightening the elbow: further out, so clamped
    decision = gate.on_trajectory(arm_cmd((10.0, target)), 0.0)
    assert not decision.hold and gate.counters['clamped_workspace'] == 1
    positions = decision.trajectory.points[0].positions
    assert np.all(positions <= LIMITS.upper[:7]) and np.all(positions >= LIMITS.lower[:7])


@pytest.mark.parametrize('sabotage, expected', [
    # A workspace clamp that lets everything through, or slides the wrong way past a joint limit, and a
    # retimer that keeps the commanded times.
    (dict(_workspace_fraction=lambda start, target, allowed: 1.0), 'outside the workspace box'),
    (dict(_workspace_fraction=lambda start, target, allowed: -2.0), 'outside its limits'),
    (dict(_retime=lambda idx, times, positions: times), 'faster than its velocity limit'),
])
def test_the_output_check_holds_whatever_computed_an_unsafe_trajectory(sabotage, expected):
    gate = ready_gate()
    for name, broken in sabotage.items():
        setattr(gate, name, broken)
    # Joint 1 by 1.6 rad and straightening the elbow (out through the box's ceiling) in 0.1 s.
    target = np.array(PANDA_HOME) + [1.6, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    decision = gate.on_trajectory(arm_cmd((0.1, target)), 0.0)
    assert decision.hold and decision.rejected
    assert 'output check failed' in decision.reasons[0] and expected in decision.reasons[0]
    assert gate.counters['output_check_failures'] == 1 and gate.counters['forwarded'] == 0


def test_stale_joint_states_hold_once_and_refuse_commands_until_fresh():
    gate = ready_gate()
    assert not gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.0).hold
    assert gate.tick(0.19) is None
    decision = gate.tick(0.21)
    assert decision.hold and 'stale' in decision.reasons[0]
    assert gate.tick(0.25) is None, 'one hold per stale episode'
    assert gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.3).rejected
    assert gate.state(0.3) == 'stale' and gate.counters['stale_events'] == 1
    gate.on_joint_state(NAMES, HOME, 0.4)
    assert gate.tick(0.41) is None
    assert not gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.42).hold


def test_estop_holds_at_once_and_stays_latched_until_released_with_the_input_cleared():
    gate = ready_gate()
    gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.0)
    decision = gate.on_estop(True)
    assert decision.hold and gate.state(0.01) == 'estop'
    assert gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.02).rejected
    ok, message = gate.release_estop()
    assert not ok and 'still true' in message
    assert gate.on_estop(False) is None
    assert gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.05).rejected, 'a false input alone does not release'
    ok, _ = gate.release_estop()
    assert ok and gate.state(0.06) == 'holding'
    assert not gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.07).hold
    assert gate.counters['estops'] == 1


def test_silent_commander_gets_a_hold_once():
    gate = ready_gate(command_timeout=0.5)
    gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.0)
    for now in np.arange(0.0, 0.5, 0.05):
        gate.on_joint_state(NAMES, HOME, now)
        assert gate.tick(now) is None
    gate.on_joint_state(NAMES, HOME, 0.55)
    decision = gate.tick(0.55)
    assert decision.hold and 'no command' in decision.reasons[0]
    assert gate.tick(0.56) is None and gate.counters['command_timeouts'] == 1
    assert gate.state(0.56) == 'holding'


def test_the_silent_commander_watchdog_can_run_on_the_commanders_clock():
    gate = ready_gate(command_timeout=0.5)
    gate.on_trajectory(arm_cmd((0.1, PANDA_HOME)), 0.0, command_clock=100.0)
    gate.on_joint_state(NAMES, HOME, 0.9)
    assert gate.tick(1.0, command_clock=100.4) is None, 'a slow simulation: 1 s of wall time, 0.4 s of sim time'
    assert gate.tick(1.0, command_clock=100.6).hold


def test_empty_points_is_a_hold_request_not_an_error_even_without_joint_state_or_during_estop():
    gate = make_gate()
    decision = gate.on_trajectory(Trajectory(ARM, []), 0.0)
    assert decision.hold and not decision.rejected
    gate.on_joint_state(NAMES, HOME, 0.0)
    gate.on_estop(True)
    decision = gate.on_trajectory(Trajectory(ARM, []), 0.0)
    assert decision.hold and not decision.rejected and gate.counters['rejected'] == 0


def test_a_command_too_costly_to_check_in_time_is_rejected_without_side_effects():
    gate = ready_gate(max_check_time=1e-9)
    far = np.array(PANDA_HOME) + [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # needs the workspace search
    decision = gate.on_trajectory(arm_cmd((1.0, far), (2.0, PANDA_HOME)), 0.0)
    assert decision.rejected and 'took over' in decision.reasons[0]
    assert gate.counters['clamped_workspace'] == 0 and gate.counters['forwarded'] == 0


@pytest.mark.parametrize('kwargs, expected', [
    (dict(names=('a', 'a'), lower=[0, 0], upper=[1, 1], velocity=[1, 1]), 'duplicate'),
    (dict(names=('a',), lower=[1], upper=[0], velocity=[1]), 'lower limit above'),
    (dict(names=('a',), lower=[0], upper=[1], velocity=[0]), 'positive'),
    (dict(names=('a',), lower=[0, 1], upper=[1], velocity=[1]), 'shape'),
    (dict(names=('a',), lower=[math.nan], upper=[1], velocity=[1]), 'NaN'),
])
def test_bad_limits_are_refused(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        JointLimits(**kwargs)


def test_bad_workspace_and_gate_configuration_are_refused():
    with pytest.raises(ValueError, match='empty'):
        WorkspaceBox([0, 0, 1], [1, 1, 0])
    with pytest.raises(ValueError, match='needs fk'):
        SafetyGate(LIMITS, workspace=BOX)
    with pytest.raises(ValueError, match='not among'):
        SafetyGate(LIMITS, workspace=BOX, fk=KIN.fk, fk_joints=['elbow'])


# ---- fuzz ----------------------------------------------------------------------------------------------

def _random_trajectory(rng) -> Trajectory:
    """Mostly plausible, often broken in one of many ways."""
    k = rng.integers(1, len(NAMES) + 1)
    names = list(rng.choice(NAMES, size=k, replace=False))
    if rng.random() < 0.03:
        names.append('unknown_joint')
    if rng.random() < 0.02:
        names.append(names[0])
    if rng.random() < 0.01:
        names = []
    n_points = rng.integers(0, 5)
    idx = [NAMES.index(n) if n in NAMES else 0 for n in names]
    lower, upper = LIMITS.lower[idx], LIMITS.upper[idx]
    times = np.cumsum(rng.uniform(0.0, 0.3, size=n_points))
    if rng.random() < 0.05:
        rng.shuffle(times)
    with_velocities = rng.random() < 0.4
    points = []
    for i in range(n_points):
        span = upper - lower
        positions = rng.uniform(lower - 0.5 * span, upper + 0.5 * span)
        if rng.random() < 0.3:  # near the start: small steps like the actor's
            positions = HOME[idx] + rng.normal(0, 0.05, size=len(idx))
        velocities = rng.normal(0, 2.0, size=len(idx)) if with_velocities else ()
        t = float(times[i])
        r = rng.random()
        if r < 0.02:
            positions[rng.integers(len(positions))] = rng.choice([np.nan, np.inf, -np.inf])
        elif r < 0.03:
            positions = positions[:-1]
        elif r < 0.04 and with_velocities:
            velocities[0] = np.nan
        elif r < 0.05:
            t = rng.choice([np.nan, -1.0, np.inf])
        points.append(TrajectoryPoint(t, positions, velocities))
    return Trajectory(names, points)


def _random_start(rng) -> np.ndarray:
    if rng.random() < 0.7:
        q = HOME + np.r_[rng.normal(0, 0.3, 7), rng.uniform(-0.02, 0.02, 2)]
    else:
        q = rng.uniform(LIMITS.lower, LIMITS.upper)
    return np.clip(q, LIMITS.lower, LIMITS.upper)


def _assert_safe(decision: Decision, start: np.ndarray):
    if decision.hold:
        return
    traj = decision.trajectory
    names = list(traj.joint_names)
    assert names and len(set(names)) == len(names) and set(names) <= set(NAMES)
    idx = [NAMES.index(n) for n in names]
    vmax = LIMITS.velocity[idx]
    previous, previous_t = start[idx], 0.0
    q_previous = start.copy()
    start_excess = BOX.excess(KIN.fk(start[:7]))
    for point in traj.points:
        positions, t = np.asarray(point.positions), point.time_from_start
        assert positions.shape == (len(names),) and np.all(np.isfinite(positions)) and np.isfinite(t)
        assert np.all(positions >= LIMITS.lower[idx]) and np.all(positions <= LIMITS.upper[idx])
        assert t >= previous_t
        assert len(point.velocities) == 0 and len(point.accelerations) == 0, 'linear interpolation only'
        assert np.all(np.abs(positions - previous) <= vmax * (t - previous_t) * (1 + 1e-9))
        q = full_config(names, positions, q_previous)
        for s in np.linspace(0.0, 1.0, 6)[1:]:
            xyz = KIN.fk((q_previous + s * (q - q_previous))[:7])
            assert BOX.excess(xyz) <= start_excess + 1e-3
        assert BOX.excess(KIN.fk(q[:7])) <= start_excess + 1e-5
        previous, previous_t, q_previous = positions, t, q


def test_fuzz_nothing_unsafe_or_malformed_is_ever_forwarded():
    rng = np.random.default_rng(20240607)
    outcomes = {'forwarded': 0, 'rejected': 0, 'clamped_workspace': 0, 'retimed': 0}
    for trial in range(2000):
        start = _random_start(rng)
        gate = ready_gate(start)
        decision = gate.on_trajectory(_random_trajectory(rng), 0.05)
        try:
            _assert_safe(decision, start)
        except AssertionError as error:
            raise AssertionError(f'trial {trial}: {error}') from error
        for key in outcomes:
            outcomes[key] += gate.counters[key]
    # The fuzz must exercise every branch, not just one of them.
    assert outcomes['forwarded'] > 1000 and outcomes['rejected'] > 200, outcomes
    assert outcomes['clamped_workspace'] > 100 and outcomes['retimed'] > 500, outcomes
