"""How far the state decides the higher level's first macro-action: at push start states, the shipped search
(graph push configuration, fresh, as at an episode's first step) is run with several planner seeds; the spread of
the first macro-action's hand part is compared with that of the plan's mean macro-action (its net displacement /
H), and the plans' costs with each other; and each plan's cost with the same macro-actions in shuffled orders (how
far the order matters to the higher level's prediction of where they end). --budgets repeats it with other
search budgets (subgoal_samples x subgoal_iterations): how much cheaper the plans a bigger search finds are.

    first_macro_spread.py --seed 5184 --states 10 --plans 8 [--budgets 256x3,1024x6]
"""
import argparse
import time

import numpy as np
import torch

from jepa_actor.actor import Actor
from shipped import shipped_push


def spread(vectors: np.ndarray) -> float:
    """Root mean squared distance of the vectors (n, 3) to their mean."""
    return float(np.sqrt(((vectors - vectors.mean(0)) ** 2).sum(1).mean()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seed', type=int, default=5184)
    ap.add_argument('--states', type=int, default=10)
    ap.add_argument('--plans', type=int, default=8)
    ap.add_argument('--budgets', default='256x3')
    a = ap.parse_args()
    model, config, weights, high, bench = shipped_push()
    starts = []
    for seed in range(a.seed, a.seed + a.states):
        goal, goal_latent = bench.start_episode('push', seed)
        starts.append((seed, torch.as_tensor(bench.encode(bench.sim.render())), torch.as_tensor(goal_latent)))
    bench.close()
    for budget in a.budgets.split(','):
        samples, iterations = (int(x) for x in budget.split('x'))
        print(f'search {samples} x {iterations}:', flush=True)
        one_budget(starts, model, config.changed(subgoal_samples=samples, subgoal_iterations=iterations), weights,
                   bench.kinematics, high, a.plans)


def one_budget(starts, model, config, weights, kinematics, high, plans):
    rows, all_costs, seconds = [], [], []
    for seed, z, g in starts:
        first, mean, costs, shuffled = [], [], [], []
        rng = np.random.default_rng(seed)
        for k in range(plans):
            actor = Actor(model, config.changed(seed=1000 * k), weights, kinematics, high_level=high)
            t0 = time.perf_counter()
            macros = actor.plan_macros(z, g)
            seconds.append(time.perf_counter() - t0)
            objective = actor.subgoal_objective(z, g)
            orders = torch.as_tensor(np.array([rng.permutation(len(macros)) for _ in range(8)]))
            with torch.no_grad():
                costs.append(float(objective(macros[None])[0]))
                shuffled.append(float(objective(macros[orders]).mean()))
            first.append(macros[0, :3].numpy())
            mean.append(macros[:, :3].mean(0).numpy())
        all_costs.append(costs)
        first, mean = np.array(first), np.array(mean)
        rows.append((spread(first), spread(mean), float(np.linalg.norm(first, axis=1).mean()),
                     float(np.linalg.norm(mean, axis=1).mean()), float(np.std(costs) / np.mean(costs)),
                     float(np.mean(shuffled) / np.mean(costs) - 1)))
        print(f'seed {seed}: first macro spread {rows[-1][0]:.2f} (size {rows[-1][2]:.2f}), mean macro spread '
              f'{rows[-1][1]:.2f} (size {rows[-1][3]:.2f}), cost cv {rows[-1][4]:.3f}, shuffled order '
              f'{rows[-1][5]:+.1%}', flush=True)
    r = np.array(rows)
    print(f'over {len(rows)} states: first macro spread {r[:, 0].mean():.2f} (size {r[:, 2].mean():.2f}); mean macro '
          f'spread {r[:, 1].mean():.2f} (size {r[:, 3].mean():.2f}); cost coefficient of variation {r[:, 4].mean():.3f}; '
          f'shuffled orders cost {r[:, 5].mean():+.1%} more; a plan found costs {np.mean(all_costs):.4f} (per state, '
          f'the cheapest of its searches: {np.mean(np.min(all_costs, 1)):.4f}); search {np.median(seconds) * 1e3:.0f} ms',
          flush=True)


if __name__ == '__main__':
    main()
