"""Mode-1 on push with the sub-goals from the higher level's search (`mode1_subgoals: plan`, as shipped) against the
sub-goal policy distilled from it (`policy`: no search at either level), in one process, seed by seed.

One actor (the graph's push configuration) pushes with Mode-2 on the teaching seeds, distilling both levels' plans
as the graph does; then three copies of it play each new seed in turn: Mode-2 (learning on, as in the graph), and
Mode-1 with each sub-goal source, learning off (`dagger_every` 0, as `jepa eval`'s mode1_fresh). With --dagger,
each Mode-1 copy first plays the teaching seeds again in mode1 with DAgger on (as `jepa eval`'s mode1 condition
before mode1_fresh: the searches label states its own policies led to).
Each condition also reports the mean hand displacement of the higher level's first macro-action (units of its
bound), searched or proposed.

    eval_mode1_subgoals.py --teach-seed 5184 --teach 30 --seed 5214 --episodes 30 --json results/mode1_subgoals.json
"""
import argparse
import copy
import json
import time

import numpy as np

from jepa_actor.actor import Actor
from jepa_bringup.sim_episodes import run_episode
from shipped import shipped_push

CONDITIONS = {'mode2': ('mode2', {}),
              'mode1_plan': ('mode1', {'mode1_subgoals': 'plan', 'dagger_every': 0}),
              'mode1_policy': ('mode1', {'mode1_subgoals': 'policy', 'dagger_every': 0})}


def timed(actor: Actor, plan_ms: list, macro_sizes: list | None = None) -> Actor:
    act = actor.act

    def recorded(*args, **kwargs):
        decision = act(*args, **kwargs)
        plan_ms.append(decision.plan_time_ms)
        if macro_sizes is not None:
            macro_sizes.append(float(actor.subgoal_macros[0, :3].norm()))
        return decision
    actor.act = recorded
    return actor


def summary(episodes: list, plan_ms: list, macro_sizes: list) -> dict:
    return {'first_macro_size_mean': float(np.mean(macro_sizes)),'success': int(sum(r['success'] for r in episodes)), 'episodes': len(episodes),
            'within_5cm': int(sum(r['final_distance_m'] < 0.05 for r in episodes)),
            'final_distance_m_mean': float(np.mean([r['final_distance_m'] for r in episodes])),
            'final_distance_m_p50': float(np.median([r['final_distance_m'] for r in episodes])),
            'plan_ms_p50': float(np.percentile(plan_ms, 50)), 'plan_ms_p95': float(np.percentile(plan_ms, 95)),
            'outcomes': {o: sum(r.get('outcome') == o for r in episodes)
                         for o in sorted({r.get('outcome') for r in episodes})},
            'per_episode': episodes}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--teach-seed', type=int, default=5184)
    ap.add_argument('--teach', type=int, default=30)
    ap.add_argument('--seed', type=int, default=5214)
    ap.add_argument('--episodes', type=int, default=30)
    ap.add_argument('--dagger', action='store_true')
    ap.add_argument('--json', required=True)
    a = ap.parse_args()
    model, config, weights, high, bench = shipped_push()
    teacher_ms, teacher_sizes = [], []
    # mode1_subgoals policy: Mode-2 teaches the sub-goal policy only where Mode-1 is set to use it.
    teacher = timed(Actor(model, config.changed(mode1_subgoals='policy'), weights, bench.kinematics, high_level=high),
                    teacher_ms, teacher_sizes)
    taught = []
    for seed in range(a.teach_seed, a.teach_seed + a.teach):
        r = run_episode(bench, teacher, 'mode2', 'push', seed)
        taught.append(r)
        print(f'teach mode2 seed {seed}: {r["final_distance_m"]:.3f} m {r.get("outcome")}', flush=True)
    report = {'teaching': {**summary(taught, teacher_ms, teacher_sizes), 'seeds': [a.teach_seed, a.teach_seed + a.teach - 1],
                           'control_labels': len(teacher.distiller.examples),
                           'subgoal_labels': len(teacher.subgoal_distiller.examples),
                           'subgoal_imitation_error': teacher.subgoal_distiller.imitation_error(),
                           'control_imitation_error': teacher.distiller.imitation_error()}}
    print(json.dumps({k: v for k, v in report['teaching'].items() if k != 'per_episode'}), flush=True)
    del teacher.act   # the copies record their own times
    actors, times, sizes, results = {}, {}, {}, {}
    for name, (mode, changes) in CONDITIONS.items():
        actor = copy.deepcopy(teacher)
        actor.reconfigure(**changes)
        times[name], sizes[name], results[name] = [], [], []
        actors[name] = timed(actor, times[name], sizes[name])
    if a.dagger:
        dagger = {name: [] for name in CONDITIONS if CONDITIONS[name][0] == 'mode1'}
        for name in dagger:
            actors[name].reconfigure(dagger_every=config.dagger_every)
        for seed in range(a.teach_seed, a.teach_seed + a.teach):
            for name in dagger:
                r = run_episode(bench, actors[name], 'mode1', 'push', seed)
                dagger[name].append(r)
                print(f'dagger {name} seed {seed}: {r["final_distance_m"]:.3f} m {r.get("outcome")}', flush=True)
        for name in dagger:
            actors[name].reconfigure(dagger_every=0)
            report[f'dagger_{name}'] = {**summary(dagger[name], times[name], sizes[name]),
                                        'subgoal_labels': len(actors[name].subgoal_distiller.examples),
                                        'subgoal_imitation_error': actors[name].subgoal_distiller.imitation_error()}
            times[name].clear()
            sizes[name].clear()
    for seed in range(a.seed, a.seed + a.episodes):
        for name, (mode, _) in CONDITIONS.items():
            t0 = time.monotonic()
            r = run_episode(bench, actors[name], mode, 'push', seed)
            results[name].append(r)
            print(f'{name} seed {seed}: {r["start_distance_m"]:.3f} -> {r["final_distance_m"]:.3f} m '
                  f'{"success" if r["success"] else r.get("outcome")} ({time.monotonic() - t0:.0f} s, plan p50 '
                  f'{r["plan_ms_p50"]:.0f} ms)', flush=True)
    bench.close()
    for name in CONDITIONS:
        report[name] = {**summary(results[name], times[name], sizes[name]), 'seeds': [a.seed, a.seed + a.episodes - 1]}
        s = report[name]
        print(f'{name}: success {s["success"]}/{s["episodes"]}, within 5 cm {s["within_5cm"]}, mean final '
              f'{s["final_distance_m_mean"]:.3f} m, plan p50/p95 {s["plan_ms_p50"]:.1f}/{s["plan_ms_p95"]:.1f} ms, '
              f'first macro {s["first_macro_size_mean"]:.2f}, {s["outcomes"]}', flush=True)
    json.dump(report, open(a.json, 'w'), indent=1)


if __name__ == '__main__':
    main()
