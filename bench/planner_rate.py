"""Replanning rate of the actor's Mode-2 planner (the graph's reach settings, config/agent.yaml) on this machine's CPU,
against baselines measured in the same run:

- sampling only (no gradient refinement),
- batch-1: the same candidates scored one rollout call each (the per-sample data path the actor avoids),
- Mode-1: one policy rollout instead of a plan;

and per level for push, which plans with two (the shipped higher level beside the checkpoint): the higher level's
plan alone, and a whole decision (the higher level replans every step, then the control level).

For each of these (the batch-1 estimate aside) also the floating-point operations of one decision, counted by
torch's FlopCounterMode (matrix products and convolutions, forward and backward: all of the world model's, cost's
and policy's Linear layers; elementwise ops, norms and activations are not counted), and the CPU time per decision
against this CPU's measured peak for float32 at the same thread count: the best of a few large square matmuls
(torch.mm, i.e. the BLAS, the practical peak rather than the datasheet's). Per configuration: GFLOP per decision,
the GFLOP/s achieved (FLOPs / CPU time p50), their share of the peak, and the decision rate the peak would allow
(the hardware limit).

Uses the shipped world-model checkpoint when there is one, else a randomly initialized model of the default
size (speed does not depend on the weights). Prints figures; asserts nothing. --quick: 2 timed plans each, a
batch-1 loop of 8 calls and a 512 x 512 peak matmul instead of 2048 x 2048 (seconds).

    .venv/bin/python bench/planner_rate.py [--plans 30] [--threads 1] [--quick]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from jepa_bringup.agent_settings import agent_params, graph_settings
from jepa_common.kinematics import PANDA_HOME, ArmKinematics
from jepa_actor.actor import Actor
from jepa_cost.cost import PlanObjective
from jepa_world_model.high_level import HighLevelError, HighLevelModel, default_high_level_path
from jepa_world_model.model import CheckpointError, WorldModel, default_checkpoint_path, encoder_id, load_checkpoint


COUNTED = 3  # calls whose FLOPs are counted (after the timed ones); the median is reported, as Mode-1 plans a
#             DAgger label every dagger_every calls


def time_calls(call, plans: int) -> tuple[list[float], list[float], float]:
    """Wall and CPU milliseconds per call, and the GFLOP of the median of COUNTED more calls. On a shared machine
    the CPU time (one thread) is what a dedicated core would take; the wall time is what this run got."""
    call()  # warm-up (allocations, first-call overheads)
    wall, cpu = [], []
    for _ in range(plans):
        start, start_cpu = time.perf_counter(), time.thread_time()
        call()
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.thread_time() - start_cpu) * 1e3)
    flops = []
    for _ in range(COUNTED):
        with FlopCounterMode(display=False) as counter:
            call()
        flops.append(counter.get_total_flops() / 1e9)
    return wall, cpu, statistics.median(flops)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--plans', type=int, default=30)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: the actor\'s `threads`)')
    parser.add_argument('--quick', action='store_true',
                        help='2 plans per figure, a batch-1 loop of 8 calls, a 512 x 512 peak matmul')
    args = parser.parse_args(argv)
    plans, batch1_calls, peak_size = (2, 8, 512) if args.quick else (args.plans, 64, 2048)
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
    a, b = torch.randn(peak_size, peak_size), torch.randn(peak_size, peak_size)
    _, peak_cpu, peak_gflop = time_calls(lambda: torch.mm(a, b), 5)
    peak = peak_gflop / min(peak_cpu) * 1e3
    print(f'cpu peak {peak:.1f} GFLOP/s float32: best of 5 torch.mm {peak_size} x {peak_size} (BLAS, the practical '
          f'peak), cpu time on {torch.get_num_threads()} thread(s)'
          f'{" (--quick: a smaller matmul than the full run)" if args.quick else ""}')
    print(f'FLOPs counted by torch\'s FlopCounterMode (matrix products and convolutions, forward and backward; '
          f'elementwise ops, norms and activations not counted), median of {COUNTED} decisions')

    def report(name, wall, cpu, gflop=None):
        p50, p95 = statistics.median(wall), float(np.percentile(wall, 95))
        c50, c95 = statistics.median(cpu), float(np.percentile(cpu, 95))
        rows.append((name, c50, c95))
        print(f'{name:<44} wall p50 {p50:7.1f} p95 {p95:7.1f} ms | cpu p50 {c50:7.1f} p95 {c95:7.1f} ms '
              f'= {1e3 / c50:6.1f} Hz on a free core', flush=True)
        if gflop is not None:
            print(f'{name:<44} {gflop:7.4f} GFLOP per decision = {gflop / c50 * 1e3:6.1f} GFLOP/s, '
                  f'{100 * gflop / c50 * 1e3 / peak:5.1f}% of the peak; the peak allows {peak / gflop:7.0f} Hz',
                  flush=True)

    def decisions(actor, mode):
        return time_calls(lambda: actor.act(z, goal, q, mode), plans)

    print(f'load average {open("/proc/loadavg").read().split()[0]} on {os.cpu_count()} cores')

    actor = Actor(model, config, weights, kinematics)
    report('mode2 default (sampling + gradient refinement)', *decisions(actor, 'mode2'))
    sampling_only = Actor(model, config.changed(grad_steps=0), weights, kinematics)
    report('mode2 sampling only (grad_steps 0)', *decisions(sampling_only, 'mode2'))
    report('mode1 policy rollout', *decisions(actor, 'mode1'))

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
    report(f'batch-1 loop (est., {config.iterations} x {config.samples} calls)', [per_plan_batch1], [per_plan_batch1])
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

    report('push: higher level alone', *time_calls(higher_level_alone, plans))
    report('push: both levels (a whole decision)', *decisions(two, 'mode2'))
    print(f'push, both levels: target >= 10 Hz on a free core: {"met" if 1e3 / rows[-1][2] >= 10 else "MISSED"} '
          f'at p95 ({1e3 / rows[-1][2]:.1f} Hz)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
