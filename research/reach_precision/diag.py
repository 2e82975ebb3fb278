"""Reach misses: distance to goal over the episode, and what the energy reads at the end (effector map)."""
import sys
import numpy as np, torch
from jepa_bringup.sim_episodes import SimWorkbench, graph_settings
from jepa_bringup.episodes import DT, episode_steps, final_distance, sim_camera
from jepa_actor.actor import Actor
from jepa_cost.cost import EnergyMetric
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
torch.set_num_threads(1)
model = load_checkpoint(default_checkpoint_path())
bench = SimWorkbench(model, sim_camera())
config, w = graph_settings('reach')
metric = EnergyMetric.of(model)
actor = Actor(model, config, w, bench.kinematics)
for seed in map(int, sys.argv[1:]):
    goal, gl = bench.start_episode('reach', seed)
    actor.reset()
    n = episode_steps(goal, bench.cube)
    ds = []
    for i in range(n):
        q = bench.q_arm
        z = bench.encode(bench.sim.render())
        dec = actor.act(z, gl, q, 'mode2')
        ds.append(final_distance(goal, bench.ee, bench.cube))
        bench.advance(0.05); bench.command(dec.action, q); bench.advance(DT - 0.05)
    z = torch.as_tensor(bench.encode(bench.sim.render()))
    d = torch.as_tensor(gl) - z
    true = goal.target - bench.ee
    fingers = bench.sim.joint_states().position[-2:] if hasattr(bench.sim.joint_states(), 'position') else None
    print(f'   final joints - goal joints (rad): {np.round(bench.q_arm - goal.arm_q, 2)}; fingers {fingers}')
    print(f'seed {seed}: steps {n}; distance every 10 steps', ' '.join(f'{x:.3f}' for x in ds[::10]), f'final {final_distance(goal, bench.ee, bench.cube):.3f}')
    em = metric.effector_map
    if em is not None:
        pred = (d @ em.T).numpy()
        print(f'   true remaining displacement {np.round(true, 3)}; effector map reads {np.round(pred, 3)}')
