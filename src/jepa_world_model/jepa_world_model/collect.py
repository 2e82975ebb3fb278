"""Play-data collection: motor babbling on the simulated arm, recorded into a rosbag2 bag.

`jepa collect --minutes M --out BAG [--seed S]` starts `sim_node` (as fast as possible) and `safety_node`
as separate processes, drives the arm through the safety gate with `BabblingPolicy` and records camera,
joint states, actions, commanded trajectories and the privileged poses into one mcap bag.

`BabblingPolicy` is the ROS-free core: smooth random reaching around random waypoints plus deliberate
pushes through the cube, so that the world model sees the cube move in a good fraction of the data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class BabblingConfig:
    max_step: float = 0.03                      # metres per control period (the ee_delta action bound)
    workspace_low: tuple = (0.25, -0.35, 0.02)
    workspace_high: tuple = (0.75, 0.35, 0.6)
    # Waypoints stay this far inside the workspace so the safety gate's workspace clamp rarely engages.
    margin: float = 0.03
    # Largest change of the translational action between consecutive periods: keeps the motion smooth.
    max_action_change: float = 0.008
    max_gripper_change: float = 0.2
    # Ornstein-Uhlenbeck exploration noise added to the reaching motion (metres per period).
    noise_theta: float = 0.15
    noise_sigma: float = 0.004
    # Share of motion primitives that are deliberate pushes through the cube.
    push_fraction: float = 0.6
    approach_height: float = 0.12               # above the table, when moving behind the cube
    push_height: float = 0.035                  # end-effector height while pushing
    push_behind: float = 0.09                   # start this far behind the cube centre
    push_through: float = 0.10                  # and end this far beyond it
    reach_tolerance: float = 0.02
    steps_per_waypoint: int = 60                # give up on a waypoint after this many periods
    wander_waypoints: tuple = (1, 3)
    low_z_fraction: float = 0.35                # wander waypoints near the table (where the cube is)


@dataclass
class _Waypoint:
    position: np.ndarray
    gripper: float
    speed: float                                # metres per period, <= max_step
    noise_scale: float


@dataclass
class BabblingPolicy:
    """Smooth random end-effector motion: wander to random waypoints or push the cube along a random direction.

    `act(ee, cube)` returns one ee_delta action [dx, dy, dz, gripper], within bounds; `reset(seed)` starts a
    new episode. Deterministic for a given seed and observation sequence.
    """
    config: BabblingConfig = field(default_factory=BabblingConfig)
    seed: int = 0

    def __post_init__(self):
        self.reset(self.seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self._plan: list[_Waypoint] = []
        self._steps_on_waypoint = 0
        self._noise = np.zeros(3)
        self._last = np.zeros(4)
        self._last[3] = 1.0
        self.mode = 'idle'
        self.pushes_started = 0

    # ----- planning
    def _low(self) -> np.ndarray:
        return np.asarray(self.config.workspace_low, dtype=float) + self.config.margin

    def _high(self) -> np.ndarray:
        return np.asarray(self.config.workspace_high, dtype=float) - self.config.margin

    def _inside(self, point: np.ndarray) -> bool:
        return bool(np.all(point >= self._low()) and np.all(point <= self._high()))

    def _random_point(self) -> np.ndarray:
        low, high = self._low(), self._high()
        point = self.rng.uniform(low, high)
        if self.rng.random() < self.config.low_z_fraction:
            point[2] = self.rng.uniform(low[2], min(high[2], low[2] + 0.1))
        return point

    def _wander_plan(self) -> list[_Waypoint]:
        c = self.config
        count = self.rng.integers(c.wander_waypoints[0], c.wander_waypoints[1] + 1)
        return [_Waypoint(self._random_point(), float(self.rng.choice([-1.0, 1.0, self.rng.uniform(-1, 1)])),
                          self.rng.uniform(0.35, 1.0) * c.max_step, 1.0) for _ in range(count)]

    def _push_plan(self, cube: np.ndarray) -> list[_Waypoint] | None:
        """Above-behind, down, through, up, along a random horizontal direction that keeps every point in reach."""
        c = self.config
        for _ in range(16):
            angle = self.rng.uniform(-np.pi, np.pi)
            direction = np.array([np.cos(angle), np.sin(angle), 0.0])
            behind = cube - direction * c.push_behind
            through = cube + direction * (c.push_through + self.rng.uniform(0.0, 0.06))
            low_z = max(c.push_height, self._low()[2])
            points = [np.array([behind[0], behind[1], low_z + c.approach_height]),
                      np.array([behind[0], behind[1], low_z]),
                      np.array([through[0], through[1], low_z]),
                      np.array([through[0], through[1], low_z + c.approach_height])]
            if all(self._inside(p) for p in points):
                gripper = float(self.rng.choice([-1.0, 1.0]))
                speed = self.rng.uniform(0.5, 0.9) * c.max_step
                push_speed = self.rng.uniform(0.3, 0.6) * c.max_step
                return [_Waypoint(points[0], gripper, speed, 0.5),
                        _Waypoint(points[1], gripper, push_speed, 0.0),
                        _Waypoint(points[2], gripper, push_speed, 0.0),
                        _Waypoint(points[3], gripper, speed, 0.5)]
        return None

    def _next_plan(self, cube: np.ndarray | None) -> None:
        plan = None
        if cube is not None and self.rng.random() < self.config.push_fraction:
            plan = self._push_plan(np.asarray(cube, dtype=float)[:3])
        if plan is not None:
            self.mode = 'push'
            self.pushes_started += 1
        else:
            self.mode = 'wander'
            plan = self._wander_plan()
        self._plan = plan
        self._steps_on_waypoint = 0

    # ----- acting
    def act(self, ee: np.ndarray, cube: np.ndarray | None = None) -> np.ndarray:
        """One action [dx, dy, dz, gripper] from the end-effector position (and the cube's, when known)."""
        c = self.config
        ee = np.asarray(ee, dtype=float)[:3]
        if self._plan and (np.linalg.norm(self._plan[0].position - ee) < c.reach_tolerance
                           or self._steps_on_waypoint >= c.steps_per_waypoint):
            self._plan.pop(0)
            self._steps_on_waypoint = 0
        if not self._plan:
            self._next_plan(cube)
        target = self._plan[0]
        self._steps_on_waypoint += 1

        error = target.position - ee
        distance = np.linalg.norm(error)
        # Slow down over the last few centimetres instead of overshooting the waypoint.
        speed = min(target.speed, 0.7 * distance)
        desired = error / max(distance, 1e-9) * speed
        self._noise += -c.noise_theta * self._noise + c.noise_sigma * self.rng.standard_normal(3)
        desired = desired + target.noise_scale * self._noise
        # Never aim outside the workspace box (the gate would clamp it anyway); the clamp comes before the
        # rate limit so that it does not make the motion jerky at the walls.
        low = np.asarray(c.workspace_low, dtype=float)
        high = np.asarray(c.workspace_high, dtype=float)
        desired = np.clip(ee + desired, low + 0.25 * c.margin, high - 0.25 * c.margin) - ee

        translation = self._last[:3] + np.clip(desired - self._last[:3], -c.max_action_change, c.max_action_change)
        translation = np.clip(translation, -c.max_step, c.max_step)
        gripper = self._last[3] + np.clip(target.gripper - self._last[3], -c.max_gripper_change, c.max_gripper_change)
        action = np.array([*translation, np.clip(gripper, -1.0, 1.0)])
        self._last = action
        return action.astype(np.float32)
