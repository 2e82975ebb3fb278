"""ROS-free parts of the task evaluation: seeded goals, success criteria, and the two baselines' policies.

Actions are in the agent's own action space (ee_delta, docs/architecture.md), so the baselines and the agent
drive the arm through the same kinematics and the same safety gate.
"""
import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from jepa_common.kinematics import ArmKinematics
from jepa_common.paths import package_share
from jepa_actor.scripted_skill import PushSkill, PushSkillConfig
from jepa_bringup.description import SIM_NODE, SIM_PARAMS_FILE, node_parameters
from jepa_sim.camera import CameraConfig
from jepa_sim.perturbation import PERTURBATIONS, Perturbation, named_perturbation

# The agent's conditions. mode1 is scored on the seeds Mode-2 has just taught it (its distilled policy learned on
# them); mode1_fresh on as many seeds after those, with DAgger labelling and distillation off, so it acts alone.
AGENT_CONDITIONS = ('mode2', 'mode1', 'mode1_fresh')
# Ablations of the agent: one_level is push without its learned higher level (configurator task push_one_level).
ABLATIONS = ('one_level',)
# References, never "the agent": scripted_skill is the agent's graph with the hand-written push skill as its
# higher level (push only); oracle a scripted controller on privileged state; random the floor.
BASELINES = ('scripted_skill', 'random', 'oracle')
TASK_CONDITIONS = {'reach': ('mode2', 'mode1', 'mode1_fresh', 'random', 'oracle'),
                   'push': (*AGENT_CONDITIONS, *ABLATIONS, *BASELINES)}
# Control period (s): one action, one camera frame.
DT = 0.1
# The arm settles after a reset before the episode starts (sim seconds).
SETTLE = 0.5
# Success: the end effector (reach) or the cube centre (push) within this of its goal (half the cube's side).
SUCCESS_RADIUS = {'reach': 0.025, 'push': 0.025}
# Every report also gives the success rate at these radii (m), and the final distances' distribution.
RADII = (0.01, 0.02, 0.025, 0.03, 0.05)
# Reach goals: where the end effector can go without touching the table or leaving the camera's view.
REACH_REGION = ((0.35, 0.65), (-0.22, 0.22), (0.12, 0.38))
# An arm preset's reach goals (jepa eval --arm): its workspace box, this far inside.
REACH_BOX_MARGIN = 0.03
REACH_STEPS = 60
# Push goals: drawn this far from the cube (m); a goal that clipping to the table region brings more than
# PUSH_CLIP_SLACK nearer than the range's near end is redrawn. `jepa eval --push-distance` draws from another range
# within PUSH_DISTANCE_LIMITS (success against goal distance); reports of different ranges do not compare.
PUSH_DISTANCE = (0.10, 0.18)
PUSH_CLIP_SLACK = 0.01
PUSH_DISTANCE_LIMITS = (0.03, 0.25)
PUSH_REGION = ((0.35, 0.7), (-0.28, 0.28))
# Push episodes get time for the approach behind the cube plus the push itself at a fraction of full speed.
PUSH_BASE_SECONDS = 6.0
PUSH_SECONDS_PER_METRE = 50.0
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


def reach_region(workspace) -> tuple:
    """The reach goals' region of an arm preset: its workspace box ((x lo, x hi), ...), REACH_BOX_MARGIN inside."""
    return tuple((float(lo) + REACH_BOX_MARGIN, float(hi) - REACH_BOX_MARGIN) for lo, hi in workspace)


def check_push_distance(distance) -> tuple[float, float]:
    """(near, far) in metres, checked against PUSH_DISTANCE_LIMITS; ValueError naming the range otherwise."""
    try:
        near, far = (float(d) for d in distance)
    except (TypeError, ValueError):
        raise ValueError(f'a push distance range is two numbers (near, far) in metres, got {distance!r}') from None
    low, high = PUSH_DISTANCE_LIMITS
    if not low <= near <= far <= high:
        raise ValueError(f'push distance range {near}-{far} m: need {low} <= near <= far <= {high} m')
    return near, far


def make_goal(task: str, seed: int, kinematics: ArmKinematics, q_now: np.ndarray, cube_now: np.ndarray,
              region=REACH_REGION, push_distance=PUSH_DISTANCE) -> Goal:
    """A seeded goal for an episode that starts at (q_now, cube_now); reach targets are drawn from `region`, push
    goals at a distance from the cube drawn uniformly from `push_distance` (near, far)."""
    rng = np.random.default_rng([seed, 7])
    if task == 'reach':
        target = np.array([rng.uniform(lo, hi) for lo, hi in region])
        arm_q = interface_pose(kinematics, q_now, target)
        return Goal(task, kinematics.fk(arm_q), arm_q, np.asarray(cube_now, float))
    if task == 'push':
        near, far = check_push_distance(push_distance)
        cube_xy = np.asarray(cube_now[:2], float)
        (x_lo, x_hi), (y_lo, y_hi) = PUSH_REGION
        # Redrawn (seeded) until the goal, clipped to the table region, is still far enough away.
        while True:
            angle = rng.uniform(-np.pi, np.pi)
            goal_xy = cube_xy + np.array([np.cos(angle), np.sin(angle)]) * rng.uniform(near, far)
            goal_xy = np.clip(goal_xy, [x_lo, y_lo], [x_hi, y_hi])
            if np.linalg.norm(goal_xy - cube_xy) >= near - PUSH_CLIP_SLACK:
                break
        direction = (goal_xy - cube_xy) / np.linalg.norm(goal_xy - cube_xy)
        cube_goal = np.array([goal_xy[0], goal_xy[1], cube_now[2]])
        # The goal image shows the gripper where a push would leave it: just behind the cube.
        behind = goal_xy - direction * (CUBE_HALF + 0.03)
        arm_q = interface_pose(kinematics, q_now, np.array([behind[0], behind[1], PUSH_HEIGHT + 0.05]))
        return Goal(task, cube_goal, arm_q, cube_goal, direction)
    raise ValueError(f'unknown task {task!r} (reach, push)')


def interface_pose(kinematics: ArmKinematics, q_now: np.ndarray, target: np.ndarray, steps: int = 400) -> np.ndarray:
    """The arm's joint positions with the end effector at `target`, as the agent's own action interface puts
    them there and hold them: ee_delta steps in a straight line from q_now (kinematics.action_to_joint_target) until
    the arm is still. The action space moves the hand, not the elbow or the wrist, so a goal image may show only a
    posture the arm reaches through it; a posture the interface does not produce (a one-off IK solve from q_now) can
    be matched in the image only by moving the hand away from the target."""
    q = np.asarray(q_now, float)
    for _ in range(steps):
        # Each step's IK also draws the elbow towards home: the arm holding its hand at the target keeps moving
        # until that settles, and the goal shows it settled (where an episode's arm ends up).
        previous, q = q, kinematics.action_to_joint_target(q, toward(kinematics.fk(q), target, kinematics.max_step))[0]
        if np.max(np.abs(q - previous)) < 1e-4:
            break
    return q


def episode_steps(goal: Goal, cube_now: np.ndarray) -> int:
    """Control steps of an episode: fixed for reach, scaled to the push distance for push."""
    if goal.task == 'reach':
        return REACH_STEPS
    distance = float(np.linalg.norm(goal.target[:2] - np.asarray(cube_now, float)[:2]))
    return int(round((PUSH_BASE_SECONDS + PUSH_SECONDS_PER_METRE * distance) / DT))


def final_distance(goal: Goal, ee: np.ndarray, cube: np.ndarray) -> float:
    """Reach: end effector to target (3-D). Push: cube to target on the table (x, y)."""
    if goal.task == 'reach':
        return float(np.linalg.norm(np.asarray(ee) - goal.target))
    return float(np.linalg.norm(np.asarray(cube)[:2] - goal.target[:2]))


# Where a push that missed went wrong (the referee's view, diagnostics only; nothing on the agent's path reads it;
# research/push_hierarchy §13's classes, in its order): the cube moved less than UNTOUCHED_M either way (untouched);
# it ends PUSHED_AWAY_M farther than it started (the hand went through it); it came within the success radius and
# left again; it ends within STALLED_M, having moved less than STALLED_CHANGE_M nearer or farther in the last
# STALLED_SECONDS (stalled short, with time left).
UNTOUCHED_M = 0.003
PUSHED_AWAY_M = 0.01
STALLED_M = 0.08
STALLED_CHANGE_M = 0.005
STALLED_SECONDS = 2.0
PUSH_OUTCOMES = ('success', 'reached, then left', 'stalled short', 'pushed away', 'untouched', 'other')


def push_outcome(start: float, end: float, closest: float, last_change: float) -> str:
    """Which of PUSH_OUTCOMES a push ended in, from the cube's distance to its goal at the start, at the end, at its
    closest, and its change over the last STALLED_SECONDS (m)."""
    if end < SUCCESS_RADIUS['push']:
        return 'success'
    if abs(end - start) < UNTOUCHED_M and closest > start - UNTOUCHED_M:
        return 'untouched'
    if end > start + PUSHED_AWAY_M:
        return 'pushed away'
    if closest < SUCCESS_RADIUS['push']:
        return 'reached, then left'
    if end < STALLED_M and abs(last_change) < STALLED_CHANGE_M:
        return 'stalled short'
    return 'other'


def verdict(result: dict) -> str:
    """An episode's result as the evaluations log it: 'success', or 'fail' with the push outcome if it has one."""
    if result['success']:
        return 'success'
    return f'fail ({result["outcome"]})' if 'outcome' in result else 'fail'


class DistanceTrace:
    """The distance to the goal after every control step of one episode: the closest the episode came and, for
    push, which of PUSH_OUTCOMES it ended in."""

    def __init__(self, task: str, start: float):
        self.task, self.start, self.distances = task, float(start), []

    def add(self, distance: float) -> None:
        self.distances.append(float(distance))

    def record(self, end: float) -> dict:
        """{'closest_distance_m': ...} and, for push, 'outcome', for an episode that ended `end` from its goal."""
        steps = [self.start, *self.distances]
        record = {'closest_distance_m': min(*steps, float(end))}
        if self.task == 'push':
            # From STALLED_SECONDS before the last control step to the end (measured after it, with the arm held):
            # counted on the steps alone, as the end repeats the last of them rather than coming a step later.
            before = steps[max(0, len(steps) - 1 - int(round(STALLED_SECONDS / DT)))]
            record['outcome'] = push_outcome(self.start, float(end), record['closest_distance_m'], float(end) - before)
        return record


def toward(ee: np.ndarray, point: np.ndarray, max_step: float, gripper: float = -1.0) -> np.ndarray:
    delta = np.clip(np.asarray(point, float) - ee, -max_step, max_step)
    return np.r_[delta, gripper]


class OraclePolicy:
    """Scripted controller with privileged sim state (end-effector and cube positions): the upper reference.

    Push: the push skill (jepa_actor.scripted_skill) on the true positions, each of its steps executed directly:
    come down behind the cube on the line from the cube to the goal, push along the line from where the cube is
    now to the goal (steering: a cube that drifts sideways is not left beside its goal) until the contact point,
    not the end effector, has reached the goal; re-approach if the cube slid off the line.
    """

    # End effector to cube centre while pushing: half the cube plus the fingers' half thickness.
    CONTACT = CUBE_HALF + 0.012

    def __init__(self, goal: Goal, max_step: float):
        self.goal = goal
        self.max_step = max_step
        self.skill = PushSkill(PushSkillConfig(push_height=PUSH_HEIGHT, contact=self.CONTACT, steer=True))
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


def sim_camera(override: Path | str | None = None, params_file: str = SIM_PARAMS_FILE,
               node: str = SIM_NODE) -> CameraConfig:
    """The simulated camera as the graph's sim node has it: config/sim.yaml, then the params file the graph's
    `sim_camera` argument names (`jepa calibrate`'s sim_camera.yaml) on top, as the node reads them. So every
    episode, in the graph or in the workbench, and the eval's video overlay see the graph's images. params_file
    and node name another simulated camera's (config/sim_driver.yaml, sim_driver)."""
    files = [Path(package_share('jepa_bringup')) / 'config' / params_file] + ([Path(override)] if override else [])
    params = {}
    for path in files:
        try:
            section = node_parameters(yaml.safe_load(path.read_text()), node)
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f'sim camera params {path}: not a readable params file: {exc}') from exc
        if section is None:
            raise ValueError(f'sim camera params {path}: no section for the sim node ({node}: ros__parameters: '
                             f'...)')
        params.update(section)
    return CameraConfig.from_parameters(params.get)


def percentiles(values, qs=(50, 95)) -> dict:
    if not len(values):
        return {f'p{q}': None for q in qs}
    return {f'p{q}': float(np.percentile(values, q)) for q in qs}


def summarize(results: list[dict], latencies: dict[str, list[float]]) -> dict:
    """The per-condition record of the eval JSON: success at the task's radius and at every one of RADII, the
    final distances' distribution, and p50 / p95 of each latency series (ms)."""
    final = np.array([r['final_distance_m'] for r in results])
    return {
        'episodes': len(results),
        'success_rate': float(np.mean([r['success'] for r in results])) if results else None,
        'success_at_radius': {f'{radius:g}': float(np.mean(final < radius)) if results else None for radius in RADII},
        'final_distance_m': {'mean': float(final.mean()) if results else None,
                             **percentiles(final, (10, 25, 50, 75, 90)), 'per_episode': final.tolist()},
        **{f'{name}_ms': percentiles(values) for name, values in latencies.items()},
        **({'outcomes': {name: sum(r['outcome'] == name for r in results) for name in PUSH_OUTCOMES}}
           if results and all('outcome' in r for r in results) else {}),
        'per_episode': results,
    }

# ---------------------------------------------------------------- world perturbations (jepa eval, the workbench)

def add_perturbation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--perturb', action='append', metavar='NAME', default=[],
                        help=f'perturb the simulated world: {", ".join(PERTURBATIONS)} (repeat or '
                             'comma-separate to combine; docs/perturbations.md)')
    parser.add_argument('--perturb-set', action='append', metavar='FIELD=VALUE', default=[],
                        help='a perturbation setting on top of the named ones, e.g. arm_tracking=0.4 or '
                             'camera_shift=0.05,0,0 (fields: ' + ', '.join(Perturbation.__dataclass_fields__) + ')')


def perturbation_of(args: argparse.Namespace) -> tuple[list[str], dict, Perturbation]:
    """(names, settings, the Perturbation) of add_perturbation_arguments' options; ValueError naming what is wrong."""
    names = [n.strip() for item in args.perturb for n in item.split(',') if n.strip()]
    settings = perturbation_settings(args.perturb_set)
    return names, settings, named_perturbation(names, settings)


def perturbation_settings(items: list[str]) -> dict:
    """['arm_tracking=0.4', 'camera_shift=0.05,0,0'] -> {'arm_tracking': 0.4, 'camera_shift': [0.05, 0.0, 0.0]};
    ValueError naming an item that is not FIELD=NUMBER[,NUMBER...]."""
    settings = {}
    for item in items:
        name, sep, text = item.partition('=')
        try:
            if not sep or not name:
                raise ValueError
            values = [float(v) for v in text.split(',')]
        except ValueError:
            raise ValueError(f'--perturb-set expects FIELD=NUMBER or FIELD=X,Y,Z, got {item!r}') from None
        settings[name.strip()] = values if ',' in text else values[0]
    return settings
