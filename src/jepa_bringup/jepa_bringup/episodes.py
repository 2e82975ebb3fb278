"""ROS-free parts of the task evaluation: seeded goals, success criteria, and the two baselines' policies.

Actions are in the agent's own action space (ee_delta, docs/architecture.md), so the baselines and the agent
drive the arm through the same kinematics and the same safety gate.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from jepa_common.kinematics import ArmKinematics
from jepa_common.paths import package_share
from jepa_planner.push_skill import PushSkill, PushSkillConfig
from jepa_sim.panda_sim import CameraConfig

AGENT_CONDITIONS = ('mode2', 'mode1')
BASELINES = ('random', 'oracle')
# Control period (s): one action, one camera frame.
DT = 0.1
# The arm settles after a reset before the episode starts (sim seconds).
SETTLE = 0.5
# Episode lengths in control steps and success radii (metres).
STEPS = {'reach': 60, 'push': 120}
SUCCESS_RADIUS = {'reach': 0.05, 'push': 0.05}
# Reach goals: where the end effector can go without touching the table or leaving the camera's view.
REACH_REGION = ((0.35, 0.65), (-0.22, 0.22), (0.12, 0.38))
PUSH_DISTANCE = (0.08, 0.12)
CUBE_HALF = 0.025
# The fingertips' height while pushing (end-effector z): low enough to hit the cube, above the table.
PUSH_HEIGHT = 0.035


@dataclass
class Goal:
    task: str
    # What must end up at `target`: the end effector (reach) or the cube centre (push).
    target: np.ndarray
    # The state rendered as the goal image.
    arm_q: np.ndarray
    cube_position: np.ndarray
    push_direction: np.ndarray = field(default_factory=lambda: np.zeros(2))


def make_goal(task: str, seed: int, kinematics: ArmKinematics, q_now: np.ndarray, cube_now: np.ndarray) -> Goal:
    """A seeded goal for an episode that starts at (q_now, cube_now)."""
    rng = np.random.default_rng([seed, 7])
    if task == 'reach':
        target = np.array([rng.uniform(lo, hi) for lo, hi in REACH_REGION])
        arm_q = kinematics.ik(q_now, target)
        return Goal(task, kinematics.fk(arm_q), arm_q, np.asarray(cube_now, float))
    if task == 'push':
        angle = rng.uniform(-np.pi, np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        goal_xy = np.asarray(cube_now[:2], float) + direction * rng.uniform(*PUSH_DISTANCE)
        (x_lo, x_hi), (y_lo, y_hi) = ((0.35, 0.7), (-0.28, 0.28))
        goal_xy = np.clip(goal_xy, [x_lo, y_lo], [x_hi, y_hi])
        direction = goal_xy - cube_now[:2]
        direction /= max(np.linalg.norm(direction), 1e-9)
        cube_goal = np.array([goal_xy[0], goal_xy[1], cube_now[2]])
        # The goal image shows the gripper where a push would leave it: just behind the cube.
        behind = goal_xy - direction * (CUBE_HALF + 0.03)
        arm_q = kinematics.ik(q_now, np.array([behind[0], behind[1], PUSH_HEIGHT + 0.05]))
        return Goal(task, cube_goal, arm_q, cube_goal, direction)
    raise ValueError(f'unknown task {task!r} (reach, push)')


def final_distance(goal: Goal, ee: np.ndarray, cube: np.ndarray) -> float:
    """Reach: end effector to target (3-D). Push: cube to target on the table (x, y)."""
    if goal.task == 'reach':
        return float(np.linalg.norm(np.asarray(ee) - goal.target))
    return float(np.linalg.norm(np.asarray(cube)[:2] - goal.target[:2]))


def toward(ee: np.ndarray, point: np.ndarray, max_step: float, gripper: float = -1.0) -> np.ndarray:
    delta = np.clip(np.asarray(point, float) - ee, -max_step, max_step)
    return np.r_[delta, gripper]


class OraclePolicy:
    """Scripted controller with privileged sim state (end-effector and cube positions): the upper reference.

    Push: the agent's push skill (jepa_planner.push_skill) on the true positions, each of its steps executed
    directly: come down behind the cube on the line from the cube to the goal, push along that line until the
    contact point, not the end effector, has reached the goal; re-approach if the cube slid off the line.
    """

    # End effector to cube centre while pushing: half the cube plus the fingers' half thickness.
    CONTACT = CUBE_HALF + 0.012

    def __init__(self, goal: Goal, max_step: float):
        self.goal = goal
        self.max_step = max_step
        self.skill = PushSkill(PushSkillConfig(push_height=PUSH_HEIGHT, contact=self.CONTACT))
        self.skill.reset(goal.target[:2])

    @property
    def phase(self) -> str:
        return self.skill.phase

    def act(self, ee: np.ndarray, cube: np.ndarray) -> np.ndarray:
        if self.goal.task == 'reach':
            return toward(ee, self.goal.target, self.max_step)
        target, speed = self.skill.target(ee, cube)
        return toward(ee, target, self.max_step * speed)


class RandomPolicy:
    """Uniformly random actions in the action space: the lower reference."""

    def __init__(self, seed: int, max_step: float):
        self.rng = np.random.default_rng([seed, 11])
        self.max_step = max_step

    def act(self, ee: np.ndarray, cube: np.ndarray) -> np.ndarray:
        return np.r_[self.rng.uniform(-self.max_step, self.max_step, 3), self.rng.uniform(-1, 1)]


def sim_camera(override: Path | str | None = None) -> CameraConfig:
    """The simulated camera as the graph's sim node has it: config/sim.yaml, then the params file the graph's
    `sim_camera` argument names (`jepa calibrate`'s sim_camera.yaml) on top, as the node reads them. So every
    episode, in the graph or in the workbench, and the eval's video overlay see the graph's images."""
    files = [Path(package_share('jepa_bringup')) / 'config' / 'sim.yaml'] + ([Path(override)] if override else [])
    params = {}
    for path in files:
        try:
            params.update(yaml.safe_load(path.read_text())['sim']['ros__parameters'])
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise ValueError(f'sim camera params {path}: not a readable params file for the sim node '
                             f'(sim: ros__parameters: ...): {exc}') from exc
    return CameraConfig.from_parameters(params.get)


def percentiles(values) -> dict:
    if not len(values):
        return {'p50': None, 'p95': None}
    return {'p50': float(np.percentile(values, 50)), 'p95': float(np.percentile(values, 95))}


def summarize(results: list[dict], plan_ms: list[float], e2e_ms: list[float]) -> dict:
    """The per-condition record of the eval JSON."""
    return {
        'episodes': len(results),
        'success_rate': float(np.mean([r['success'] for r in results])) if results else None,
        'final_distance_m': {'mean': float(np.mean([r['final_distance_m'] for r in results])) if results else None,
                             'per_episode': [r['final_distance_m'] for r in results]},
        'plan_latency_ms': percentiles(plan_ms),
        'e2e_latency_ms': percentiles(e2e_ms),
        'per_episode': results,
    }
