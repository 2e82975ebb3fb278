"""Replanning rate of the actor's Mode-2 planner (the graph's reach settings, config/agent.yaml) on this machine's CPU,
against baselines measured in the same run:

- sampling only (no gradient refinement),
- batch-1: the same candidates scored one rollout call each (the per-sample data path the actor avoids),
- Mode-1: one policy rollout instead of a plan;

and per level for push, which plans with two (the shipped higher level beside the checkpoint): the higher level's
plan alone, and a whole decision (the higher level replans every step, then the control level).

Uses the shipped world-model checkpoint when there is one, else a randomly initialized model of the default
size (speed does not depend on the weights). Prints figures; asserts nothing. --quick: 2 timed plans each and a
batch-1 loop of 8 calls (seconds).

    .venv/bin/python bench/planner_rate.py [--plans 30] [--threads 1] [--quick]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

from jepa_bringup.agent_settings import agent_params, graph_settings
from jepa_common.kinematics import PANDA_HOME, ArmKinematics
from jepa_actor.actor import Actor
from jepa_cost.cost import PlanObjective
from jepa_world_model.high_level import HighLevelError, HighLevelModel, default_high_level_path
from jepa_world_model.model import CheckpointError, WorldModel, default_checkpoint_path, encoder_id, load_checkpoint


def time_plans(actor: Actor, z, goal, q, mode: str, plans: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds per decision. On a shared machine the CPU time (one thread) is what a
    dedicated core would take; the wall time is what this run got."""
    actor.act(z, goal, q, mode)  # warm-up (allocations, first-call overheads)
    wall, cpu = [], []
    for _ in range(plans):
        start, start_cpu = time.perf_counter(), time.thread_time()
        actor.act(z, goal, q, mode)
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.thread_time() - start_cpu) * 1e3)
    return wall, cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--plans', type=int, default=30)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: the actor\'s `threads`)')
    parser.add_argument('--quick', action='store_true', help='2 plans per figure, a batch-1 loop of 8 calls')
    args = parser.parse_args(argv)
    plans, batch1_calls = (2, 8) if args.quick else (args.plans, 64)
    # The graph's reach settings: the actor's parameters and the configurator's reach weights.
    config, weights = graph_settings('reach')
    torch.set_num_threads(args.threads or agent_params().get('actor', {}).get('threads', 1))
    checkpoint = default_checkpoint_path()
    try:
        model, source = load_checkpoint(checkpoint), str(checkpoint)
    except CheckpointError as exc:
        model, source = WorldModel(), f'random default-size WorldModel (shipped checkpoint unusable: {exc})'
    print(f'model: {source} '
          f'(latent_dim {model.latent_dim}); torch threads {torch.get_num_threads()}; '
          f'planner {config.planner}, samples {config.samples}, horizon {config.horizon}, '
          f'iterations {config.iterations}, grad_steps {config.grad_steps}')
    kinematics = ArmKinematics()
    rng = np.random.default_rng(0)
    z = rng.normal(size=model.latent_dim).astype(np.float32)
    goal = rng.normal(size=model.latent_dim).astype(np.float32)
    q = np.array(PANDA_HOME)

    rows = []

    def report(name, timed):
        wall, cpu = timed
        p50, p95 = statistics.median(wall), float(np.percentile(wall, 95))
        c50, c95 = statistics.median(cpu), float(np.percentile(cpu, 95))
        rows.append((name, c50, c95))
        print(f'{name:<44} wall p50 {p50:7.1f} p95 {p95:7.1f} ms | cpu p50 {c50:7.1f} p95 {c95:7.1f} ms '
              f'= {1e3 / c50:6.1f} Hz on a free core', flush=True)

    print(f'load average {open("/proc/loadavg").read().split()[0]} on {os.cpu_count()} cores')

    actor = Actor(model, config, weights, kinematics)
    report('mode2 default (sampling + gradient refinement)', time_plans(actor, z, goal, q, 'mode2', plans))
    sampling_only = Actor(model, config.changed(grad_steps=0), weights, kinematics)
    report('mode2 sampling only (grad_steps 0)', time_plans(sampling_only, z, goal, q, 'mode2', plans))
    report('mode1 policy rollout', time_plans(actor, z, goal, q, 'mode1', plans))

    # Batch-1 baseline: score one population of candidates one rollout call at a time.
    objective = PlanObjective(model, actor.intrinsic, torch.from_numpy(z), torch.from_numpy(goal),
                              actor.arm_context(q))
    candidates = torch.rand(config.samples, config.horizon, 4) * 0.06 - 0.03
    with torch.no_grad():
        start = time.thread_time()
        objective(candidates)
        batched_ms = (time.thread_time() - start) * 1e3
        n = min(config.samples, batch1_calls)
        start = time.thread_time()
        for c in candidates[:n]:
            objective(c[None])
        single_ms = (time.thread_time() - start) * 1e3 * config.samples / n
    per_plan_batch1 = single_ms * config.iterations
    report(f'batch-1 loop (est., {config.iterations} x {config.samples} calls)', ([per_plan_batch1], [per_plan_batch1]))
    print(f'\none population of {config.samples} (cpu): batched {batched_ms:.1f} ms vs batch-1 {single_ms:.1f} ms '
          f'({single_ms / batched_ms:.0f}x)')
    default = rows[0][1]
    print(f'default vs sampling-only: {default / rows[1][1]:.2f}x the time; '
          f'vs batch-1 loop: {per_plan_batch1 / default:.0f}x faster')
    print(f'target >= 10 Hz replanning on a free core: {"met" if 1e3 / rows[0][2] >= 10 else "MISSED"} at p95 '
          f'({1e3 / rows[0][2]:.1f} Hz); cpu-time ratios are load-independent, wall times are not')

    push_config, push_weights = graph_settings('push')
    try:
        high_level = HighLevelModel.load(default_high_level_path(checkpoint), encoder_id(model), model.latent_dim)
    except HighLevelError as exc:
        print(f'\npush, two levels: not timed, no higher level for this model ({exc})')
        return 0
    print(f'\npush, two levels: higher level {push_config.subgoal_samples} x 2 candidates in the first round, '
          f'{push_config.subgoal_iterations} rounds, {push_config.subgoal_horizon} macro-actions of '
          f'{high_level.macro_steps} steps; control level as above')
    two = Actor(model, push_config, push_weights, kinematics, high_level=high_level)
    z_t, goal_t = torch.from_numpy(z), torch.from_numpy(goal)

    def higher_level_alone():
        two.subgoal = None   # replan now
        two.plan_subgoal(z_t, goal_t)

    higher = []
    for _ in range(plans + 1):
        start, start_cpu = time.perf_counter(), time.thread_time()
        higher_level_alone()
        higher.append(((time.perf_counter() - start) * 1e3, (time.thread_time() - start_cpu) * 1e3))
    report('push: higher level alone', tuple(map(list, zip(*higher[1:]))))
    report('push: both levels (a whole decision)', time_plans(two, z, goal, q, 'mode2', plans))
    print(f'push, both levels: target >= 10 Hz on a free core: {"met" if 1e3 / rows[-1][2] >= 10 else "MISSED"} '
          f'at p95 ({1e3 / rows[-1][2]:.1f} Hz)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
