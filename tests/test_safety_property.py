"""Property of the ROS-free SafetyGate, checked with hypothesis over generated gate parameters x measured
states x commands: nothing it forwards leaves the joint limits or the workspace box or moves faster than the
velocity limits, whatever it measured or was told.

The escape check below is written from the requirements, not from the gate's code: it judges every forwarded
point against the latest joint state the gate was given (the gate may only forward from a plausible one).
bench/safety_property.py runs the same property over 100,000+ cases.
"""
from collections import Counter
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from jepa_common.kinematics import ArmKinematics
from jepa_safety.gate import Decision, JointLimits, SafetyGate, Trajectory, TrajectoryPoint, WorkspaceBox

KIN = ArmKinematics()
ARM = list(KIN.arm_joints)
NAMES = (*KIN.arm_joints, *KIN.finger_joints)
URDF = np.array([KIN.limits[n] for n in NAMES])  # rows: lower, upper, velocity
# Escape thresholds: the gate's own round-off allowances, with room to spare. A segment's inside is sampled,
# so between the samples the clamp's fine steps may bulge out by a little more.
BOX_POINT_TOLERANCE = 1e-5
BOX_SEGMENT_TOLERANCE = 1e-3
SPEED_RTOL = 1e-6


@dataclass
class Case:
    limits: JointLimits
    workspace: WorkspaceBox | None
    velocity_scale: float
    state_tolerance: float
    state_jitter: float
    readings: list   # (arrival time, positions of NAMES)
    command: Trajectory


def _reading(draw, rng, limits: JointLimits, tolerance: float) -> np.ndarray:
    """Mostly a plausible configuration; sometimes one joint at, just inside or just past a limit's tolerance,
    or impossible."""
    q = rng.uniform(limits.lower, limits.upper)
    mode = draw(st.sampled_from(['inside'] * 4 + ['edge', 'impossible']))
    j = draw(st.integers(0, len(NAMES) - 1))
    if mode == 'edge':
        limit = draw(st.sampled_from([limits.lower[j], limits.upper[j]]))
        q[j] = limit + draw(st.sampled_from([-2.0, -1.0001, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 2.0])) * tolerance
    elif mode == 'impossible':
        q[j] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 10.0, -10.0, 1e300]))
    return q


@st.composite
def cases(draw) -> Case:
    """hypothesis picks the structure (which joints, how many points, which special values) and a seed; the
    seed draws the plain numbers, which keeps a case cheap enough for the bench's 100,000."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 63)))
    n = len(NAMES)
    span = URDF[:, 1] - URDF[:, 0]
    cut = rng.uniform(0.0, 0.4, size=(2, n)) * draw(st.sampled_from([0.0, 1.0]))
    velocity = URDF[:, 2] * rng.uniform(0.1, 1.0, size=n)
    limits = JointLimits(NAMES, URDF[:, 0] + cut[0] * span, URDF[:, 1] - cut[1] * span, velocity)
    workspace = None
    if draw(st.integers(0, 9)) < 7:
        centre = rng.uniform([0.1, -0.4, 0.0], [0.7, 0.4, 0.7])
        half = rng.uniform(0.02, 0.5, size=3)
        workspace = WorkspaceBox(centre - half, centre + half)
    tolerance = draw(st.sampled_from([0.0, 0.01, 0.05]))

    readings, now = [], 0.0
    for k in range(draw(st.integers(1, 3))):
        if k and draw(st.booleans()):  # the arm moving one joint, at up to 1.5x its velocity limit
            q = readings[-1][1].copy()
            dt = rng.uniform(0.001, 0.1)
            j = draw(st.integers(0, n - 1))
            q[j] += rng.uniform(-1.5, 1.5) * velocity[j] * dt
        else:
            q, dt = _reading(draw, rng, limits, tolerance), rng.uniform(0.0, 0.1)
        now += dt
        readings.append((now, q))

    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=n, unique=True))
    idx = [NAMES.index(name) for name in names]
    last = np.nan_to_num(readings[-1][1], nan=0.0, posinf=0.0, neginf=0.0)
    points, t = [], 0.0
    for k in range(draw(st.integers(1, 4))):
        t += rng.uniform(0.0 if k == 0 else 1e-4, 3.0) * draw(st.sampled_from([1.0, 1e-3]))
        if draw(st.booleans()):  # anywhere, well past the limits
            positions = rng.uniform(URDF[idx, 0] - span[idx], URDF[idx, 1] + span[idx])
        else:  # a small step, like the actor's
            positions = last[idx] + rng.uniform(-0.3, 0.3, size=len(idx))
        points.append(TrajectoryPoint(t, positions.tolist()))
    return Case(limits, workspace, draw(st.sampled_from([1.0, 0.25, 0.01])) * rng.uniform(0.5, 1.0), tolerance,
                rng.uniform(0.0, 0.2), readings, Trajectory(names, points))


def run_case(case: Case) -> tuple[SafetyGate, Decision, list[str]]:
    """Feed the case to a fresh gate; return it, its decision and every escape found in what it forwarded."""
    gate = SafetyGate(case.limits, workspace=case.workspace, fk=KIN.fk, fk_joints=ARM, stale_timeout=1.0,
                      command_timeout=0.0, velocity_scale=case.velocity_scale, state_tolerance=case.state_tolerance,
                      state_jitter=case.state_jitter)
    for now, q in case.readings:
        gate.on_joint_state(NAMES, q, now)
    decision = gate.on_trajectory(case.command, case.readings[-1][0])
    return gate, decision, [] if decision.hold else escapes(case, decision.trajectory)


def escapes(case: Case, trajectory: Trajectory) -> list[str]:
    limits, box = case.limits, case.workspace
    measured = case.readings[-1][1]
    if not np.all(np.isfinite(measured)):
        return [f'forwarded from a non-finite measurement {measured.tolist()}']
    if np.any(measured < limits.lower - case.state_tolerance) or np.any(measured > limits.upper + case.state_tolerance):
        return [f'forwarded from a measurement outside the limits {measured.tolist()}']
    idx = [NAMES.index(name) for name in trajectory.joint_names]
    vmax = limits.velocity[idx] * case.velocity_scale
    # The box is judged from the measured position taken to its limits (a reading within state_tolerance
    # past a limit counts as at it); speed from the measured position itself, where the arm really is.
    q_previous = np.clip(measured, limits.lower, limits.upper)
    allowed = box.excess(KIN.fk(q_previous[:7])) if box is not None else 0.0
    previous, previous_t = measured[idx], 0.0
    problems = []
    for k, point in enumerate(trajectory.points):
        positions, t = np.asarray(point.positions, dtype=float), point.time_from_start
        if positions.shape != (len(idx),) or not np.all(np.isfinite(positions)) or not np.isfinite(t):
            return [f'point {k} is malformed: {point}']
        if np.any(positions < limits.lower[idx]) or np.any(positions > limits.upper[idx]):
            problems.append(f'point {k} outside the joint limits: {positions.tolist()}')
        moved = np.abs(positions - previous)
        if t < previous_t or np.any(moved > vmax * (t - previous_t) * (1 + SPEED_RTOL)):
            problems.append(f'point {k} too fast: {moved.tolist()} in {t - previous_t} s (limits {vmax.tolist()})')
        q = q_previous.copy()
        q[idx] = positions
        if box is not None:
            if box.excess(KIN.fk(q[:7])) > allowed + BOX_POINT_TOLERANCE:
                problems.append(f'point {k} {box.excess(KIN.fk(q[:7])):.6f} m outside the box (allowed {allowed:.6f})')
            inside = q_previous[:7] + np.linspace(0.0, 1.0, 6)[1:-1, None] * (q - q_previous)[:7]
            if np.max(box.excess(KIN.fk(inside))) > allowed + BOX_SEGMENT_TOLERANCE:
                problems.append(f'segment to point {k} leaves the box')
        previous, previous_t, q_previous = positions, t, q
    return problems


def outcome(gate: SafetyGate, decision: Decision) -> str:
    if not decision.hold:
        return 'forwarded'
    if gate.counters['output_check_failures']:
        return 'output_check_failures'
    return 'state_faults' if gate.state(0.0) == 'fault' else 'rejected'


def test_nothing_the_gate_forwards_escapes_the_limits_the_box_or_the_speed_limits():
    outcomes, events = Counter(), Counter()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(case=cases())
    def check(case):
        gate, decision, problems = run_case(case)
        assert not problems, problems
        outcomes[outcome(gate, decision)] += 1
        events.update(k for k in ('clamped_limits', 'clamped_workspace', 'retimed') if gate.counters[k])

    check()
    # Not vacuous: every branch is exercised, and the output check is only ever a backstop.
    total = sum(outcomes.values())
    assert outcomes['forwarded'] > 0.2 * total and outcomes['state_faults'] > 0.1 * total, outcomes
    assert min(events[k] for k in ('clamped_limits', 'clamped_workspace', 'retimed')) > 0.02 * total, events
    assert outcomes['output_check_failures'] == 0, outcomes
