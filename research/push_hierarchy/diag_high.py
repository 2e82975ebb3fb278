"""Why the higher level does / does not push: at the start state of each evaluation seed,
(1) the oracle's first H*K actions (really executed) as macros: the high predictor's terminal latent vs the real
    one, predicted vs real high-level cost;
(2) the same for the oracle aimed at the goal rotated by 45..315 deg: rank of the true direction by predicted
    (and by real) terminal cost (chance: 1/8);
(3) the real cost of the "trap" state (hand at the goal-image pose, cube unmoved) vs the oracle's real end state;
(4) the planner's best plan: its cost vs the oracle plan's predicted cost, and whether its hand path (sum of the
    macros' displacements, kinematic) passes the approach point behind the cube.
Privileged state only for diagnostics."""
import argparse
import numpy as np
import torch
from jepa_bringup.sim_episodes import SimWorkbench
from jepa_bringup.episodes import DT, Goal, OraclePolicy, sim_camera
from jepa_cost.cost import EnergyMetric
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
from hierarchy import HighConfig, HighPlanner, HighPredictor, HighPredictorZ, episodes_of, macro_of, MAX_STEP
from eval_hier import approach_point


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--high', default='data/high.pt')
    ap.add_argument('--play', default='data/play.npz')
    ap.add_argument('--seeds', type=int, default=10)
    ap.add_argument('--seed', type=int, default=5000)
    ap.add_argument('--hset', action='append', default=[])
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    bench = SimWorkbench(model, sim_camera())
    metric = EnergyMetric.of(model)
    blob = torch.load(a.high, weights_only=False)
    pred = (HighPredictorZ if 'z_dim' in blob['init'] else HighPredictor)(**blob['init']); pred.load_state_dict(blob['state']); pred.eval()
    hc = HighConfig(K=blob['K'])
    for kv in a.hset:
        k, v = kv.split('='); setattr(hc, k, type(getattr(hc, k))(v))
    K, H = hc.K, hc.H
    play = dict(np.load(a.play)); eps = episodes_of(play)
    lib = np.array([macro_of(e['a'][t:t + K], K) for e in eps for t in range(0, len(e['a']) - K, 2)])
    seqs = np.array([macro_of(e['a'][t:t + H * K].reshape(H, K, 4), K) for e in eps
                     for t in range(0, len(e['a']) - 1 - H * K + 1, 3)])
    planner = HighPlanner(pred, lib, seqs, metric, hc)
    X = np.c_[play['z'], np.ones(len(play['z']))]
    Wc = np.linalg.solve(X.T @ X + 1e-3 * np.eye(X.shape[1]), X.T @ play['cube'][:, :2])  # diagnostics-only probe
    cube_probe = lambda z: np.r_[np.asarray(z), 1.0] @ Wc  # noqa
    rows = []
    for seed in range(a.seed, a.seed + a.seeds):
        goal, g = bench.start_episode('push', seed)
        g = torch.as_tensor(g)
        cube0 = bench.cube.copy(); ee0 = bench.ee.copy()
        ap_pt, d = approach_point(goal, cube0)
        z0 = torch.as_tensor(bench.encode(bench.sim.render()))
        res = {}
        for k, rot in enumerate(np.deg2rad(np.arange(0, 360, 45))):
            goal, _ = bench.start_episode('push', seed)
            off = goal.target[:2] - cube0[:2]
            c, s = np.cos(rot), np.sin(rot)
            tgt = cube0[:2] + np.array([c * off[0] - s * off[1], s * off[0] + c * off[1]])
            g2 = Goal('push', np.r_[tgt, goal.target[2]], goal.arm_q, goal.cube_position)
            pol = OraclePolicy(g2, bench.kinematics.max_step)
            acts, zs = [], []
            for t in range(H * K):
                if t % K == 0:
                    zs.append(bench.encode(bench.sim.render()))
                act = pol.act(bench.ee, bench.cube); acts.append(act)
                bench.command(act); bench.advance(DT)
            zs.append(bench.encode(bench.sim.render()))
            m = torch.as_tensor(macro_of(np.array(acts).reshape(H, K, 4), K))[None]
            with torch.no_grad():
                pcs_, plat = planner.evaluate(z0, m, g)
                pc = float(pcs_[0])
                rc = float(planner.cost(torch.as_tensor(np.array(zs[1:]))[None], g)[0])
                perr = float(((plat[0, -1] - torch.as_tensor(zs[-1])) ** 2).mean() / pred.latent_scale)
                copy_err = float(((z0 - torch.as_tensor(zs[-1])) ** 2).mean() / pred.latent_scale)
            res[k] = (pc, rc, perr, copy_err)
            if k == 0:
                cube_pred = float(np.dot(cube_probe(plat[0, -1].numpy()) - cube_probe(z0.numpy()), d))
                cube_realz = float(np.dot(cube_probe(zs[-1]) - cube_probe(z0.numpy()), d))
                cube_true = float(np.dot(bench.cube[:2] - cube0[:2], d))
        pcs = np.array([res[k][0] for k in range(8)]); rcs = np.array([res[k][1] for k in range(8)])
        rank_pred = int((pcs < pcs[0]).sum()) + 1; rank_real = int((rcs < rcs[0]).sum()) + 1
        # the trap state: hand at the goal-image pose, cube unmoved; and the oracle's real end state (its H*K steps)
        goal, _ = bench.start_episode('push', seed)
        trap_img, _ = bench.sim.render_state(goal.arm_q, cube0)
        trap = torch.as_tensor(bench.encode(trap_img))
        with torch.no_grad():
            trap_cost = float(planner.cost(trap[None, None].expand(1, H, -1), g)[0])
            # planner from the start state
            planner.reset()
            best, lat, bc = planner.plan(z0, g)
        # execute the planner's best plan open loop (each macro as K equal steps) for its real cost
        goal, _ = bench.start_episode('push', seed)
        zs = []
        for h in range(H):
            step = np.r_[best[h, :3].numpy() * MAX_STEP, best[h, 3].item()]
            for _ in range(K):
                bench.command(step); bench.advance(DT)
            zs.append(bench.encode(bench.sim.render()))
        with torch.no_grad():
            plan_real = float(planner.cost(torch.as_tensor(np.array(zs))[None], g)[0])
        path = ee0 + np.cumsum(best[:, :3].numpy() * K * MAX_STEP, 0)
        path_min = float(np.linalg.norm(path - ap_pt, axis=1).min())
        along = float(np.dot(path[-1, :2] - cube0[:2], d))
        row = dict(seed=seed, oracle_pred_cost=res[0][0], oracle_real_cost=res[0][1], pred_err=res[0][2],
                   copy_err=res[0][3], rank_pred=rank_pred, rank_real=rank_real, cube_probe_pred=cube_pred, cube_probe_real=cube_realz, cube_true=cube_true, trap_real_cost=trap_cost,
                   plan_cost=bc, plan_real_cost=plan_real, plan_path_min_to_approach=path_min, plan_end_along=along,
                   plan_end_to_goalpose=float(np.linalg.norm(path[-1] - bench.kinematics.fk(goal.arm_q))))
        rows.append(row)
        print(' '.join(f'{k}={v:.3f}' if isinstance(v, float) else f'{k}={v}' for k, v in row.items()), flush=True)
    keys = [k for k in rows[0] if k != 'seed']
    print('MEAN ' + ' '.join(f'{k}={np.mean([r[k] for r in rows]):.3f}' for k in keys))
    print(f'true direction ranked first by predicted cost {sum(r["rank_pred"] == 1 for r in rows)}/{len(rows)}, '
          f'by real cost {sum(r["rank_real"] == 1 for r in rows)}/{len(rows)}; oracle plan predicted cheaper than '
          f'planner best {sum(r["oracle_pred_cost"] < r["plan_cost"] for r in rows)}/{len(rows)}; planner path within '
          f'5 cm of approach pt {sum(r["plan_path_min_to_approach"] < 0.05 for r in rows)}/{len(rows)}; '
          f'oracle real end cheaper than trap {sum(r["oracle_real_cost"] < r["trap_real_cost"] for r in rows)}/{len(rows)}')


if __name__ == '__main__':
    main()
