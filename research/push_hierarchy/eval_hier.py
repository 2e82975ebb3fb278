"""In-process push episodes (the evaluation's goals, seeds, lengths, success radius): flat Mode-2, two-level
(learned higher level -> sub-goal latent -> Mode-2 Actor), the noise ablation, the oracle. Diagnostics use
privileged state (never on the decision path): the hand's closest approach to the push's approach point (behind
the cube on the cube-goal line, at pushing height), the cube's motion, and where a linear probe (fitted on play,
diagnostics only) puts the hand of the sub-goal latents."""
import argparse, json, time
from dataclasses import replace
import numpy as np
import torch

from jepa_bringup.sim_episodes import SimWorkbench, graph_settings
from jepa_bringup.episodes import DT, SUCCESS_RADIUS, OraclePolicy, episode_steps, final_distance, sim_camera, \
    PUSH_HEIGHT
from jepa_actor.actor import Actor
from jepa_cost.cost import EnergyMetric
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
from hierarchy import EnsemblePredictor, HighConfig, HighPlanner, HighPredictor, HighPredictorZ, NoisePredictor, TwoLevelAgent, episodes_of, macro_of

APPROACH_BACK = 0.037 + 0.03   # the skill's contact + standoff: diagnostics only


def approach_point(goal, cube0):
    d = goal.target[:2] - cube0[:2]
    d = d / np.linalg.norm(d)
    return np.r_[cube0[:2] - d * APPROACH_BACK, PUSH_HEIGHT], d


def fit_probe(play):
    """Ridge latent -> ee xyz (diagnostics only)."""
    X = np.c_[play['z'], np.ones(len(play['z']))]
    W = np.linalg.solve(X.T @ X + 1e-3 * np.eye(X.shape[1]), X.T @ play['ee'])
    return lambda z: np.c_[np.atleast_2d(z), np.ones(len(np.atleast_2d(z)))] @ W


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--conditions', default='two')
    ap.add_argument('--episodes', type=int, default=20)
    ap.add_argument('--seed', type=int, default=5000)
    ap.add_argument('--high', default='data/high.pt')
    ap.add_argument('--play', default='data/play.npz')
    ap.add_argument('--hset', action='append', default=[], help='HighConfig field=value')
    ap.add_argument('--low-weights', default='energy=1,latent=0.3,effort=0.05')
    ap.add_argument('--low-set', action='append', default=[], help='ActorConfig field=value for the low level')
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    bench = SimWorkbench(model, sim_camera())
    config, push_w = graph_settings('push_one_level')
    metric = EnergyMetric.of(model)
    hc = HighConfig()
    for kv in a.hset:
        k, v = kv.split('=')
        setattr(hc, k, type(getattr(hc, k))(v))
    needs_high = any(c in ('two', 'noise') for c in a.conditions.split(','))
    if needs_high:
        members = []
        for path in a.high.split(','):   # several: an ensemble
            blob = torch.load(path, weights_only=False)
            member = (HighPredictorZ if 'z_dim' in blob['init'] else HighPredictor)(**blob['init'])
            member.load_state_dict(blob['state']); member.eval(); members.append(member)
        pred = members[0] if len(members) == 1 else EnsemblePredictor(members)
        hc.K = blob['K']
        play = dict(np.load(a.play))
        eps = episodes_of(play)
        K, H = hc.K, hc.H
        lib, seqs = [], []
        for e in eps:
            n = len(e['a']) - 1
            for t in range(0, n - K + 1, 2):
                lib.append(macro_of(e['a'][t:t + K], K))
            for t in range(0, n - H * K + 1, 3):
                seqs.append(macro_of(e['a'][t:t + H * K].reshape(H, K, 4), K))
        lib, seqs = np.array(lib), np.array(seqs)
        probe = fit_probe(play)
    lw = replace(push_w, **{k: float(v) for k, v in (kv.split('=') for kv in a.low_weights.split(','))})
    low_config = config.changed(**dict(kv.split('=') for kv in a.low_set))
    report = {}
    for cond in a.conditions.split(','):
        results = []
        for i in range(a.episodes):
            seed = a.seed + i
            t0 = time.monotonic()
            goal, goal_latent = bench.start_episode('push', seed)
            cube0 = bench.cube.copy()
            ap_pt, d = approach_point(goal, cube0)
            agent = policy = None
            if cond == 'oracle':
                policy = OraclePolicy(goal, bench.kinematics.max_step)
            elif cond == 'flat':
                agent = Actor(model, config, push_w, bench.kinematics)
            else:
                p = pred if cond == 'two' else NoisePredictor(pred.delta_std * np.sqrt(1.0), seed=seed)
                planner = HighPlanner(p, lib, seqs, metric, replace(hc, seed=seed))
                agent = TwoLevelAgent(Actor(model, low_config, lw, bench.kinematics), planner)
            if agent is not None:
                agent.reset()
            ees, cubes, sub_hand, hl_cost = [], [], [], []
            for _ in range(episode_steps(goal, cube0)):
                ees.append(bench.ee.copy()); cubes.append(bench.cube.copy())
                if policy is not None:
                    bench.command(policy.act(bench.ee, bench.cube))
                else:
                    q = bench.q_arm
                    z = bench.encode(bench.sim.render())
                    if cond == 'flat':
                        dec = agent.act(z, goal_latent, q, 'mode2')
                    else:
                        dec = agent.act(z, goal_latent, q)
                        sub_hand.append(probe(agent.subgoal)[0])
                        hl_cost.append(agent.last_plan[2])
                    bench.command(dec.action, q)
                bench.advance(DT)
            ees.append(bench.ee.copy()); cubes.append(bench.cube.copy())
            ees, cubes = np.array(ees), np.array(cubes)
            dist = final_distance(goal, bench.ee, bench.cube)
            r = {'seed': seed, 'success': bool(dist < SUCCESS_RADIUS['push']), 'final_distance_m': dist,
                 'start_distance_m': float(np.linalg.norm(cube0[:2] - goal.target[:2])),
                 'approach_min_m': float(np.linalg.norm(ees - ap_pt, axis=1).min()),
                 'approach_start_m': float(np.linalg.norm(ees[0] - ap_pt)),
                 # hand behind the cube: along-line coordinate of the hand relative to the cube (negative = behind)
                 'cube_moved_m': float(np.linalg.norm(cubes[-1, :2] - cube0[:2])),
                 'cube_progress_m': float(np.dot(cubes[-1, :2] - cube0[:2], d))}
            if sub_hand:
                sh = np.array(sub_hand)
                r['subgoal_hand_approach_min_m'] = float(np.linalg.norm(sh - ap_pt, axis=1).min())
                r['hl_cost_first_last'] = [float(hl_cost[0]), float(hl_cost[-1])]
            results.append(r)
            print(f'{cond} seed {seed}: {r["start_distance_m"]:.3f} -> {dist:.3f} m '
                  f'{"success" if r["success"] else "fail"}; approach pt {r["approach_start_m"]:.3f} -> min '
                  f'{r["approach_min_m"]:.3f} m; cube moved {r["cube_moved_m"]:.3f} (progress '
                  f'{r["cube_progress_m"]:+.3f})'
                  + (f'; subgoal-hand min to approach {r["subgoal_hand_approach_min_m"]:.3f}' if sub_hand else '')
                  + f' ({time.monotonic() - t0:.0f} s)', flush=True)
        s = {'success_rate': float(np.mean([r['success'] for r in results])),
             'final_distance_mean': float(np.mean([r['final_distance_m'] for r in results])),
             'approach_min_median': float(np.median([r['approach_min_m'] for r in results])),
             'approach_min_lt5cm': int(np.sum([r['approach_min_m'] < 0.05 for r in results])),
             'cube_progress_mean': float(np.mean([r['cube_progress_m'] for r in results])),
             'per_episode': results}
        report[cond] = s
        print(f'== {cond}: success {s["success_rate"]:.0%} ({sum(r["success"] for r in results)}/{len(results)}), '
              f'mean final {s["final_distance_mean"]:.3f} m, approach-min median {s["approach_min_median"]:.3f} m, '
              f'<5cm {s["approach_min_lt5cm"]}, cube progress mean {s["cube_progress_mean"]:+.3f} m', flush=True)
    if a.json:
        json.dump(report, open(a.json, 'w'), indent=1)


if __name__ == '__main__':
    main()
