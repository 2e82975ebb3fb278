"""ROS-free safety gate: decides, for every command to the arm, whether to forward a checked version or hold.

The gate never makes a command faster or bigger, only smaller or slower: positions are clamped to the joint
limits and to the end-effector workspace box, and time_from_start is stretched until no joint exceeds its
velocity limit. Anything it cannot verify (unknown joints, NaN, bad shapes, time going backwards, no, stale or
implausible joint state, a latched e-stop) is refused with a reason, and the arm is told to hold. Whatever path
computed it, every outgoing trajectory passes a last, independent check (limits, box, speed) before it leaves.

Measured states are not trusted either: a position outside its joint's limits (beyond a small tolerance), NaN or
inf, or a jump faster than the joint's velocity limit is a fault, and the gate holds until readings are plausible
again. Otherwise a glitching encoder or a wrong driver would become the start of every checked segment.

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

from jepa_common.trajectory import TrajectoryPoint

# Distance (m) by which the end effector may leave the workspace box before a point counts as outside;
# covers FK round-off, not a real tolerance.
_BOX_EPS = 1e-6
# Joint-space resolution (rad) at which the exit point of a segment from the box is bisected.
_BISECT_RESOLUTION = 1e-4
# Longest time_from_start accepted (s): beyond any real command, and well inside a Duration's int32 seconds.
MAX_TIME_FROM_START = 86400.0
# Relative slack of the output check's speed test: round-off of the retimed times, nothing more.
_SPEED_RTOL = 1e-9


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

    def excess(self, xyz: np.ndarray):
        """How far (m) xyz (..., 3) lies outside the box; 0 inside."""
        return np.linalg.norm(np.maximum(0.0, np.maximum(self.lower - xyz, xyz - self.upper)), axis=-1)

    def contains(self, other: 'WorkspaceBox') -> bool:
        return bool(np.all(other.lower >= self.lower) and np.all(other.upper <= self.upper))

    def margin(self, xyz: np.ndarray) -> float:
        """Distance (m) from xyz to the nearest face when inside; <= 0 outside."""
        return float(min(np.min(xyz - self.lower), np.min(self.upper - xyz)))


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
            'estops', 'stale_events', 'state_faults', 'command_timeouts', 'bad_joint_states',
            'output_check_failures')
# The counter of each measured-state problem the watchdog holds for.
_WATCHDOG_COUNTERS = {'fault': 'state_faults', 'stale': 'stale_events'}
# The settings SafetyGate.reconfigure may change while it runs.
LIVE_SETTINGS = ('velocity_scale', 'workspace', 'stale_timeout', 'command_timeout')


class SafetyGate:
    """Checks commands against joint limits, a workspace box, velocity limits, e-stop and two watchdogs.

    fk maps the positions of fk_joints (in that order) to the end-effector xyz; it is needed only with a
    workspace box. max_reach (m) bounds how far the end effector moves per radian of joint motion (the
    longest lever arm of the arm); it lets the workspace check take long provably-safe steps far from the
    walls, and fine_step (rad) sampling near them. A command whose check takes more than max_check_time
    seconds of CPU time is rejected. Commands may move a joint at velocity_scale times limits.velocity;
    measured states are checked against the unscaled limits (the arm may be moved by other means).
    A measured position up to state_tolerance (rad or m) outside its limits is plausible (sensor noise, a
    controller settling at a limit) and counts as at the limit; state_jitter (s) is the arrival-time jitter the
    jump check allows between two readings of a joint.
    """

    def __init__(self, limits: JointLimits, workspace: WorkspaceBox | None = None,
                 fk: Callable[[np.ndarray], np.ndarray] | None = None, fk_joints: Sequence[str] = (),
                 stale_timeout: float = 0.2, command_timeout: float = 0.5, max_points: int = 1000,
                 max_reach: float = 1.3, fine_step: float = 0.01, max_check_time: float | None = None,
                 velocity_scale: float = 1.0, state_tolerance: float = 0.01, state_jitter: float = 0.05):
        unknown = [j for j in fk_joints if j not in limits.names]
        if unknown:
            raise ValueError(f'fk_joints {unknown} are not among the gate joints {list(limits.names)}')
        if max_points < 1 or max_reach <= 0 or fine_step <= 0:
            raise ValueError('max_points, max_reach and fine_step must be positive')
        if not (state_tolerance >= 0 and state_jitter >= 0):
            raise ValueError('state_tolerance and state_jitter must not be negative')
        self.limits = limits
        self._fk = fk
        self._fk_index = np.array([limits.names.index(j) for j in fk_joints], dtype=int)
        self._index = {name: i for i, name in enumerate(limits.names)}
        settings = dict(velocity_scale=velocity_scale, workspace=workspace, stale_timeout=stale_timeout,
                        command_timeout=command_timeout)
        self._validate_settings(settings)
        self._apply_settings(settings)
        self.max_points = int(max_points)
        self.max_reach = float(max_reach)
        self.fine_step = float(fine_step)
        # CPU-time budget (s) for checking one command, None = unlimited: the node handles e-stops on the
        # same thread, so a pathological command must not keep it busy. CPU time, not wall time, so that a
        # loaded machine pausing the process does not get ordinary commands rejected.
        self.max_check_time = None if max_check_time is None else float(max_check_time)
        self.state_tolerance = float(state_tolerance)
        self.state_jitter = float(state_jitter)

        n = len(limits.names)
        # Last trusted position of each joint and when it arrived.
        self._measured = np.full(n, np.nan)
        self._measured_at = np.full(n, -np.inf)
        # Last possible (finite, within the limits) reading of each joint, trusted or not, for the jump check:
        # after a real jump (a simulator reset) the next consistent reading is trusted again.
        self._reading = np.full(n, np.nan)
        self._reading_at = np.full(n, -np.inf)
        # Joint index -> why its latest reading is not trusted.
        self._faults: dict[int, str] = {}
        self._estop_input = False
        self._estop_latched = False
        # 'fault' or 'stale' while the watchdog's hold for that condition is out; one hold per episode.
        self._watchdog_hold: str | None = None
        # Time of the last forwarded command while it is still in force; None when holding.
        self._active_since: float | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_error = ''

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.limits.names

    @property
    def max_velocity(self) -> np.ndarray:
        """The velocity limits commands are held to, in the order of joint_names."""
        return self.limits.velocity * self.velocity_scale

    # ---- live settings -----------------------------------------------------------------------------

    def reconfigure(self, **changes) -> Decision | None:
        """Change any of LIVE_SETTINGS, all of them or none. Tightening (slower, a smaller box or one where
        there was none, shorter timeouts) is always accepted; loosening only while the e-stop is latched, so
        that it is an operator's deliberate act with the arm held, not something any node on the graph can
        do mid-motion. Raises ValueError, changing nothing, with the reason. Returns a hold when a command is
        in force: it was checked under the old settings."""
        unknown = sorted(set(changes) - set(LIVE_SETTINGS))
        if unknown:
            raise ValueError(f'{unknown} cannot be changed while the gate runs (live: {list(LIVE_SETTINGS)})')
        old = {name: getattr(self, name) for name in LIVE_SETTINGS}
        new = {**old, **changes}
        self._validate_settings(new)
        loosened = [name for name in changes if _loosens(name, old[name], new[name])]
        if loosened and not self._estop_latched:
            raise ValueError(f'{loosened} would loosen the gate: accepted only while the e-stop is latched '
                             f'(publish true on the e-stop, change, then release)')
        self._apply_settings(new)
        if self._active_since is None or all(_same(old[name], new[name]) for name in changes):
            return None
        return self._hold(f'settings changed ({", ".join(sorted(changes))}): the command in force was '
                          f'checked under the old ones')

    def _validate_settings(self, settings: dict) -> None:
        if not 0 < settings['velocity_scale'] <= 1:
            raise ValueError(f'velocity_scale must be in (0, 1], got {settings["velocity_scale"]}')
        if not 0 < settings['stale_timeout'] < np.inf:
            raise ValueError(f'stale_timeout must be positive, got {settings["stale_timeout"]}')
        if not np.isfinite(settings['command_timeout']):
            raise ValueError(f'command_timeout must be a number (<= 0 disables), got {settings["command_timeout"]}')
        if settings['workspace'] is not None and (self._fk is None or not self._fk_index.size):
            raise ValueError('a workspace box needs fk and fk_joints')

    def _apply_settings(self, settings: dict) -> None:
        self.velocity_scale = float(settings['velocity_scale'])
        self.workspace = settings['workspace']
        self.stale_timeout = float(settings['stale_timeout'])
        # <= 0 disables the silent-commander watchdog.
        self.command_timeout = float(settings['command_timeout'])

    # ---- inputs ------------------------------------------------------------------------------------

    def on_joint_state(self, names: Sequence[str], positions: Sequence[float], now: float) -> str | None:
        """Record measured positions of the gate's joints (others are ignored). Returns an error or None.

        A message whose names and positions do not pair up changes nothing. A reading the gate cannot believe
        (not a finite number, outside the joint's limits by more than state_tolerance, or a jump from the
        joint's previous reading faster than its unscaled velocity limit allows, give or take state_jitter
        seconds) faults the joint: its last trusted position stays, commands are refused and tick() holds,
        until a plausible reading of that joint arrives."""
        if len(names) != len(positions):
            return self._bad_joint_state(f'joint state has {len(names)} names but {len(positions)} positions')
        errors = []
        for name, value in zip(names, positions):
            i = self._index.get(name)
            if i is None:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = np.nan
            impossible = self._impossible(i, value)
            fault = impossible or self._jumped(i, value, now)
            if fault is None:
                self._faults.pop(i, None)
                self._measured[i], self._measured_at[i] = value, now
            else:
                self._faults[i] = fault
                errors.append(fault)
            if impossible is None:
                self._reading[i], self._reading_at[i] = value, now
        return self._bad_joint_state('; '.join(errors)) if errors else None

    def _impossible(self, i: int, value: float) -> str | None:
        name, lower, upper = self.limits.names[i], self.limits.lower[i], self.limits.upper[i]
        if not np.isfinite(value):
            return f'{name} measured {value}: not a finite number'
        if not lower - self.state_tolerance <= value <= upper + self.state_tolerance:
            return (f'{name} measured {value:.4f}, outside its limits [{lower:.4f}, {upper:.4f}] by more than '
                    f'{self.state_tolerance}')
        return None

    def _jumped(self, i: int, value: float, now: float) -> str | None:
        name = self.limits.names[i]
        elapsed = now - self._reading_at[i]
        jump = abs(value - self._reading[i])
        if jump > self.limits.velocity[i] * (elapsed + self.state_jitter):  # False for the first reading (NaN)
            return (f'{name} measured {value:.4f}, {jump:.4f} from its previous reading {elapsed:.3f} s earlier: '
                    f'faster than its velocity limit {self.limits.velocity[i]}')
        return None

    def _bad_joint_state(self, error: str) -> str:
        self.counters['bad_joint_states'] += 1
        self.last_error = error
        return error

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
        """Watchdogs: hold once when a joint's reading is implausible or joint states go stale (by now), and
        when the commander falls silent (by command_clock, default now: a simulation running slower than real
        time slows its commanders too)."""
        if self._estop_latched or not self._has_state():
            return None
        problem = self._state_problem(now)
        if problem is not None:
            kind, message = problem
            if self._watchdog_hold == kind:
                return None
            self._watchdog_hold = kind
            self.counters[_WATCHDOG_COUNTERS[kind]] += 1
            self.last_error = message
            return self._hold(message)
        self._watchdog_hold = None
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
        problem = self._state_problem(now)
        if problem is not None:
            return problem[0]
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

    def _state_problem(self, now: float) -> tuple[str, str] | None:
        """(state, why) when the measured state cannot be trusted now: 'fault', 'no_state' or 'stale'."""
        if self._faults:
            return 'fault', 'implausible joint state: ' + '; '.join(self._faults.values())
        if not self._has_state():
            return 'no_state', f'no joint state received yet for {self.missing_joints()}'
        age = self._state_age(now)
        if age > self.stale_timeout:
            return 'stale', f'joint states stale ({age:.3f} s old, timeout {self.stale_timeout} s)'
        return None

    def _require_ready(self, now: float) -> None:
        if self._estop_latched:
            raise Rejected('e-stop is latched (call the release service once the e-stop input is false)')
        problem = self._state_problem(now)
        if problem is not None:
            raise Rejected(problem[1])

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
        lower, upper = self.limits.lower[idx], self.limits.upper[idx]
        reasons, events = [], []
        checked = np.clip(positions, lower, upper)
        over = [names[j] for j in np.flatnonzero(np.any(checked != positions, axis=0))]
        if over:
            events.append('clamped_limits')
            reasons.append(f'clamped to joint limits: {over}')

        # A measured position within state_tolerance outside its limits counts as at the limit: targets the
        # workspace clamp slides back along a segment then stay inside the limits too.
        start = np.clip(self._measured, self.limits.lower, self.limits.upper)
        if self.workspace is not None and np.any(np.isin(self._fk_index, idx)):
            allowed_excess = self._allowed_excess(start)
            previous = start
            clamped_points = []
            for i in range(len(checked)):
                target = previous.copy()
                target[idx] = checked[i]
                start_arm, target_arm = previous[self._fk_index], target[self._fk_index]
                fraction = self._workspace_fraction(start_arm, target_arm, allowed_excess)
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

        new_times = self._retime(idx, times, checked)
        if new_times[-1] > times[-1] * (1 + 1e-9):
            events.append('retimed')
            reasons.append(f'slowed down to the velocity limits: {times[-1]:.3f} s -> {new_times[-1]:.3f} s')

        self._verify_output(names, idx, new_times, checked, start)
        points = [TrajectoryPoint(float(t), q.copy()) for t, q in zip(new_times, checked)]
        return Decision(Trajectory(list(names), points), reasons), events

    def _retime(self, idx, times, positions) -> np.ndarray:
        """Stretch each segment (the first starts at the measured position at time 0) until no joint moves
        faster than its limit: with linear interpolation, the segment's speed is its average speed."""
        vmax = self.max_velocity[idx]
        previous, previous_time, new_time = self._measured[idx], 0.0, 0.0
        new_times = np.empty_like(times)
        for i in range(len(positions)):
            new_time += max(times[i] - previous_time, float(np.max(np.abs(positions[i] - previous) / vmax)))
            new_times[i] = new_time
            previous, previous_time = positions[i], times[i]
        return new_times

    def _verify_output(self, names, idx, times, positions, start) -> None:
        """The last check before a trajectory leaves, whatever computed it: every point inside the joint
        limits and (with a box) no farther outside the box than start (the measured position within the
        limits), times increasing, and no segment (the first from the measured position) faster than the
        velocity limits. Raises Rejected on any violation."""
        problem = None
        steps = np.diff(times, prepend=0.0)
        moves = np.abs(np.diff(positions, axis=0, prepend=self._measured[idx][None]))
        outside = np.argwhere((positions < self.limits.lower[idx]) | (positions > self.limits.upper[idx]))
        too_fast = np.argwhere(moves > self.max_velocity[idx] * steps[:, None] * (1 + _SPEED_RTOL))
        if outside.size:
            i, j = outside[0]
            problem = f'point {i}: {names[j]} at {positions[i, j]} is outside its limits'
        elif steps[0] < 0 or np.any(steps[1:] <= 0):
            problem = f'times do not increase: {times.tolist()}'
        elif too_fast.size:
            i, j = too_fast[0]
            problem = f'point {i}: {names[j]} moves {moves[i, j]} in {steps[i]} s, faster than its velocity limit'
        elif self.workspace is not None:
            configurations = np.repeat(start[None], len(positions), axis=0)
            configurations[:, idx] = positions
            excess = self.workspace.excess(self._fk(configurations[:, self._fk_index]))
            beyond = np.flatnonzero(excess > self._allowed_excess(start))
            if beyond.size:
                problem = f'point {beyond[0]} is {excess[beyond[0]]:.4f} m outside the workspace box'
        if problem is not None:
            self.counters['output_check_failures'] += 1
            raise Rejected(f'output check failed: {problem}')

    def _allowed_excess(self, start: np.ndarray) -> float:
        """How far (m) outside the box the end effector may go: inside if the arm is, else no farther out."""
        return float(self.workspace.excess(self._fk(start[self._fk_index]))) + _BOX_EPS

    def _within_budget(self, started: float, stage: str) -> None:
        if self.max_check_time is not None and time.thread_time() - started > self.max_check_time:
            raise Rejected(f'checking took over {self.max_check_time * 1000:.0f} ms (at {stage}): send fewer '
                           f'points or shorter segments')

    def _workspace_fraction(self, start: np.ndarray, target: np.ndarray, allowed_excess: float) -> float:
        """Largest f in [0, 1] such that the end effector, moving in joint space from start (no more than
        allowed_excess outside the box) towards start + f * (target - start), stays within allowed_excess."""
        box, fk = self.workspace, self._fk
        delta = target - start
        span_max = float(np.max(np.abs(delta)))
        if span_max == 0.0:
            return 1.0
        span_l1 = float(np.sum(np.abs(delta)))
        xyz = fk(start)
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


def _loosens(name: str, old, new) -> bool:
    """Whether changing live setting name from old to new lets more through."""
    if name == 'workspace':
        return old is not None and (new is None or not old.contains(new))
    if name == 'command_timeout':  # <= 0 disables the watchdog: the loosest of all
        old, new = (value if value > 0 else np.inf for value in (old, new))
    return new > old


def _same(old, new) -> bool:
    if isinstance(old, WorkspaceBox) and isinstance(new, WorkspaceBox):
        return old.contains(new) and new.contains(old)
    return old is new or old == new
