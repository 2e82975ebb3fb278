"""Which learned parts decide reach: each ablation on the same seeds, in one process (the in-process workbench,
jepa_bringup.sim_episodes: lock-step, so the machine's load does not change an outcome).

Each condition gets a fresh copy of the shipped world model and a fresh actor (so Mode-1's distilled policy
starts empty everywhere, as in a freshly launched graph) with the graph's reach settings, then the changes the
condition names:
- world_model_copy_last: the predictor's last layer zeroed, so it predicts that no action changes anything;
- world_model_random: the predictor re-initialized at full scale, an arbitrary function of state and action;
- energy_off / latent_off: one of the two JEPA energy terms of the reach profile set to 0;
- no_gradient_refinement, no_policy_proposals, cem: planner changes;
- random / oracle: the references.

    python research/ablations/reach_ablations.py --episodes 20 --seed 3000 --json reach_ablations.json
"""
import argparse
import copy
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from jepa_actor.actor import Actor
from jepa_bringup.agent_settings import graph_settings
from jepa_bringup.provenance import machine_load, provenance
from jepa_bringup.episodes import sim_camera
from jepa_bringup.sim_episodes import SimWorkbench, run_episode
from jepa_world_model.model import default_checkpoint_path, load_checkpoint

COMMAND_DELAY_S = 0.05  # about the graph's frame -> command delay


def copy_last(model) -> None:
    torch.nn.init.zeros_(model.predictor[-1].weight)
    torch.nn.init.zeros_(model.predictor[-1].bias)


def random_predictor(model) -> None:
    torch.manual_seed(0)
    for layer in model.predictor:
        if hasattr(layer, 'reset_parameters'):
            layer.reset_parameters()


# name -> (model change, cost weight overrides, actor setting overrides)
ABLATIONS = {
    'full': (None, {}, {}),
    'world_model_copy_last': (copy_last, {}, {}),
    'world_model_random': (random_predictor, {}, {}),
    'energy_off': (None, {'energy': 0.0}, {}),
    'latent_off': (None, {'latent': 0.0}, {}),
    'no_gradient_refinement': (None, {}, {'grad_steps': 0}),
    'no_policy_proposals': (None, {}, {'policy_proposals': False}),
    'cem': (None, {}, {'planner': 'cem'}),
    'random': (None, {}, {}),
    'oracle': (None, {}, {}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--episodes', type=int, default=20)
    parser.add_argument('--seed', type=int, default=3000)
    parser.add_argument('--conditions', default=','.join(ABLATIONS))
    parser.add_argument('--json', type=Path)
    args = parser.parse_args()
    conditions = args.conditions.split(',')
    unknown = set(conditions) - set(ABLATIONS)
    if unknown:
        parser.error(f'unknown conditions {sorted(unknown)}; choose from {", ".join(ABLATIONS)}')
    torch.set_num_threads(1)
    checkpoint = default_checkpoint_path()
    shipped = load_checkpoint(checkpoint)
    config, weights = graph_settings('reach')
    bench = SimWorkbench(shipped, sim_camera())
    report = {'provenance': {**provenance(sys.argv), 'checkpoint': str(checkpoint), 'model_id': shipped.model_id,
                             'seeds': [args.seed, args.seed + args.episodes - 1], 'command_delay_s': COMMAND_DELAY_S},
              'conditions': {}}
    try:
        for name in conditions:
            change, weight_overrides, settings = ABLATIONS[name]
            model = copy.deepcopy(shipped)
            if change is not None:
                change(model)
            bench.model = shipped  # observations and goals: always encoded by the shipped encoder
            actor = Actor(model, config.changed(**settings), replace(weights, **weight_overrides), bench.kinematics)
            episode_condition = name if name in ('random', 'oracle') else 'mode2'
            results = []
            for i in range(args.episodes):
                t0 = time.monotonic()
                result = run_episode(bench, actor, episode_condition, 'reach', args.seed + i,
                                     0.0 if episode_condition != 'mode2' else COMMAND_DELAY_S)
                results.append(result)
                print(f'{name} seed {result["seed"]}: {result["final_distance_m"]:.3f} m '
                      f'{"success" if result["success"] else "fail"} ({time.monotonic() - t0:.0f} s)', flush=True)
            distances = [r['final_distance_m'] for r in results]
            report['conditions'][name] = {
                'weights': {**weight_overrides}, 'settings': settings,
                'successes': int(sum(r['success'] for r in results)), 'episodes': len(results),
                'final_distance_m_p50': float(np.median(distances)),
                'final_distance_m_p90': float(np.percentile(distances, 90)), 'per_episode': results}
            print(f'{name}: {report["conditions"][name]["successes"]}/{len(results)} within 2.5 cm, final '
                  f'distance p50 {np.median(distances) * 100:.1f} cm', flush=True)
    finally:
        bench.close()
    report['provenance']['load_end'] = machine_load()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
