"""Is the effector map's misreading under a perturbation one linear distortion of its readings? (diagnostic,
privileged state) A 3x3 correction of the hand steps it reads, least squares on the oracle's reach paths of
some seeds, tested on the paths of others: hand-step error and start distance read, before and after.
A correction that generalises would be what a refit from measured hand steps could learn; one that fixes
some seeds and not others says the distortion depends on where the hand is.

    nice -n 19 .venv/bin/python research/adaptation/recalibration_check.py camera_moved
"""
import sys

import numpy as np
import torch

from jepa_bringup.episodes import sim_camera
from jepa_bringup.sim_episodes import SimWorkbench
from jepa_sim.perturbation import named_perturbation
from jepa_world_model.model import default_checkpoint_path, load_checkpoint

from diag import readings

FIT, TEST = [7020, 7021, 7022, 7023], [7024, 7025, 7026, 7027]


def main() -> int:
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    bench = SimWorkbench(model, sim_camera())
    try:
        for name in ('', *sys.argv[1:]):
            bench.perturb(named_perturbation([name] if name else [], {}))
            fit = readings(bench, model, FIT)
            correction = np.linalg.lstsq(fit['steps_read_m'], fit['steps_m'], rcond=None)[0].T
            print(f'{name or "nominal"}: correction fitted on {FIT}: {np.round(correction, 2).tolist()}', flush=True)
            for seed in TEST:
                r = readings(bench, model, [seed])
                read, true = r['start_distance_read_m'][0], r['start_distance_true_m'][0]
                corrected = float(np.linalg.norm(r['steps_read_m'] @ correction.T - r['steps_m'], axis=1).mean())
                # The start reading is the map applied to (goal latent - start latent): its norm alone cannot be
                # corrected; the ratio of the corrected to the uncorrected sum of the path's read steps can.
                path = r['steps_read_m'].sum(0)
                gain = np.linalg.norm(correction @ path) / np.linalg.norm(path)
                print(f'  seed {seed}: hand-step error {100 * r["hand_step_error_m"].mean():.2f} -> '
                      f'{100 * corrected:.2f} cm (steps {100 * np.linalg.norm(r["steps_m"], axis=1).mean():.2f} cm); '
                      f'path read end to end {100 * np.linalg.norm(path):.1f} -> {100 * gain * np.linalg.norm(path):.1f} '
                      f'cm, start distance read {100 * read:.1f} cm, true {100 * true:.1f} cm', flush=True)
    finally:
        bench.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
