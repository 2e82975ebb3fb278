"""Reach with goal postures the controller produces: the goal's joint positions are where stepping the ee_delta
interface in a straight line from the start (the oracle's path, kinematics.action_to_joint_target) leaves the
arm, instead of a 4-iteration IK solve seeded at the start posture. Same seeds, same actor settings."""
import sys, json
import numpy as np, torch
from dataclasses import replace
from jepa_bringup.sim_episodes import SimWorkbench, graph_settings
from jepa_bringup.episodes import DT, SUCCESS_RADIUS, episode_steps, final_distance, make_goal, sim_camera
from jepa_actor.actor import Actor
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
torch.set_num_threads(1)
model = load_checkpoint(default_checkpoint_path())
bench = SimWorkbench(model, sim_camera())
config, w = graph_settings('reach')
actor = Actor(model, config, w, bench.kinematics)
k = bench.kinematics
mode = sys.argv[1]            # 'ik' (as jepa eval) or 'path'
seeds = range(int(sys.argv[2]), int(sys.argv[3]))
out = []
for seed in seeds:
    bench.reset(seed)
    goal = make_goal('reach', seed, k, bench.q_arm, bench.cube)
    if mode == 'path':
        q = bench.q_arm.copy()
        for _ in range(200):
            step = goal.target - k.fk(q)
            if np.linalg.norm(step) < 1e-4:
                break
            q, _ = k.action_to_joint_target(q, np.r_[np.clip(step, -k.max_step, k.max_step), 1.0])
        goal = replace(goal, arm_q=q, target=k.fk(q))
    image, _ = bench.sim.render_state(goal.arm_q, goal.cube_position)
    gl = bench.encode(image)
    actor.reset()
    for _ in range(episode_steps(goal, bench.cube)):
        qa = bench.q_arm
        dec = actor.act(bench.encode(bench.sim.render()), gl, qa, 'mode2')
        bench.advance(0.05); bench.command(dec.action, qa); bench.advance(DT - 0.05)
    d = final_distance(goal, bench.ee, bench.cube)
    out.append({'seed': seed, 'final_distance_m': d, 'success': bool(d < SUCCESS_RADIUS['reach'])})
    print(f'{mode} seed {seed}: final {d:.3f} m {"success" if d < SUCCESS_RADIUS["reach"] else "fail"}', flush=True)
print(f'== {mode}: {sum(r["success"] for r in out)}/{len(out)}, mean {np.mean([r["final_distance_m"] for r in out]):.3f} m')
json.dump(out, open(f'/work/research_reach/goal_{mode}_{seeds[0]}.json', 'w'), indent=1)
