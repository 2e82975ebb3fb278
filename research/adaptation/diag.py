"""What a perturbation does to the world model on the oracle's reach paths (diagnostics, privileged state):
one-step normalized prediction error (what the predictor-only adjustment can fix), the inverse-dynamics head's
hand-step error (the effector map the cost measures distances with), and the hand-to-goal distance the effector
map reads at the start against the true one; and the share of steps the configurator's SurpriseMonitor would call
surprising (error above its threshold times the checkpoint's held-out error).

    nice -n 19 .venv/bin/python research/adaptation/diag.py 7020 7021 7022
"""
import sys

import numpy as np
import torch

from jepa_bringup.episodes import DT, OraclePolicy, episode_steps, sim_camera
from jepa_bringup.sim_episodes import SimWorkbench
from jepa_configurator.configurator import SurpriseMonitor, expected_surprise
from jepa_cost.cost import EnergyMetric
from jepa_sim.perturbation import named_perturbation
from jepa_world_model.model import default_checkpoint_path, load_checkpoint


def main() -> int:
    seeds = [int(s) for s in sys.argv[1:]] or [7020, 7021, 7022]
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    surprising = SurpriseMonitor().threshold * expected_surprise(str(default_checkpoint_path()))[0]
    effector_map = EnergyMetric.of(model).effector_map
    bench = SimWorkbench(model, sim_camera())
    try:
        for name in ('', 'camera_moved', 'recoloured_cube'):
            bench.perturb(named_perturbation([name] if name else [], {}))
            pred, inv, read, true = [], [], [], []
            for seed in seeds:
                goal, goal_latent = bench.start_episode('reach', seed)
                policy = OraclePolicy(goal, bench.kinematics.max_step)
                z = bench.encode(bench.sim.render())
                read.append(float(np.linalg.norm(effector_map.numpy() @ (goal_latent - z))))
                true.append(float(np.linalg.norm(goal.target - bench.ee)))
                for _ in range(episode_steps(goal, bench.cube)):
                    ee = bench.ee
                    action = policy.act(ee, bench.cube)
                    bench.command(action)
                    bench.advance(DT)
                    z_next = bench.encode(bench.sim.render())
                    with torch.no_grad():
                        zt, znt = torch.as_tensor(z)[None], torch.as_tensor(z_next)[None]
                        pred.append(float(model.normalized_error(model.predict(zt, torch.as_tensor(action,
                                                                 dtype=torch.float32)[None]), znt)))
                        inv.append(float(np.linalg.norm(effector_map.numpy() @ (z_next - z) - (bench.ee - ee))))
                    z = z_next
            print(f'{name or "nominal"}: one-step prediction error {np.mean(pred):.5f} (max {np.max(pred):.4f}, '
                  f'{np.mean(np.asarray(pred) > surprising):.1%} above {surprising:.4f}), effector-map hand-step error '
                  f'{100 * np.mean(inv):.2f} cm (steps up to 3 cm), start distance read {np.round(read, 3)} m vs true '
                  f'{np.round(true, 3)} m', flush=True)
    finally:
        bench.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
