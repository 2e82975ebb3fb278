"""ROS-free safety gate: decides, for every command to the arm, whether to forward a checked version or hold.

The gate never makes a command faster or bigger, only smaller or slower: positions are clamped to the joint
limits and to the end-effector workspace box, and time_from_start is stretched until no joint exceeds its
velocity limit. Anything it cannot verify (unknown joints, NaN, bad shapes, time going backwards, no or stale
joint state, a latched e-stop) is refused with a reason, and the arm is told to hold.

Forwarded points carry positions only (commanded velocities and accelerations are validated, then dropped):
a JointTrajectoryController then interpolates linearly, along exactly the straight joint-space segments at
exactly the speeds the gate verified. Cubic or quintic segments through commanded velocities would bulge
off those segments, past a joint limit or out of the box, and peak above their average speed.

All times are seconds supplied by the caller: joint-state freshness and everything else on one monotonic
clock (the node uses the steady clock, so a stopped simulation cannot freeze the stale check), the
silent-commander watchdog optionally on the commanders' clock (the node's ROS clock, sim time in simulation).
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

# Distance (m) by which the end effector may leave the workspace box before a point counts as outside;
# covers FK round-off, not a real tolerance.
_BOX_EPS = 1e-6
# Joint-space resolution (rad) at which the exit point of a segment from the box is bisected.
_BISECT_RESOLUTION = 1e-4
# Longest time_from_start accepted (s): beyond any real command, and well inside a Duration's int32 seconds.
MAX_TIME_FROM_START = 86400.0


@dataclass(frozen=True)
class JointLimits:
    """Position and velocity limits of the joints the gate commands, in the order of names."""
    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray

    def __post_init__(self):
        n = len(self.names)
        for label in ('lower', 'upper', 'velocity'):
            values = np.asarray(getattr(self, label), dtype=np.float64)
            if values.shape != (n,):
                raise ValueError(f'{label} limits have shape {values.shape}, expected ({n},) for joints '
                                 f'{list(self.names)}')
            if not np.all(np.isfinite(values)):
                raise ValueError(f'{label} limits contain NaN or inf: {values.tolist()}')
            object.__setattr__(self, label, values)
        if n == 0:
            raise ValueError('no joints given')
        if len(set(self.names)) != n:
            raise ValueError(f'duplicate joint names in {list(self.names)}')
        bad = [name for name, lo, hi in zip(self.names, self.lower, self.upper) if lo > hi]
        if bad:
            raise ValueError(f'lower limit above upper limit for joints {bad}')
        bad = [name for name, v in zip(self.names, self.velocity) if v <= 0]
        if bad:
            raise ValueError(f'velocity limit must be positive for joints {bad}')


@dataclass(frozen=True)
class WorkspaceBox:
    """Axis-aligned box (metres, arm base frame) the end effector must stay in."""
    lower: np.ndarray
    upper: np.ndarray

    def __post_init__(self):
        for label in ('lower', 'upper'):
            values = np.asarray(getattr(self, label), dtype=np.float64)
            if values.shape != (3,) or not np.all(np.isfinite(values)):
                raise ValueError(f'workspace {label} corner must be 3 finite numbers, got {values.tolist()}')
            object.__setattr__(self, label, values)
        if np.any(self.lower >= self.upper):
            raise ValueError(f'workspace box is empty: lower {self.lower.tolist()} upper {self.upper.tolist()}')

    def excess(self, xyz: np.ndarray) -> float:
        """How far (m) xyz lies outside the box; 0 inside."""
        return float(np.linalg.norm(np.maximum(0.0, np.maximum(self.lower - xyz, xyz - self.upper))))

    def margin(self, xyz: np.ndarray) -> float:
        """Distance (m) from xyz to the nearest face when inside; <= 0 outside."""
        return float(min(np.min(xyz - self.lower), np.min(self.upper - xyz)))


@dataclass
class TrajectoryPoint:
    """One point as a commander sent it: nothing is trusted yet (any lengths, any values)."""
    time_from_start: float
    positions: Sequence[float]
    velocities: Sequence[float] = ()
    accelerations: Sequence[float] = ()


@dataclass
class Trajectory:
    joint_names: Sequence[str]
    points: Sequence[TrajectoryPoint]


@dataclass
class Decision:
    """forward (trajectory set: the checked command) or hold (trajectory None), and why; rejected marks a
    command refused as unverifiable (reasons[0] says why)."""
    trajectory: Trajectory | None
    reasons: list[str] = field(default_factory=list)
    rejected: bool = False

    @property
    def hold(self) -> bool:
        return self.trajectory is None


class Rejected(ValueError):
    """A command the gate cannot verify; the message names what was wrong."""


COUNTERS = ('commands', 'forwarded', 'rejected', 'clamped_limits', 'clamped_workspace', 'retimed', 'holds',
            'estops', 'stale_events', 'command_timeouts', 'bad_joint_states')


class SafetyGate:
    """Checks commands against joint limits, a workspace box, velocity limits, e-stop and two watchdogs.

    fk maps the positions of fk_joints (in that order) to the end-effector xyz; it is needed only with a
    workspace box. max_reach (m) bounds how far the end effector moves per radian of joint motion (the
    longest lever arm of the arm); it lets the workspace check take long provably-safe steps far from the
    walls, and fine_step (rad) sampling near them. A command whose check takes more than max_check_time
    seconds of CPU time is rejected.
    """

    def __init__(self, limits: JointLimits, workspace: WorkspaceBox | None = None,
                 fk: Callable[[np.ndarray], np.ndarray] | None = None, fk_joints: Sequence[str] = (),
                 stale_timeout: float = 0.2, command_timeout: float = 0.5, max_points: int = 1000,
                 max_reach: float = 1.3, fine_step: float = 0.01, max_check_time: float | None = None):
        if workspace is not None and (fk is None or not fk_joints):
            raise ValueError('a workspace box needs fk and fk_joints')
        unknown = [j for j in fk_joints if j not in limits.names]
        if unknown:
            raise ValueError(f'fk_joints {unknown} are not among the gate joints {list(limits.names)}')
        if stale_timeout <= 0 or max_points < 1 or max_reach <= 0 or fine_step <= 0:
            raise ValueError('stale_timeout, max_points, max_reach and fine_step must be positive')
        self.limits = limits
        self.workspace = workspace
        self._fk = fk
        self._fk_index = np.array([limits.names.index(j) for j in fk_joints], dtype=int)
        self._index = {name: i for i, name in enumerate(limits.names)}
        self.stale_timeout = float(stale_timeout)
        # <= 0 disables the silent-commander watchdog.
        self.command_timeout = float(command_timeout)
        self.max_points = int(max_points)
        self.max_reach = float(max_reach)
        self.fine_step = float(fine_step)
        # CPU-time budget (s) for checking one command, None = unlimited: the node handles e-stops on the
        # same thread, so a pathological command must not keep it busy. CPU time, not wall time, so that a
        # loaded machine pausing the process does not get ordinary commands rejected.
        self.max_check_time = None if max_check_time is None else float(max_check_time)

        n = len(limits.names)
        self._measured = np.full(n, np.nan)
        self._measured_at = np.full(n, -np.inf)
        self._estop_input = False
        self._estop_latched = False
        self._stale_hold_sent = False
        # Time of the last forwarded command while it is still in force; None when holding.
        self._active_since: float | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_error = ''

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.limits.names

    # ---- inputs ------------------------------------------------------------------------------------

    def on_joint_state(self, names: Sequence[str], positions: Sequence[float], now: float) -> str | None:
        """Record measured positions of the gate's joints (others are ignored). Returns an error or None."""
        error = None
        if len(names) != len(positions):
            error = f'joint state has {len(names)} names but {len(positions)} positions'
        else:
            updates = {}
            for name, value in zip(names, positions):
                if name in self._index:
                    try:
                        updates[self._index[name]] = float(value)
                    except (TypeError, ValueError):
                        error = f'joint state position of {name} is not a number: {value!r}'
                        break
            if error is None:
                bad = [self.limits.names[i] for i, v in updates.items() if not np.isfinite(v)]
                if bad:
                    error = f'joint state has NaN or inf positions for {bad}'
        if error is not None:
            self.counters['bad_joint_states'] += 1
            self.last_error = error
            return error
        for i, value in updates.items():
            self._measured[i] = value
            self._measured_at[i] = now
        return None

    def on_estop(self, active: bool) -> Decision | None:
        """True latches the e-stop and holds at once; false only records the input (release is explicit)."""
        self._estop_input = bool(active)
        if not active:
            return None
        if not self._estop_latched:
            self.counters['estops'] += 1
            self._estop_latched = True
        return self._hold('e-stop')

    def release_estop(self) -> tuple[bool, str]:
        if not self._estop_latched:
            return True, 'e-stop was not latched'
        if self._estop_input:
            return False, 'e-stop input is still true; clear it before releasing'
        self._estop_latched = False
        return True, 'e-stop released; commands are accepted again'

    def on_trajectory(self, trajectory: Trajectory, now: float, command_clock: float | None = None) -> Decision:
        """command_clock: the time on the clock the commander runs on (sim time in simulation; default now),
        for the silent-commander watchdog."""
        self.counters['commands'] += 1
        try:
            started = time.thread_time()
            names, times, positions = self._parse(trajectory, started)
            if not len(times):
                return self._hold('commander requested hold')
            self._require_ready(now)
            decision, events = self._check(names, times, positions, started)
        except Rejected as error:
            self.counters['rejected'] += 1
            self.last_error = str(error)
            decision = self._hold(f'rejected: {error}')
            decision.rejected = True
            return decision
        for event in events:
            self.counters[event] += 1
        self.counters['forwarded'] += 1
        self._active_since = now if command_clock is None else command_clock
        return decision

    def tick(self, now: float, command_clock: float | None = None) -> Decision | None:
        """Watchdogs: hold once when joint states go stale (by now), and when the commander falls silent
        (by command_clock, default now: a simulation running slower than real time slows its commanders too)."""
        if self._estop_latched or not self._has_state():
            return None
        age = self._state_age(now)
        if age > self.stale_timeout:
            if self._stale_hold_sent:
                return None
            self._stale_hold_sent = True
            self.counters['stale_events'] += 1
            self.last_error = f'joint states stale ({age:.3f} s old, timeout {self.stale_timeout} s)'
            return self._hold(self.last_error)
        self._stale_hold_sent = False
        command_clock = now if command_clock is None else command_clock
        if (self._active_since is not None and self.command_timeout > 0
                and command_clock - self._active_since > self.command_timeout):
            self.counters['command_timeouts'] += 1
            return self._hold(f'no command for {command_clock - self._active_since:.3f} s '
                              f'(timeout {self.command_timeout} s)')
        return None

    # ---- diagnostics -------------------------------------------------------------------------------

    def state(self, now: float) -> str:
        if self._estop_latched:
            return 'estop'
        if not self._has_state():
            return 'no_state'
        if self._state_age(now) > self.stale_timeout:
            return 'stale'
        return 'forwarding' if self._active_since is not None else 'holding'

    def missing_joints(self) -> list[str]:
        return [n for n, t in zip(self.limits.names, self._measured_at) if not np.isfinite(t)]

    # ---- internals ---------------------------------------------------------------------------------

    def _hold(self, reason: str) -> Decision:
        self.counters['holds'] += 1
        self._active_since = None
        return Decision(None, [reason])

    def _has_state(self) -> bool:
        return bool(np.all(np.isfinite(self._measured_at)))

    def _state_age(self, now: float) -> float:
        return float(now - np.min(self._measured_at))

    def _require_ready(self, now: float) -> None:
        if self._estop_latched:
            raise Rejected('e-stop is latched (call the release service once the e-stop input is false)')
        if not self._has_state():
            raise Rejected(f'no joint state received yet for {self.missing_joints()}')
        age = self._state_age(now)
        if age > self.stale_timeout:
            raise Rejected(f'joint states stale ({age:.3f} s old, timeout {self.stale_timeout} s)')

    def _parse(self, trajectory: Trajectory, started: float):
        names = list(trajectory.joint_names)
        if not names:
            raise Rejected('trajectory has no joint names')
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise Rejected(f'unknown joint names {unknown} (known: {list(self.limits.names)})')
        if len(set(names)) != len(names):
            raise Rejected(f'duplicate joint names in {names}')
        points = list(trajectory.points)
        if len(points) > self.max_points:
            raise Rejected(f'trajectory has {len(points)} points, more than max_points={self.max_points}')
        n = len(names)
        with_velocities = [len(p.velocities) > 0 for p in points]
        if any(with_velocities) and not all(with_velocities):
            raise Rejected('velocities are given for some points but not for all')
        for i, point in enumerate(points):
            # Velocities and accelerations are never forwarded (see the module docstring), but malformed ones
            # still mark a command that cannot be trusted.
            for label, values, optional in (('positions', point.positions, False),
                                            ('velocities', point.velocities, True),
                                            ('accelerations', point.accelerations, True)):
                if len(values) != n and not (optional and len(values) == 0):
                    raise Rejected(f'point {i} {label}: {len(values)} values for {n} joint names')
        # One conversion per field for the whole trajectory: per-point numpy calls would dominate the check.
        times = _finite_rows('time_from_start', [(p.time_from_start,) for p in points], 1)[:, 0]
        self._within_budget(started, 'reading the points')
        out_of_range = np.flatnonzero((times < 0) | (times > MAX_TIME_FROM_START))
        if out_of_range.size:
            i = out_of_range[0]
            raise Rejected(f'point {i} time_from_start {times[i]} is negative or beyond {MAX_TIME_FROM_START} s')
        backwards = np.flatnonzero(np.diff(times) <= 0)
        if backwards.size:
            i = backwards[0] + 1
            raise Rejected(f'points out of time order: point {i} at {times[i]} s is not after point {i - 1} '
                           f'at {times[i - 1]} s')
        positions = _finite_rows('positions', [p.positions for p in points], n)
        if any(with_velocities):
            _finite_rows('velocities', [p.velocities for p in points], n)
        if any(len(p.accelerations) for p in points):
            _finite_rows('accelerations', [p.accelerations if len(p.accelerations) else (0.0,) * n for p in points], n)
        self._within_budget(started, 'reading the points')
        return names, times, positions

    def _check(self, names, times, positions, started: float) -> tuple[Decision, list[str]]:
        """The checked trajectory and the counters it bumps; raises Rejected past the time budget."""
        idx = np.array([self._index[n] for n in names], dtype=int)
        lower, upper, vmax = self.limits.lower[idx], self.limits.upper[idx], self.limits.velocity[idx]
        reasons, events = [], []
        checked = np.clip(positions, lower, upper)
        over = [names[j] for j in np.flatnonzero(np.any(checked != positions, axis=0))]
        if over:
            events.append('clamped_limits')
            reasons.append(f'clamped to joint limits: {over}')

        if self.workspace is not None and np.any(np.isin(self._fk_index, idx)):
            previous = self._measured.copy()
            clamped_points = []
            for i in range(len(checked)):
                target = previous.copy()
                target[idx] = checked[i]
                start_arm, target_arm = previous[self._fk_index], target[self._fk_index]
                fraction = self._workspace_fraction(start_arm, target_arm)
                self._within_budget(started, f'the workspace at point {i} of {len(checked)}')
                if fraction < 1.0:
                    target[self._fk_index] = start_arm + fraction * (target_arm - start_arm)
                    checked[i] = target[idx]
                    clamped_points.append(i)
                previous = target
            if clamped_points:
                events.append('clamped_workspace')
                reasons.append(f'clamped to the workspace box at {len(clamped_points)} of {len(checked)} points '
                               f'(first: point {clamped_points[0]})')

        # Stretch each segment (the first starts at the measured position at time 0) until no joint moves
        # faster than its limit: with linear interpolation, the segment's speed is its average speed.
        previous, previous_time, new_time = self._measured[idx], 0.0, 0.0
        new_times = np.empty_like(times)
        for i in range(len(checked)):
            new_time += max(times[i] - previous_time, float(np.max(np.abs(checked[i] - previous) / vmax)))
            new_times[i] = new_time
            previous, previous_time = checked[i], times[i]
        if new_times[-1] > times[-1] * (1 + 1e-9):
            events.append('retimed')
            reasons.append(f'slowed down to the velocity limits: {times[-1]:.3f} s -> {new_times[-1]:.3f} s')

        points = [TrajectoryPoint(float(t), q.copy()) for t, q in zip(new_times, checked)]
        return Decision(Trajectory(list(names), points), reasons), events

    def _within_budget(self, started: float, stage: str) -> None:
        if self.max_check_time is not None and time.thread_time() - started > self.max_check_time:
            raise Rejected(f'checking took over {self.max_check_time * 1000:.0f} ms (at {stage}): send fewer '
                           f'points or shorter segments')

    def _workspace_fraction(self, start: np.ndarray, target: np.ndarray) -> float:
        """Largest f in [0, 1] such that the end effector, moving in joint space from start towards
        start + f * (target - start), never gets farther outside the box than it was at start."""
        box, fk = self.workspace, self._fk
        delta = target - start
        span_max = float(np.max(np.abs(delta)))
        if span_max == 0.0:
            return 1.0
        span_l1 = float(np.sum(np.abs(delta)))
        xyz = fk(start)
        allowed_excess = box.excess(xyz) + _BOX_EPS
        fine = self.fine_step / span_max
        t = 0.0
        while t < 1.0:
            # Inside the box the end effector moves at most max_reach * |dq|_1, so a step that covers
            # less than the margin cannot leave it; near the walls (or outside) sample finely.
            margin = box.margin(xyz)
            step = max(fine, margin / (self.max_reach * span_l1)) if margin > 0 else fine
            t_next = min(1.0, t + step)
            xyz_next = fk(start + t_next * delta)
            if box.excess(xyz_next) > allowed_excess:
                return self._bisect_exit(start, delta, t, t_next, allowed_excess, span_max)
            t, xyz = t_next, xyz_next
        return 1.0

    def _bisect_exit(self, start, delta, t_ok, t_out, allowed_excess, span_max) -> float:
        while (t_out - t_ok) * span_max > _BISECT_RESOLUTION:
            t_mid = 0.5 * (t_ok + t_out)
            if self.workspace.excess(self._fk(start + t_mid * delta)) > allowed_excess:
                t_out = t_mid
            else:
                t_ok = t_mid
        return t_ok


def _finite_rows(label: str, rows: list, width: int) -> np.ndarray:
    """rows (one per point, each of width numbers) -> (len(rows), width) float array of finite numbers."""
    try:
        array = np.array(rows, dtype=np.float64).reshape(len(rows), width)
    except (TypeError, ValueError):
        for i, row in enumerate(rows):
            try:
                np.array(row, dtype=np.float64)
            except (TypeError, ValueError):
                raise Rejected(f'point {i} {label} are not numbers') from None
        raise Rejected(f'{label} are not numbers') from None
    bad = np.flatnonzero(~np.all(np.isfinite(array), axis=1))
    if bad.size:
        raise Rejected(f'point {bad[0]} {label} contain NaN or inf')
    return array
