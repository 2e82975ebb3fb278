"""The evaluation's seeded episodes in one process, without ROS: simulator, perception, actor and referee as
plain Python objects stepped in lock-step (no DDS, no real time, no latency but the --command-delay one asks for).

`jepa eval` is the measurement (the full graph, separate processes, real time); this is the workbench for
tuning the cost and planner from a notebook or the command line, where one episode takes seconds. The same
goals (episodes.make_goal), success radii, episode lengths, kinematics and joint-trajectory following are used,
so a change that helps here should help there; the numbers worth reporting come from `jepa eval`.
`--command-delay` sends each command that long after its frame, while the arm goes on with the previous one, as
in the graph (its end-to-end delay, image stamp -> command, is tens of milliseconds).
The actor's settings and the task's cost weights are the graph's (config/agent.yaml: the `actor` parameters and
the configurator's task profile); --set and --weight override them.

    python -m jepa_bringup.sim_episodes --task reach --episodes 10 --set horizon=12 --weight energy=2
    python -m jepa_bringup.sim_episodes --task push --episodes 30 --command-delay 0.05 --weight hand=0 --weight energy=1
    python -m jepa_bringup.sim_episodes --task reach --episodes 10 --perturb camera_moved --perturb-set arm_tracking=0.4
"""
import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from jepa_bringup.episodes import DT, SETTLE, SUCCESS_RADIUS, DistanceTrace, OraclePolicy, RandomPolicy, \
    add_perturbation_arguments, episode_steps, final_distance, make_goal, perturbation_of, sim_camera, verdict
from jepa_actor.actor import Actor, ActorConfig
from jepa_bringup.agent_settings import agent_params, graph_settings
from jepa_cost.cost import CostWeights
from jepa_world_model.high_level import HighLevelError, HighLevelModel, default_high_level_path
from jepa_world_model.readout import CubeReadout, ReadoutError, default_readout_path
from jepa_sim.camera import CameraConfig
from jepa_sim.panda_sim import PandaSim
from jepa_sim.perturbation import Perturbation, apply_perturbation
from jepa_sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint
from jepa_world_model.model import default_checkpoint_path, encoder_id, load_checkpoint


class SimWorkbench:
    """A simulator with a joint-trajectory follower (the sim node's controller) and the agent's encoder."""

    def __init__(self, model, camera: CameraConfig | None = None):
        self.sim = PandaSim(camera=camera or sim_camera())
        self.kinematics = self.sim.kinematics
        self.model = model
        self.follower = TrajectoryFollower(self.sim.joint_names, self.sim.lower, self.sim.upper,
                                           self.sim.joint_positions())

    @property
    def q_arm(self) -> np.ndarray:
        return self.sim.joint_positions()[:len(self.kinematics.arm_joints)]

    @property
    def ee(self) -> np.ndarray:
        return self.sim.ee_pose()[:3]

    @property
    def cube(self) -> np.ndarray:
        return self.sim.cube_pose()[:3]

    def encode(self, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model.encode(image[None])[0].cpu().numpy()

    def reset(self, seed: int) -> None:
        q, _ = self.sim.reset(seed)
        self.follower.hold(q, self.sim.time)
        self.advance(SETTLE)

    def start_episode(self, task: str, seed: int):
        """Reset to an evaluation episode's seed: (its goal, the latent of its goal image)."""
        self.reset(seed)
        goal = make_goal(task, seed, self.kinematics, self.q_arm, self.cube)
        goal_image, _ = self.sim.render_state(goal.arm_q, goal.cube_position)
        return goal, self.encode(goal_image)

    def perturb(self, perturbation: Perturbation) -> None:
        """The world perturbed as sim_node perturbs it: the simulator's camera and cube, the controller's tracking."""
        apply_perturbation(self.sim, self.follower, perturbation)

    def command(self, action: np.ndarray, q_arm: np.ndarray | None = None) -> None:
        """Follow the action from q_arm (the joint state it was chosen at; default: now), as the actor's command."""
        q_target, fingers = self.kinematics.action_to_joint_target(self.q_arm if q_arm is None else q_arm, action)
        self.follower.set_trajectory(self.sim.joint_names, [TrajectoryPoint(DT, np.r_[q_target, fingers])],
                                     self.sim.time, self.sim.joint_positions())

    def advance(self, seconds: float) -> None:
        for _ in range(int(round(seconds * self.sim.physics_hz))):
            target, velocity = self.follower.sample(self.sim.time)
            self.sim.send_joint_targets(target, velocity)
            self.sim.step()

    def close(self) -> None:
        self.sim.close()


def check_command_delay(seconds: float) -> None:
    """A command sent 0 to DT s after its frame: a whole period late, the next frame's command would be due."""
    if not 0.0 <= seconds < DT:
        raise ValueError(f'command delay must be in [0, {DT}) s, got {seconds}')


def run_episode(bench: SimWorkbench, actor: Actor | None, condition: str, task: str, seed: int,
                command_delay: float = 0.0, transitions: list | None = None) -> dict:
    """One episode; the agent's commands are sent command_delay seconds after the frame they were chosen from
    (0 to DT), the baselines' at once. `transitions`, if given, gets the agent's (latent, action, next latent) per
    step appended, as the short-term memory stores them (what the configurator's world-model adjustment learns
    from)."""
    check_command_delay(command_delay)
    goal, goal_latent = bench.start_episode(task, seed)
    policy = None
    if condition == 'oracle':
        policy = OraclePolicy(goal, bench.kinematics.max_step)
    elif condition == 'random':
        policy = RandomPolicy(seed, bench.kinematics.max_step)
    else:
        actor.reset()
    start_distance = final_distance(goal, bench.ee, bench.cube)
    trace = DistanceTrace(task, start_distance)
    plan_ms = []
    previous_latent = previous_action = None
    for _ in range(episode_steps(goal, bench.cube)):
        if policy is not None:
            bench.command(policy.act(bench.ee, bench.cube))
            bench.advance(DT)
            trace.add(final_distance(goal, bench.ee, bench.cube))
            continue
        q_arm = bench.q_arm
        latent = bench.encode(bench.sim.render())
        if transitions is not None and plan_ms:
            transitions.append((previous_latent, previous_action, latent))
        decision = actor.act(latent, goal_latent, q_arm, condition)
        plan_ms.append(decision.plan_time_ms)
        previous_latent, previous_action = latent, np.array(decision.action, dtype=np.float32)
        bench.advance(command_delay)
        bench.command(decision.action, q_arm)
        bench.advance(DT - command_delay)
        trace.add(final_distance(goal, bench.ee, bench.cube))
    if transitions is not None and plan_ms:
        transitions.append((previous_latent, previous_action, bench.encode(bench.sim.render())))
    distance = final_distance(goal, bench.ee, bench.cube)
    return {'seed': seed, 'success': bool(distance < SUCCESS_RADIUS[task]), 'final_distance_m': distance,
            'start_distance_m': start_distance, **trace.record(distance),
            'plan_ms_p50': float(np.median(plan_ms)) if plan_ms else None}


def graph_readout(model) -> CubeReadout:
    """The cube read-out the graph's actor loads for this model (its readout_path, '' = the shipped one)."""
    return CubeReadout.load(agent_params().get('actor', {}).get('readout_path') or default_readout_path(),
                            encoder_id(model))


def parse_assignments(items: list[str], what: str) -> dict:
    values = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'{what} {item!r}: expected name=value')
        values[key] = value
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--task', choices=['reach', 'push'], default='reach')
    parser.add_argument('--episodes', type=int, default=10)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--conditions', default='mode2', help='comma-separated: mode2, mode1, random, oracle')
    parser.add_argument('--checkpoint', type=Path, default=None)
    parser.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                        help=f'actor setting, one of {", ".join(ActorConfig.names())}')
    parser.add_argument('--weight', action='append', default=[], metavar='NAME=VALUE',
                        help=f'cost weight, one of {", ".join(CostWeights.names())}')
    parser.add_argument('--high-level', type=Path, metavar='FILE',
                        help='the learned higher level (jepa train-high-level) that levels 2 plans with (default: the '
                             "one beside the checkpoint, as the graph's actor)")
    parser.add_argument('--sim-camera', type=Path, metavar='FILE',
                        help="the sim node's camera params file (jepa calibrate's sim_camera.yaml), as the graph's "
                             'sim_camera:= argument; default config/sim.yaml')
    parser.add_argument('--command-delay', type=float, default=0.0, metavar='SECONDS',
                        help=f'send each agent command this long after its frame, 0 to {DT} (default 0)')
    add_perturbation_arguments(parser)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--json', type=Path)
    args = parser.parse_args(argv)
    conditions = [c for c in args.conditions.split(',') if c]
    if not conditions or set(conditions) - {'mode2', 'mode1', 'random', 'oracle'}:
        parser.error(f'--conditions {args.conditions!r}: a comma-separated subset of mode2, mode1, random, oracle')
    try:
        config, weights = graph_settings(args.task)
        config = config.changed(**parse_assignments(args.set, '--set'))  # ActorConfig validates itself
        weights = replace(weights, **{k: float(v) for k, v in parse_assignments(args.weight, '--weight').items()})
        camera = sim_camera(args.sim_camera)
        check_command_delay(args.command_delay)
        names, settings, perturbation = perturbation_of(args)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint or default_checkpoint_path())
    try:
        readout = graph_readout(model) if config.skill else None
    except ReadoutError as exc:
        parser.error(f'skill {config.skill!r}: {exc}')
    if args.high_level and config.levels != 2:
        parser.error(f'--high-level: the actor plans with levels {config.levels} here; it takes a higher level '
                     'with levels 2 (--set levels=2)')
    try:
        high_level = HighLevelModel.load(
            args.high_level or default_high_level_path(args.checkpoint or default_checkpoint_path()),
            encoder_id(model), model.latent_dim) if config.levels == 2 else None
    except HighLevelError as exc:
        parser.error(f'levels 2: {exc}')
    bench = SimWorkbench(model, camera)
    bench.perturb(perturbation)
    report = {'perturbation': {'names': names, 'settings': settings, 'values': perturbation.parameters()}} \
        if names or settings else {}
    try:
        # One actor for both modes, as in the graph: Mode-1 acts with the policy distilled from Mode-2 so far.
        actor = Actor(model, config, weights, bench.kinematics, readout=readout, high_level=high_level)
        for condition in conditions:
            results = []
            for i in range(args.episodes):
                t0 = time.monotonic()
                result = run_episode(bench, actor, condition, args.task, args.seed + i, args.command_delay)
                results.append(result)
                print(f'{args.task} {condition} seed {result["seed"]}: {result["start_distance_m"]:.3f} -> '
                      f'{result["final_distance_m"]:.3f} m {verdict(result)} '
                      f'({time.monotonic() - t0:.0f} s, plan p50 {result["plan_ms_p50"] or 0:.0f} ms)', flush=True)
            report[condition] = {'success_rate': float(np.mean([r['success'] for r in results])),
                                 'final_distance_m': float(np.mean([r['final_distance_m'] for r in results])),
                                 'per_episode': results}
            print(f'{args.task} {condition}: success {report[condition]["success_rate"]:.0%}, mean final distance '
                  f'{report[condition]["final_distance_m"]:.3f} m', flush=True)
    finally:
        bench.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
