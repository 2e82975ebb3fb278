"""What a perturbation does to the world model on the oracle's reach paths (diagnostics, privileged state):
one-step normalized prediction error (what the predictor-only adjustment can fix), the inverse-dynamics head's
hand-step error (the effector map the cost measures distances with), and the hand-to-goal distance the effector
map reads at the start against the true one; and the share of steps the configurator's SurpriseMonitor would call
surprising (error above its threshold times the checkpoint's held-out error).
`readings` is also what adapt_in_process.py measures an adjusted model with.

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


def readings(bench: SimWorkbench, model, seeds: list[int]) -> dict:
    """`model`'s readings on the oracle's reach paths of `seeds` in the bench's (perturbed) world: one-step
    prediction errors, the hand steps the effector map reads and the simulator's (m, (steps, 3)), their errors (m),
    start distances the effector map reads and the true ones (m). The bench encodes with `model` meanwhile."""
    in_service, bench.model = bench.model, model
    effector_map = EnergyMetric.of(model).effector_map.numpy()
    pred, steps_read, steps, read, true = [], [], [], [], []
    try:
        for seed in seeds:
            goal, goal_latent = bench.start_episode('reach', seed)
            policy = OraclePolicy(goal, bench.kinematics.max_step)
            z = bench.encode(bench.sim.render())
            read.append(float(np.linalg.norm(effector_map @ (goal_latent - z))))
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
                steps_read.append(effector_map @ (z_next - z))
                steps.append(bench.ee - ee)
                z = z_next
    finally:
        bench.model = in_service
    steps_read, steps = np.array(steps_read), np.array(steps)
    return {'prediction_error': pred, 'steps_read_m': steps_read, 'steps_m': steps,
            'hand_step_error_m': np.linalg.norm(steps_read - steps, axis=1), 'start_distance_read_m': read,
            'start_distance_true_m': true}


def main() -> int:
    seeds = [int(s) for s in sys.argv[1:]] or [7020, 7021, 7022]
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    surprising = SurpriseMonitor().threshold * expected_surprise(str(default_checkpoint_path()))[0]
    bench = SimWorkbench(model, sim_camera())
    try:
        for name in ('', 'camera_moved', 'recoloured_cube'):
            bench.perturb(named_perturbation([name] if name else [], {}))
            r = readings(bench, model, seeds)
            pred = np.asarray(r['prediction_error'])
            print(f'{name or "nominal"}: one-step prediction error {np.mean(pred):.5f} (max {np.max(pred):.4f}, '
                  f'{np.mean(pred > surprising):.1%} above {surprising:.4f}), effector-map hand-step error '
                  f'{100 * np.mean(r["hand_step_error_m"]):.2f} cm (steps up to 3 cm), start distance read '
                  f'{np.round(r["start_distance_read_m"], 3)} m vs true {np.round(r["start_distance_true_m"], 3)} m',
                  flush=True)
    finally:
        bench.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
