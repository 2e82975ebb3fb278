"""Ranking check of a library-only higher level before planning with it (privileged sim state for diagnostics only,
never on the decision path).

Runs the shipped configuration exactly as `python -m jepa_bringup.sim_episodes --task push --conditions mode2`
(one actor over the seeds in order, so its episodes are the evaluation's), and every `--every` steps, from the state
the shipped actor is in, scores four 6-macro plans with the higher level's predictor and then executes each open
loop in the simulator (the episode replayed from its seed with the actions taken so far, then the plan's macros,
each spread evenly over its 5 control steps) to read its real outcome:
  shipped  the shipped free search's pick (the plan the actor is executing),
  library  the cheapest of 1024 play-library draws (library_search.library_pick, fresh draws, nothing kept),
  still    all macro-actions zero (the hand stays),
  oracle   the scripted oracle's next 30 actions as macro-actions (a reference, privileged).
Per plan: predicted terminal cost, real terminal cost (same cost on the encoded final frame), the real cube-to-goal
distance after the 3 s. Each state is tagged with its situation (§13): `ahead` = the hand is nearer the goal than
the cube along the push line and within 6 cm of it sideways (between cube and goal), `short` = the cube 2.5-8 cm
from the goal; the situation counts come out at the end.

    diag_library.py --seed 5000 --episodes 20 --every 20 --json results/diag_library_5000.json
"""
import argparse
import copy
import json
import time

import numpy as np
import pybullet as p
import torch

from jepa_actor.actor import Actor
from jepa_bringup.agent_settings import graph_settings
from jepa_bringup.episodes import DT, OraclePolicy, episode_steps, final_distance, sim_camera
from jepa_bringup.sim_episodes import SimWorkbench
from jepa_cost.cost import SubgoalObjective
from jepa_world_model.high_level import HighLevelModel, default_high_level_path, macro_actions
from jepa_world_model.model import default_checkpoint_path, encoder_id, load_checkpoint
from library_search import library_pick


def snapshot(bench):
    """The simulator's full state (PyBullet saveState: bodies, velocities, contacts), the trajectory follower and the
    step counter (the follower samples by sim time): replaying actions from the seed is not exact, since sim time
    keeps running across resets and contact amplifies the rounding."""
    return (p.saveState(physicsClientId=bench.sim.client), copy.deepcopy(bench.follower), bench.sim.steps)


def restore(bench, state):
    p.restoreState(state[0], physicsClientId=bench.sim.client)
    bench.follower, bench.sim.steps = copy.deepcopy(state[1]), state[2]


def execute(bench, macros, max_step, K):
    for m in macros:
        a = np.r_[m[:3] * max_step, m[3]].astype(np.float32)
        for _ in range(K):
            bench.command(a)
            bench.advance(DT)


def probe_plans(bench, actor, objective, plans, oracle, goal, seed, step, ee, cube, H, K, max_step):
    """Each plan's predicted and real outcome from the current state, which is restored afterwards."""
    state = snapshot(bench)
    tags, dist = situation(goal, ee, cube)
    row = {'seed': seed, 'step': step, 'tags': tags, 'cube_to_goal': round(dist, 4)}
    oracle_actions = []
    for _ in range(H * K):   # the oracle's 30 actions from here (privileged reference)
        oracle_actions.append(oracle.act(bench.ee, bench.cube))
        bench.command(oracle_actions[-1])
        bench.advance(DT)
    plans['oracle'] = torch.as_tensor(macro_actions(np.array(oracle_actions, np.float32).reshape(H, K, 4), max_step))
    for name, macros in plans.items():
        with torch.no_grad():
            predicted = float(objective(macros[None])[0])
        restore(bench, state)
        if name == 'oracle':
            for a in oracle_actions:
                bench.command(a)
                bench.advance(DT)
        else:
            execute(bench, macros.numpy(), max_step, K)
        real = real_cost(actor, objective, bench.encode(bench.sim.render()))
        row[name] = {'predicted': round(predicted, 4), 'real': round(real, 4),
                     'cube_to_goal_after': round(float(np.linalg.norm(bench.cube[:2] - goal.target[:2])), 4)}
    restore(bench, state)
    p.removeState(state[0], physicsClientId=bench.sim.client)
    row['restore_error_m'] = float(max(np.abs(bench.ee - ee).max(), np.abs(bench.cube - cube).max()))
    return row


def real_cost(actor, objective, latent):
    d = torch.as_tensor(latent) - objective.goal
    return float(objective.latent * actor.intrinsic.metric.isotropic(d)
                 + objective.energy * actor.intrinsic.metric.controllable(d, actor.config.max_step))


def situation(goal, ee, cube):
    direction = goal.target[:2] - cube[:2]
    dist = np.linalg.norm(direction)
    direction = direction / max(dist, 1e-9)
    rel = ee[:2] - cube[:2]
    along, side = rel @ direction, abs(rel[0] * direction[1] - rel[1] * direction[0])
    tags = []
    if along > 0.0 and side < 0.06:
        tags.append('ahead')
    if 0.025 <= dist < 0.08:
        tags.append('short')
    return tags, float(dist)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seed', type=int, default=5000)
    ap.add_argument('--episodes', type=int, default=20)
    ap.add_argument('--every', type=int, default=20)
    ap.add_argument('--samples', type=int, default=1024)
    ap.add_argument('--high-level', default='', help='higher level to diagnose (default: the shipped one)')
    ap.add_argument('--json', required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    config, weights = graph_settings('push')
    high = HighLevelModel.load(a.high_level or default_high_level_path(default_checkpoint_path()), encoder_id(model),
                               model.latent_dim)
    bench = SimWorkbench(model, sim_camera())
    actor = Actor(model, config, weights, bench.kinematics, high_level=high)
    K, max_step = high.macro_steps, config.max_step
    H = config.subgoal_horizon
    rows, finals = [], []
    lib_generator = torch.Generator().manual_seed(12345)
    for seed in range(a.seed, a.seed + a.episodes):
        t0 = time.monotonic()
        goal, goal_latent = bench.start_episode('push', seed)
        actor.reset()
        goal_t = torch.as_tensor(goal_latent)
        for step in range(episode_steps(goal, bench.cube)):
            latent = bench.encode(bench.sim.render())
            q_arm = bench.q_arm
            probe = step % a.every == 0
            if probe:
                ee, cube = bench.ee.copy(), bench.cube.copy()
                oracle = OraclePolicy(goal, max_step)   # privileged reference: its next 30 actions from here
            decision = actor.act(latent, goal_latent, q_arm, 'mode2')
            if probe:
                z = torch.as_tensor(latent)
                objective = SubgoalObjective(high, actor.intrinsic.metric, z, goal_t, config.subgoal_energy,
                                             config.subgoal_latent, config.subgoal_effort, max_step)
                saved, actor.library_generator = actor.library_generator, lib_generator
                lib, _ = library_pick(actor, z, goal_t, a.samples)
                actor.library_generator = saved
                plans = {'shipped': actor.subgoal_macros.clone(), 'library': lib, 'still': torch.zeros(H, 4)}
                row = probe_plans(bench, actor, objective, plans, oracle, goal, seed, step, ee, cube, H, K, max_step)
                rows.append(row)
                print(json.dumps(row), flush=True)
            bench.command(decision.action, q_arm)
            bench.advance(DT)
        finals.append({'seed': seed, 'final_distance_m': final_distance(goal, bench.ee, bench.cube)})
        print(f'seed {seed}: final {finals[-1]["final_distance_m"]:.3f} m ({time.monotonic() - t0:.0f} s)', flush=True)
    bench.close()
    json.dump({'rows': rows, 'finals': finals, 'args': vars(a)}, open(a.json, 'w'), indent=1)


if __name__ == '__main__':
    main()
