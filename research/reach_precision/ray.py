"""Is the energy flat along the camera ray at the goal? Hand moved +-d along the ray vs across it, encoded, costed."""
import numpy as np, torch
from jepa_bringup.sim_episodes import SimWorkbench
from jepa_bringup.episodes import sim_camera
from jepa_cost.cost import EnergyMetric
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
torch.set_num_threads(1)
model = load_checkpoint(default_checkpoint_path())
cam = sim_camera()
bench = SimWorkbench(model, cam)
metric = EnergyMetric.of(model)
ray = np.array(cam.target) - np.array(cam.eye); ray /= np.linalg.norm(ray)
across = np.cross(ray, [0, 0, 1]); across /= np.linalg.norm(across)
up = np.cross(across, ray)
for seed in (3000, 3006, 3013):
    goal, gl = bench.start_episode('reach', seed)
    q0 = bench.q_arm
    k = bench.kinematics
    qg = k.ik(q0, goal.target)
    cube = bench.cube
    def energy_at(xyz):
        q = k.ik(qg, xyz)
        img, _ = bench.sim.render_state(q_arm=q)
        z = torch.as_tensor(bench.encode(img))
        d = z - torch.as_tensor(gl)
        return float(metric.controllable(d, k.max_step)), float(metric.isotropic(d)), np.linalg.norm(k.forward(q)[:3] - goal.target) if hasattr(k, 'forward') else 0
    print(f'seed {seed} goal {np.round(goal.target,3)}')
    for name, v in (('ray', ray), ('across', across), ('up', up)):
        row = []
        for s in (-0.04, -0.02, 0.0, 0.02, 0.04):
            c, iso, _ = energy_at(goal.target + s * v)
            row.append(f'{s:+.2f}: E {c:6.2f} iso {iso:.3f}')
        print(f'  {name:6s}', ' | '.join(row))
