"""Joint trajectory following as ros2_control's JointTrajectoryController does it, without ROS.

A trajectory (joint names + points with time_from_start) starts at `start_time` from the joints' current
positions; the follower is sampled at any time for the joint targets. Semantics kept from the JTC:
a new trajectory replaces the current one; one without points means "hold the current position"; joints the
trajectory does not name keep their current targets; targets are clamped to the joint limits.

`tracking` below 1 makes a sluggish controller (a perturbation of the world, jepa_sim.perturbation): every
trajectory is followed for only that share of the way from where the joints were when it arrived.
"""
from typing import Sequence

import numpy as np

from jepa_common.trajectory import TrajectoryPoint

# Clamping by less than this is not reported: measured positions overshoot limits by that much.
CLAMP_REPORT_TOLERANCE = 1e-3


class TrajectoryFollower:
    """Targets for a fixed set of joints over time. Times are seconds on whatever clock the caller uses."""

    def __init__(self, joint_names: Sequence[str], lower: Sequence[float], upper: Sequence[float],
                 initial_positions: Sequence[float] | None = None, tracking: float = 1.0):
        self.joint_names = tuple(joint_names)
        # Share of each commanded step followed, from the next trajectory on (1: all of it).
        self.tracking = tracking
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        if len(self._index) != len(self.joint_names):
            raise ValueError(f'duplicate joint names in {list(self.joint_names)}')
        self.lower = np.asarray(lower, dtype=float)
        self.upper = np.asarray(upper, dtype=float)
        if self.lower.shape != (len(self.joint_names),) or self.upper.shape != self.lower.shape:
            raise ValueError(f'need lower and upper limits for each of the {len(self.joint_names)} joints')
        start = np.zeros(len(self.joint_names)) if initial_positions is None else initial_positions
        self.hold(start, 0.0)

    def hold(self, current_positions: Sequence[float], now: float) -> None:
        """Stop any trajectory and keep the joints where they are."""
        current = self._clamp(self._check_full(current_positions, 'current positions'))
        self._start = float(now)
        self._initial = current
        self._times = np.zeros(1)
        self._positions = current[None, :]
        self._velocities = np.zeros_like(self._positions)
        self._cubic = False

    def set_trajectory(self, joint_names: Sequence[str], points: Sequence[TrajectoryPoint], start_time: float,
                       current_positions: Sequence[float]) -> list[str]:
        """Replace the current trajectory. Returns the names of joints whose targets had to be clamped to
        their limits (by more than CLAMP_REPORT_TOLERANCE). Raises ValueError naming the problem (the current
        trajectory is then kept)."""
        current = self._check_full(current_positions, 'current positions')
        columns = self._validate(joint_names, points)
        if not points:
            self.hold(current, start_time)
            return []
        # Joints this trajectory does not name stay at the target they had when it arrived.
        held = self.sample(start_time)[0]
        start = held.copy()
        start[columns] = current[columns]
        n = len(points)
        times = np.zeros(n + 1)
        positions = np.repeat(start[None, :], n + 1, axis=0)
        velocities = np.zeros((n + 1, len(self.joint_names)))
        cubic = all(p.velocities is not None and len(p.velocities) for p in points)
        for k, point in enumerate(points, start=1):
            times[k] = point.time_from_start
            positions[k, columns] = point.positions
            if cubic:
                velocities[k, columns] = point.velocities
        if self.tracking != 1.0:
            positions[1:] = start + self.tracking * (positions[1:] - start)
            velocities *= self.tracking
        clamped = self._clamp(positions)
        beyond = np.any(np.abs(clamped - positions) > CLAMP_REPORT_TOLERANCE, axis=0)
        clamped_names = [self.joint_names[j] for j in np.flatnonzero(beyond)]
        # A first point at time 0 is a step; keep a strictly increasing time axis for the interpolation.
        if times[1] == 0.0:
            times, clamped, velocities = times[1:], clamped[1:], velocities[1:]
        self._initial = self._clamp(start)
        self._start, self._times, self._positions, self._velocities = float(start_time), times, clamped, velocities
        self._cubic = cubic
        return clamped_names

    def sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(target positions, target velocities) of all joints at time `now`."""
        tau = now - self._start
        times, pos, vel = self._times, self._positions, self._velocities
        if tau < 0.0:
            return self._initial.copy(), np.zeros(len(self.joint_names))
        if tau <= times[0] or tau >= times[-1]:
            return (pos[0] if tau <= times[0] else pos[-1]).copy(), np.zeros(len(self.joint_names))
        k = int(np.searchsorted(times, tau, side='right')) - 1
        duration = times[k + 1] - times[k]
        s = (tau - times[k]) / duration
        p0, p1 = pos[k], pos[k + 1]
        if not self._cubic:
            return p0 + s * (p1 - p0), (p1 - p0) / duration
        # Cubic Hermite between the points' positions and velocities.
        m0, m1 = vel[k] * duration, vel[k + 1] * duration
        h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
        d00, d10, d01, d11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
        position = h00 * p0 + h10 * m0 + h01 * p1 + h11 * m1
        velocity = (d00 * p0 + d10 * m0 + d01 * p1 + d11 * m1) / duration
        return np.clip(position, self.lower, self.upper), velocity

    def finished(self, now: float) -> bool:
        return now - self._start >= self._times[-1]

    @property
    def end_time(self) -> float:
        return self._start + float(self._times[-1])

    @property
    def final_positions(self) -> np.ndarray:
        return self._positions[-1].copy()

    def _clamp(self, positions: np.ndarray) -> np.ndarray:
        return np.clip(positions, self.lower, self.upper)

    def _check_full(self, values, what: str) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if values.shape != (len(self.joint_names),):
            raise ValueError(f'{what} have shape {values.shape}, expected ({len(self.joint_names)},)')
        if not np.all(np.isfinite(values)):
            raise ValueError(f'{what} contain NaN or inf')
        return values

    def _validate(self, joint_names: Sequence[str], points: Sequence[TrajectoryPoint]) -> list[int]:
        names = list(joint_names)
        if not names:
            raise ValueError('trajectory has no joint names')
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise ValueError(f'trajectory names unknown joints {unknown} (known: {list(self.joint_names)})')
        if len(set(names)) != len(names):
            raise ValueError(f'trajectory names a joint twice: {names}')
        previous = -np.inf
        for k, point in enumerate(points):
            t = point.time_from_start
            if not np.isfinite(t) or t < 0:
                raise ValueError(f'point {k}: time_from_start {t} is negative or not finite')
            if t <= previous:
                raise ValueError(f'point {k}: time_from_start {t} does not increase (previous {previous})')
            previous = t
            if len(point.positions) != len(names):
                raise ValueError(f'point {k}: {len(point.positions)} positions for {len(names)} joint names')
            if not np.all(np.isfinite(np.asarray(point.positions, dtype=float))):
                raise ValueError(f'point {k}: positions contain NaN or inf')
            if point.velocities is not None and len(point.velocities):
                if len(point.velocities) != len(names):
                    raise ValueError(f'point {k}: {len(point.velocities)} velocities for {len(names)} joint names')
                if not np.all(np.isfinite(np.asarray(point.velocities, dtype=float))):
                    raise ValueError(f'point {k}: velocities contain NaN or inf')
        return [self._index[n] for n in names]
