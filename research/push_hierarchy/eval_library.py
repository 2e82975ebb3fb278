"""The shipped two-level push against variants of its higher level's search, in one process, seed by seed: for each
seed every condition runs its episode in turn (one simulator; each condition keeps its own actor over the seeds, as
`python -m jepa_bringup.sim_episodes` keeps one, so Mode-1's distilled proposals carry over alike). Conditions:
  shipped        the graph's push configuration (levels 2, the shipped higher level, free CEM search)
  library        library_search.LibraryActor: the higher level picks among play's macro sequences only (1024 draws
                 per replan + the plan it kept)
  library2048    the same with 2048 draws
  NAME@FILE      condition NAME with the higher level in FILE instead of the shipped one
  NAME@F1+F2+... condition NAME with ensemble.HighLevelCommittee of those higher levels (mean prediction)
  optimistic@F   high_z.OptimisticActor with the high_z.HighLevelZ in F (min over 8 prior draws of z)
  zero@F         the shipped actor with the HighLevelZ in F at z = 0
  expected@F     high_z.OptimisticActor scoring the mean cost over the 8 draws instead of the cheapest
  NAME:K=V/K=V   condition NAME with these ActorConfig settings changed, e.g. shipped:subgoal_samples=1024/subgoal_iterations=6
Writes one JSON with, per condition, sim_episodes' report and each episode's cube-to-goal distance per step
(privileged, for classify_trace-style outcomes; diagnostics only).

    eval_library.py --seed 5000 --episodes 20 --conditions shipped,library --json results/library_5000.json
"""
import argparse
import json
import time

import numpy as np

from jepa_actor.actor import Actor
from jepa_bringup.sim_episodes import run_episode
from jepa_world_model.high_level import HighLevelModel
from jepa_world_model.model import encoder_id
from ensemble import HighLevelCommittee
from high_z import HighLevelZ, OptimisticActor
from library_search import LibraryActor
from shipped import shipped_push


def make_actor(name, model, config, weights, kinematics, high):
    name, _, settings = name.partition(':')
    if settings:
        config = config.changed(**dict(item.split('=') for item in settings.split('/')))
    if '@' in name:   # condition@FILE: the condition with another higher level
        name, path = name.split('@')
        if name in ('optimistic', 'expected', 'zero'):
            high = HighLevelZ.load(path, encoder_id(model), model.latent_dim)
            actor = (Actor if name == 'zero' else OptimisticActor)(model, config, weights, kinematics,
                                                                  high_level=high)
            actor.reduce = 'mean' if name == 'expected' else 'min'
            return actor
        if '+' in path:
            high = HighLevelCommittee.load(path.split('+'), encoder_id(model), model.latent_dim)
        else:
            high = HighLevelModel.load(path, encoder_id(model), model.latent_dim)
    if name == 'shipped':
        return Actor(model, config, weights, kinematics, high_level=high)
    if name.startswith('library'):
        actor = LibraryActor(model, config, weights, kinematics, high_level=high)
        actor.library_samples = int(name[len('library'):] or 1024)
        return actor
    raise ValueError(f'unknown condition {name!r}')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seed', type=int, default=5000)
    ap.add_argument('--episodes', type=int, default=20)
    ap.add_argument('--conditions', default='shipped,library')
    ap.add_argument('--json', required=True)
    a = ap.parse_args()
    model, config, weights, high, bench = shipped_push()
    names = a.conditions.split(',')
    actors = {n: make_actor(n, model, config, weights, bench.kinematics, high) for n in names}
    results = {n: [] for n in names}
    trace = []
    advance = bench.advance

    def traced(seconds):
        advance(seconds)
        if seconds > 0:
            trace.append(np.asarray(bench.cube[:2], float).copy())

    start_episode, goals = bench.start_episode, []

    def started(task, seed):
        goal, latent = start_episode(task, seed)
        goals.append(goal)
        trace.clear()   # the reset's settling steps are not the episode's
        return goal, latent

    bench.advance, bench.start_episode = traced, started
    for seed in range(a.seed, a.seed + a.episodes):
        for n in names:
            t0 = time.monotonic()
            r = run_episode(bench, actors[n], 'mode2', 'push', seed)
            d = np.linalg.norm(np.array(trace) - goals[-1].target[:2], axis=1)
            tail = min(20, len(d) - 1)
            r.update({'trace_start': round(float(d[0]), 4), 'trace_min': round(float(d.min()), 4),
                      'trace_end': round(float(d[-1]), 4), 'last_2s_change': round(float(d[-1] - d[-1 - tail]), 4),
                      'seconds': round(time.monotonic() - t0, 1)})
            results[n].append(r)
            print(f'{n} seed {seed}: {r["start_distance_m"]:.3f} -> {r["final_distance_m"]:.3f} m '
                  f'{"success" if r["success"] else "fail"} ({r["seconds"]:.0f} s, plan p50 {r["plan_ms_p50"]:.0f} ms)',
                  flush=True)
    bench.close()
    report = {}
    for n in names:
        per = results[n]
        report[n] = {'success_rate': float(np.mean([r['success'] for r in per])),
                     'within_5cm': int(sum(r['final_distance_m'] < 0.05 for r in per)),
                     'final_distance_m': float(np.mean([r['final_distance_m'] for r in per])),
                     'per_episode': per}
        print(f'{n}: success {sum(r["success"] for r in per)}/{len(per)}, within 5 cm {report[n]["within_5cm"]}, '
              f'mean final {report[n]["final_distance_m"]:.3f} m', flush=True)
    json.dump(report, open(a.json, 'w'), indent=1)


if __name__ == '__main__':
    main()
