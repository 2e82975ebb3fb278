"""Diagnostics: how long the oracle takes to reach the approach point and to finish the push (seeds 5000-5019)."""
import numpy as np, torch
from jepa_bringup.sim_episodes import SimWorkbench
from jepa_bringup.episodes import DT, OraclePolicy, episode_steps, final_distance, sim_camera
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
from eval_hier import approach_point
torch.set_num_threads(1)
model = load_checkpoint(default_checkpoint_path())
bench = SimWorkbench(model, sim_camera())
for seed in range(5000, 5020):
    goal, _ = bench.start_episode('push', seed)
    cube0 = bench.cube.copy(); ap, d = approach_point(goal, cube0)
    pol = OraclePolicy(goal, bench.kinematics.max_step)
    t_ap = t_move = t_done = None
    for t in range(episode_steps(goal, cube0)):
        if t_ap is None and np.linalg.norm(bench.ee - ap) < 0.02: t_ap = t
        if t_move is None and np.linalg.norm(bench.cube[:2] - cube0[:2]) > 0.005: t_move = t
        if t_done is None and final_distance(goal, bench.ee, bench.cube) < 0.025: t_done = t
        bench.command(pol.act(bench.ee, bench.cube)); bench.advance(DT)
    print(seed, 'steps', episode_steps(goal, cube0), 'approach(2cm)', t_ap, 'cube moves', t_move, 'within 2.5cm', t_done,
          'start ee->approach %.3f' % np.linalg.norm(bench.ee*0 + 0), flush=True)
