"""Does Mode-1 generalize to new goals when Mode-2 teaches it on more of them? In process (the lock-step workbench).

Through the graph, Mode-1 scores 96 % on the 50 reach goals Mode-2 has just taught it and 8 % on 50 new ones: the
policy, distilled online from one evaluation's plans, has seen 50 goals. Here Mode-2 reaches on `--train-episodes`
training seeds (no evaluation uses them) and every plan is a distillation label, as in the graph; optional DAgger
episodes follow (Mode-1 acts, Mode-2 labels every dagger_every steps); then learning is switched off and Mode-1
acts alone on the evaluation seeds, checked after each `--eval-every` training episodes.

    python research/mode1_distillation/distil.py --train-episodes 100 --train-seed 100 --eval-seed 3000 \
        --eval-episodes 20 --eval-every 25 --save policy.pt --json distil.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from jepa_actor.actor import Actor
from jepa_actor.policy import PolicyDistiller, ReactivePolicy
from jepa_bringup.agent_settings import graph_settings
from jepa_bringup.provenance import machine_load, provenance
from jepa_bringup.episodes import sim_camera
from jepa_bringup.sim_episodes import SimWorkbench, run_episode
from jepa_world_model.model import default_checkpoint_path, load_checkpoint

COMMAND_DELAY_S = 0.05


class StateGoalPolicy(ReactivePolicy):
    """The policy's input before format 2: (state, goal)."""

    def forward(self, z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.low + (self.net(torch.cat([z, goal.expand_as(z)], dim=-1)) + 1) / 2 * (self.high - self.low)


def evaluate(bench, actor, seed: int, episodes: int) -> dict:
    """Mode-1 alone, learning nothing, on the evaluation seeds; the actor's learning settings are restored."""
    learning = {'distill_every': actor.config.distill_every, 'dagger_every': actor.config.dagger_every}
    actor.reconfigure(distill_every=0, dagger_every=0)
    results = [run_episode(bench, actor, 'mode1', 'reach', seed + i, COMMAND_DELAY_S) for i in range(episodes)]
    actor.reconfigure(**learning)
    distances = [r['final_distance_m'] for r in results]
    return {'successes': int(sum(r['success'] for r in results)), 'episodes': episodes,
            'final_distance_m_p50': float(np.median(distances)), 'per_episode': results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--train-episodes', type=int, default=100)
    parser.add_argument('--train-seed', type=int, default=100)
    parser.add_argument('--dagger-episodes', type=int, default=0, help='Mode-1 episodes labelled by Mode-2 after '
                                                                       'the Mode-2 ones')
    parser.add_argument('--capacity', type=int, default=100_000, help='distillation examples kept')
    parser.add_argument('--state-goal', action='store_true', help='the policy on (state, goal), as before format 2')
    parser.add_argument('--eval-seed', type=int, default=3000)
    parser.add_argument('--eval-episodes', type=int, default=20)
    parser.add_argument('--eval-every', type=int, default=25)
    parser.add_argument('--save', type=Path)
    parser.add_argument('--json', type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = default_checkpoint_path()
    model = load_checkpoint(checkpoint)
    config, weights = graph_settings('reach')
    bench = SimWorkbench(model, sim_camera())
    actor = Actor(model, config, weights, bench.kinematics)
    if args.state_goal:
        actor.policy = StateGoalPolicy(model.latent_dim, actor.low, actor.high, model_id=model.model_id)
    actor.distiller = PolicyDistiller(actor.policy, capacity=args.capacity, seed=config.seed)
    report = {'provenance': {**provenance(sys.argv), 'model_id': model.model_id},
              'checks': []}
    t0 = time.monotonic()
    try:
        schedule = [('mode2', args.train_seed + i) for i in range(args.train_episodes)] + \
                   [('mode1', args.train_seed + args.train_episodes + i) for i in range(args.dagger_episodes)]
        for n, (mode, seed) in enumerate(schedule, 1):
            result = run_episode(bench, actor, mode, 'reach', seed, COMMAND_DELAY_S)
            print(f'train {mode} seed {seed}: {result["final_distance_m"]:.3f} m, {len(actor.distiller.examples)} '
                  f'examples, imitation error {actor.distiller.imitation_error():.3f}', flush=True)
            if n % args.eval_every == 0 or n == len(schedule):
                check = {'trained_episodes': n, 'examples': len(actor.distiller.examples),
                         'minutes': round((time.monotonic() - t0) / 60, 1),
                         **evaluate(bench, actor, args.eval_seed, args.eval_episodes)}
                report['checks'].append(check)
                print(f'after {n} training episodes: Mode-1 {check["successes"]}/{args.eval_episodes} on the '
                      f'evaluation seeds, final p50 {check["final_distance_m_p50"] * 100:.1f} cm', flush=True)
    finally:
        bench.close()
    report['provenance']['load_end'] = machine_load()
    if args.save:
        actor.policy.save(args.save)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
