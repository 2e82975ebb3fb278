"""Why push fails, as figures: does the world model see the cube, predict pushing it, and does the energy prefer
the pushed state? In one process, on the simulator (no ROS), with the shipped checkpoint or --checkpoint.

1. Cube read-out: a ridge regression latent -> cube (x, y), fitted with the true positions on rendered scenes
   (random arm pose and cube position), scored on other scenes; next to predicting the mean.
2. Contact: the fingers just behind the cube, a 1-s push along a random direction. Along that direction, the
   read-out's displacement for the real final latent, the model's open-loop rollout of that push, and its rollout
   of the opposite motion (a pull-back, which leaves the cube where it is): a model that predicts pushing moves
   the read-out for the push and not for the pull-back. Without a read-out: is the predicted push's final latent
   closer to the real final latent than to the latent of the same arm pose with the cube left where it was?
3. Energy: the arm posed as in a push goal image, the cube at its start, half-way, and 1 cm from its goal: the
   isotropic latent distance to the goal latent (the `latent` term of the energy) should fall as the cube nears
   its goal.
4. The hand term on a push's path: the `energy` term of one planned step with the hand where a push passes
   (pushing height, under the goal pose; behind the cube's start), against what the cube term can gain.
5. Handover: the scripted oracle (privileged state) brings the hand behind the cube at pushing height, then
   Mode-2 plans the rest of the episode towards the goal image's latent, without the push skill (the push
   profile before it, where the cube's `latent` term leads): can planning alone push once the hand is there?
6. Long open loop: the oracle's first 30 actions (approach and push), executed for real and rolled out by the
   model from the start latent; the `latent` term of the real and of the predicted final latent: can a
   long-horizon search through the model see that the approach pays?
7. Which way to push, seen 6 s ahead: the oracle's whole plan (approach, push, lift off) for the true goal and for
   goals in 7 wrong directions (30 to 180 degrees off), imagined open loop (the hand integrates the actions, the
   cube is carried in contact once pushed), rolled out by the model: is the true direction's predicted final
   `latent` term the lowest? From the start, and again once the real oracle has the hand behind the cube. A
   search over whole approach-and-push plans can only pick the right one if it is.

8. The push skill, as the graph pushes (the push settings of config/agent.yaml, the shipped cube read-out
   fitted without labels): success on the same seeds, and how far the read-out places the goal image's cube.
9. Why the skill's hand steps are measured with the arm's kinematics (the cost's `hand` term) and not through the
   world model: along those episodes, how far the effector map's reading of each real latent step,
   effector_map (z' - z), is from the real hand step, with the hand near the table and above it.

--quick: one scene each, 50 scenes for the read-out, episodes cut to 2 s (seconds; checks the bench runs, its
figures mean little).

    .venv/bin/python bench/push_diagnosis.py [--checkpoint CKPT] [--scenes 10] [--quick]
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from jepa_bringup.episodes import DT, PUSH_HEIGHT, SUCCESS_RADIUS, Goal, OraclePolicy, episode_steps, final_distance, \
    toward
from jepa_bringup.sim_episodes import SimWorkbench, graph_readout, graph_settings
from jepa_actor.actor import Actor
from jepa_cost.cost import CostWeights, EnergyMetric
from jepa_sim.arm_sim import CUBE_SIZE
from jepa_sim.panda_sim import CUBE_REGION
from jepa_world_model.eval_model import fit_ridge, ridge_probe
from jepa_world_model.model import default_checkpoint_path, load_checkpoint

PUSH_STEP = 0.015     # metres per control step while pushing
PUSH_STEPS = 10       # 1 s
# The push profile before the push skill: planning towards the goal image, the cube's latent term leading.
PLANNING_ONLY_PUSH = CostWeights(energy=0.1, latent=1.0, effort=0.02, joint_limits=1.0, workspace=1.0, critic=0.5)


def random_scenes(bench: SimWorkbench, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Latents and cube (x, y) of `count` rendered scenes: arm from a seeded reset, cube anywhere in its region."""
    rng = np.random.default_rng(seed)
    latents, cubes = [], []
    for i in range(count):
        if i % 20 == 0:
            bench.sim.reset(int(rng.integers(1 << 30)))
        cube = np.array([rng.uniform(*CUBE_REGION[0]), rng.uniform(*CUBE_REGION[1]), CUBE_SIZE / 2])
        arm_q = bench.q_arm + rng.normal(0.0, 0.15, size=bench.q_arm.shape)
        image, _ = bench.sim.render_state(arm_q, cube)
        latents.append(bench.encode(image))
        cubes.append(cube[:2])
    return np.array(latents), np.array(cubes)


def contact(bench: SimWorkbench, model, readout, metric: EnergyMetric, scenes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per scene, along the push direction (cm): real cube motion, read-out of the real final latent, of the
    predicted push, of the predicted pull-back. And per scene, without a read-out: the isotropic distance of the
    predicted push's final latent to the real final latent, and to the latent of the same final arm pose with
    the cube left at its start (what a model that ignores contact predicts)."""
    rows, distances = [], []
    for scene in range(scenes):
        bench.reset(1000 + scene)
        angle = np.random.default_rng(scene).uniform(-np.pi, np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        behind = bench.cube[:2] - direction * (CUBE_SIZE / 2 + 0.05)
        for target in (np.r_[behind, PUSH_HEIGHT + 0.08], np.r_[behind, PUSH_HEIGHT]):
            for _ in range(25):
                bench.command(toward(bench.ee, target, bench.kinematics.max_step))
                bench.advance(DT)
        cube_start = bench.cube[:2].copy()
        z0 = bench.encode(bench.sim.render())
        predicted, final = {}, {}
        for name, sign in (('push', 1.0), ('pull', -1.0)):
            actions = torch.tensor(np.array([np.r_[sign * PUSH_STEP * direction, 0.0, -1.0]] * PUSH_STEPS),
                                   dtype=torch.float32)
            with torch.inference_mode():
                final[name] = model.rollout(torch.from_numpy(z0)[None], actions[None])[0, -1].numpy()
            predicted[name] = (readout(final[name])[0] - readout(z0)[0]) @ direction
        cube_z = bench.cube[2]
        for _ in range(PUSH_STEPS):
            bench.command(np.r_[PUSH_STEP * direction, 0.0, -1.0])
            bench.advance(DT)
        z_real = bench.encode(bench.sim.render())
        unpushed_image, _ = bench.sim.render_state(bench.q_arm, np.r_[cube_start, cube_z])
        z_unpushed = bench.encode(unpushed_image)
        distances.append([float(metric.isotropic(torch.from_numpy(final['push'] - z)))
                          for z in (z_real, z_unpushed)])
        rows.append([(bench.cube[:2] - cube_start) @ direction, (readout(z_real)[0] - readout(z0)[0]) @ direction,
                     predicted['push'], predicted['pull']])
    return np.array(rows) * 100.0, np.array(distances)


def energy_along_push(bench: SimWorkbench, metric: EnergyMetric, scenes: int) -> np.ndarray:
    """Per scene: isotropic distance to the push goal's latent with the arm as in the goal image and the cube at
    its start, half-way, and 1 cm short of its goal."""
    rows = []
    for scene in range(scenes):
        goal, goal_latent = bench.start_episode('push', scene)
        goal_latent = torch.from_numpy(goal_latent)
        start = bench.cube.copy()
        row = []
        for share in (0.0, 0.5, 1.0 - 0.01 / np.linalg.norm(goal.target[:2] - start[:2])):
            cube = start + share * (goal.cube_position - start)
            image, _ = bench.sim.render_state(goal.arm_q, cube)
            row.append(float(metric.isotropic(torch.from_numpy(bench.encode(image)) - goal_latent)))
        rows.append(row)
    return np.array(rows)


def hand_term_on_the_push_path(bench: SimWorkbench, metric: EnergyMetric, scenes: int) -> np.ndarray:
    """Per scene: the `energy` (hand) term of one planned step, relative to the push goal's latent, with the cube
    already at its goal and the hand at pushing height under the goal image's pose, and behind the cube's start
    (where a push begins): what a push path costs the planner per step against the cube term's gain."""
    rows = []
    for scene in range(scenes):
        goal, goal_latent = bench.start_episode('push', scene)
        goal_latent = torch.from_numpy(goal_latent)
        under_goal = bench.kinematics.fk(goal.arm_q) - np.array([0.0, 0.0, 0.05])
        # Where the scripted oracle starts its push.
        behind_start = np.r_[bench.cube[:2] - goal.push_direction * (OraclePolicy.CONTACT + 0.03), PUSH_HEIGHT]
        row = []
        for ee in (under_goal, behind_start):
            image, _ = bench.sim.render_state(bench.kinematics.ik(goal.arm_q, ee), goal.cube_position)
            row.append(float(metric.controllable(torch.from_numpy(bench.encode(image)) - goal_latent,
                                                 bench.kinematics.max_step)))
        rows.append(row)
    return np.array(rows)


def handover(bench: SimWorkbench, model, scenes: int, max_steps: int | None = None) -> np.ndarray:
    """Per evaluation seed 0..scenes-1: the cube's final distance to its goal when the oracle brings the hand
    behind the cube at pushing height and Mode-2 (without the skill) plans the rest of the episode (at most
    max_steps)."""
    config, _ = graph_settings('push_one_level')
    actor = Actor(model, config.changed(skill=''), PLANNING_ONLY_PUSH, bench.kinematics)
    distances = []
    for seed in range(scenes):
        goal, goal_latent = bench.start_episode('push', seed)
        oracle = OraclePolicy(goal, bench.kinematics.max_step)
        actor.reset()
        for _ in range(episode_steps(goal, bench.cube))[:max_steps]:
            if oracle.phase != 'push':
                action = oracle.act(bench.ee, bench.cube)
            else:
                action = actor.act(bench.encode(bench.sim.render()), goal_latent, bench.q_arm, 'mode2').action
            bench.command(action)
            bench.advance(DT)
        distances.append(final_distance(goal, bench.ee, bench.cube))
    return np.array(distances)


def skill_push(bench: SimWorkbench, model, scenes: int, low: float = 0.09, max_steps: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per evaluation seed, with the graph's push settings (the push skill on the shipped read-out), episodes of
    at most max_steps: the cube's final distance to its goal and the read-out's error on the goal image's cube.
    And per control step of those episodes: the effector map's error reading the real hand step from the real
    latent step, and the step's length (cm), for steps starting with the hand below `low` (m) and above it."""
    config, weights = graph_settings('push_skill')
    readout = graph_readout(model)
    actor = Actor(model, config, weights, bench.kinematics, readout=readout)
    effector_map = actor.intrinsic.metric.effector_map.cpu().numpy()
    distances, goal_errors, steps = [], [], {'low': [], 'high': []}
    for seed in range(scenes):
        goal, goal_latent = bench.start_episode('push', seed)
        goal_errors.append(np.linalg.norm(readout(goal_latent) - goal.target[:2]))
        actor.reset()
        z = bench.encode(bench.sim.render())
        for _ in range(episode_steps(goal, bench.cube))[:max_steps]:
            ee = bench.ee.copy()
            bench.command(actor.act(z, goal_latent, bench.q_arm).action)
            bench.advance(DT)
            z_next = bench.encode(bench.sim.render())
            step = bench.ee - ee
            steps['low' if ee[2] < low else 'high'].append(
                (np.linalg.norm(effector_map @ (z_next - z) - step), np.linalg.norm(step)))
            z = z_next
        distances.append(final_distance(goal, bench.ee, bench.cube))
    by_height = {where: np.array(values).reshape(-1, 2) * 100.0 for where, values in steps.items()}
    return np.array(distances), np.array(goal_errors), by_height


def long_open_loop(bench: SimWorkbench, model, metric: EnergyMetric, scenes: int, steps: int = 30) -> np.ndarray:
    """Per evaluation seed: `latent` term (isotropic distance to the goal latent) of the start, of the real state
    after the oracle's first `steps` actions, and of the model's open-loop prediction of those actions."""
    rows = []
    for seed in range(scenes):
        goal, goal_latent = bench.start_episode('push', seed)
        oracle = OraclePolicy(goal, bench.kinematics.max_step)
        goal_latent = torch.from_numpy(goal_latent)
        start = torch.from_numpy(bench.encode(bench.sim.render()))
        actions = []
        for _ in range(steps):
            actions.append(oracle.act(bench.ee, bench.cube))
            bench.command(actions[-1])
            bench.advance(DT)
        real = torch.from_numpy(bench.encode(bench.sim.render()))
        with torch.inference_mode():
            predicted = model.rollout(start[None], torch.tensor(np.array(actions), dtype=torch.float32)[None])[0, -1]
        rows.append([float(metric.isotropic(z - goal_latent)) for z in (start, real, predicted)])
    return np.array(rows)


WRONG_ANGLES = (30, -30, 60, -60, 90, -90, 180)   # degrees off the true push direction
IMAGINED_STEPS = 60                                 # 6 s: approach, push and lift off fit


def imagined_oracle_plan(goal: Goal, ee: np.ndarray, cube: np.ndarray, max_step: float) -> np.ndarray:
    """The oracle's actions for `goal`, played open loop without the simulator: the hand moves by each action,
    the cube stays put until the fingers reach it and is then carried ahead of them along the push."""
    oracle, ee, cube = OraclePolicy(goal, max_step), ee.copy(), cube.copy()
    actions = []
    for _ in range(IMAGINED_STEPS):
        actions.append(oracle.act(ee, cube))
        ee = ee + actions[-1][:3]
        if oracle.phase == 'push':
            ahead = (ee[:2] - cube[:2]) @ oracle.skill.direction + OraclePolicy.CONTACT
            cube[:2] += max(ahead, 0.0) * oracle.skill.direction
    return np.array(actions)


def push_direction_margin(bench: SimWorkbench, model, metric: EnergyMetric, goal: Goal, goal_latent: torch.Tensor,
                          cube: np.ndarray) -> float:
    """From the current state: the predicted final `latent` term of the oracle's imagined plan for the true goal
    minus the lowest of the wrong directions' (< 0: the true push is ranked first)."""
    offset = goal.target[:2] - cube[:2]
    plans = []
    for degrees in (0, *WRONG_ANGLES):
        c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        target = np.r_[cube[:2] + np.array([[c, -s], [s, c]]) @ offset, goal.target[2]]
        direction = (target[:2] - cube[:2]) / np.linalg.norm(offset)
        plans.append(imagined_oracle_plan(Goal('push', target, goal.arm_q, target, direction), bench.ee, cube,
                                          bench.kinematics.max_step))
    z = torch.from_numpy(bench.encode(bench.sim.render()))
    with torch.inference_mode():
        final = model.rollout(z[None].expand(len(plans), -1), torch.tensor(np.array(plans), dtype=torch.float32))
    cost = metric.isotropic(final[:, -1] - goal_latent).numpy()
    return float(cost[0] - cost[1:].min())


def long_horizon_direction(bench: SimWorkbench, model, metric: EnergyMetric, scenes: int) -> np.ndarray:
    """Per evaluation seed: push_direction_margin at the start and once the real oracle has brought the hand
    behind the cube."""
    rows = []
    for seed in range(scenes):
        goal, goal_latent = bench.start_episode('push', seed)
        goal_latent = torch.from_numpy(goal_latent)
        row = [push_direction_margin(bench, model, metric, goal, goal_latent, bench.cube.copy())]
        oracle = OraclePolicy(goal, bench.kinematics.max_step)
        while oracle.phase != 'push':
            bench.command(oracle.act(bench.ee, bench.cube))
            bench.advance(DT)
        row.append(push_direction_margin(bench, model, metric, goal, goal_latent, bench.cube.copy()))
        rows.append(row)
    return np.array(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--checkpoint', type=Path, default=None)
    parser.add_argument('--scenes', type=int, default=10)
    parser.add_argument('--readout-scenes', type=int, default=1500)
    parser.add_argument('--quick', action='store_true', help='1 scene, 50 read-out scenes, episodes cut to 2 s')
    args = parser.parse_args()
    if args.quick:
        args.scenes, args.readout_scenes = 1, 50
    max_steps = 20 if args.quick else None
    torch.set_num_threads(1)
    model = load_checkpoint(args.checkpoint or default_checkpoint_path())
    bench = SimWorkbench(model)
    try:
        latents, cubes = random_scenes(bench, args.readout_scenes, seed=0)
        held_latents, held_cubes = random_scenes(bench, args.readout_scenes // 5, seed=1)
        probe = ridge_probe(latents, cubes, held_latents, held_cubes)
        print(f'{model.model_id}: cube read-out error {probe["error_cm"]:.1f} cm on {probe["test_frames"]} new scenes '
              f'(predicting the mean: {probe["mean_baseline_cm"]:.1f} cm)')
        metric = EnergyMetric.of(model)
        rows, distances = contact(bench, model, fit_ridge(latents, cubes), metric, args.scenes)
        real, seen, push, pull = rows.mean(0)
        print(f'1-s push from just behind the cube, along the push ({args.scenes} scenes, mean cm): cube moved '
              f'{real:.1f}; read-out of the real final latent {seen:+.1f}; predicted push {push:+.1f}; predicted '
              f'pull-back {pull:+.1f}')
        to_pushed, to_unpushed = distances.mean(0)
        print(f'predicted push vs the real outcome / the same arm pose with the cube unmoved (isotropic distance, '
              f'mean): {to_pushed:.3f} / {to_unpushed:.3f}; closer to the pushed cube in '
              f'{(distances[:, 0] < distances[:, 1]).sum()} of {args.scenes} scenes')
        energy = energy_along_push(bench, metric, args.scenes)
        start, half, near = energy.mean(0)
        print(f'isotropic energy, arm as in the goal image, cube at start / half-way / 1 cm from the goal: '
              f'{start:.3f} / {half:.3f} / {near:.3f} (falls in {(np.diff(energy, axis=1) < 0).all(1).sum()} of '
              f'{args.scenes} scenes)')
        under_goal, behind_start = hand_term_on_the_push_path(bench, metric, args.scenes).mean(0)
        print(f'hand (energy) term per planned step, cube at its goal, hand at pushing height under the goal pose / '
              f'behind the cube start: {under_goal:.2f} / {behind_start:.2f} (the cube term gains at most '
              f'{start:.2f} per step at weight 1)')
        distances = handover(bench, model, args.scenes, max_steps)
        print(f'handover (oracle to behind the cube, then Mode-2 without the skill; seeds 0-{args.scenes - 1}): '
              f'{(distances < SUCCESS_RADIUS["push"]).sum()} of {args.scenes} within {SUCCESS_RADIUS["push"]} m, '
              f'mean final distance {distances.mean():.3f} m')
        latent_start, latent_real, latent_predicted = long_open_loop(bench, model, metric, args.scenes).T
        print(f'the oracle\'s first 30 actions: latent term at the start {latent_start.mean():.3f}, after them for '
              f'real {latent_real.mean():.3f}, as the model predicts them open loop {latent_predicted.mean():.3f} '
              f'(prediction above the real outcome in {(latent_predicted > latent_real).sum()} of {args.scenes})')
        margins = long_horizon_direction(bench, model, metric, args.scenes)
        print(f'which way to push, 6 s open loop (the oracle\'s plan for the true goal against {len(WRONG_ANGLES)} '
              f'wrong directions): the true one predicted cheapest in {(margins[:, 0] < 0).sum()} of {args.scenes} '
              f'scenes from the start, {(margins[:, 1] < 0).sum()} of {args.scenes} with the hand behind the cube '
              f'(mean margin {margins[:, 0].mean():+.3f} / {margins[:, 1].mean():+.3f}; < 0 ranks it first)')
        distances, goal_errors, by_height = skill_push(bench, model, args.scenes, max_steps=max_steps)
        print(f'the push skill (graph settings, shipped read-out; seeds 0-{args.scenes - 1}): '
              f'{(distances < SUCCESS_RADIUS["push"]).sum()} of {args.scenes} within {SUCCESS_RADIUS["push"]} m, '
              f'mean final distance {distances.mean():.3f} m; the goal image\'s cube read out '
              f'{goal_errors.mean() * 100:.1f} cm off (median {np.median(goal_errors) * 100:.1f})')
        print('the effector map reading real hand steps along those pushes (median error / median step, cm): ' +
              '; '.join(f'hand {where} 9 cm {np.median(rows[:, 0]):.2f} / '
                        f'{np.median(rows[:, 1]):.2f} ({len(rows)} steps)'
                        for where, rows in (('below', by_height['low']), ('above', by_height['high']))))
    finally:
        bench.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
