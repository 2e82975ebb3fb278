"""The agent's own push episodes as training data (data aggregation, as model-based RL corrects a model where its
planner exploits it): the two-level agent (graph push configuration, `--high-level FILE`) pushes towards goals of
seeds no evaluation uses, and every frame's latent and the action taken after it are saved in gen_play.py's npz
layout (z, a, ee, cube, ep; hand and cube positions for diagnostics only), so train_packaged.py takes it beside play.

    collect_onpolicy.py --high-level data/high_pkg_230.pt --seed 9000 --episodes 40 --out data/onpolicy_230.npz
"""
import argparse
import time

import numpy as np
import torch

from jepa_actor.actor import Actor
from jepa_bringup.agent_settings import graph_settings
from jepa_bringup.episodes import sim_camera
from jepa_bringup.sim_episodes import SimWorkbench, run_episode
from jepa_world_model.high_level import HighLevelModel
from jepa_world_model.model import default_checkpoint_path, encoder_id, load_checkpoint


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--high-level', required=True)
    ap.add_argument('--seed', type=int, default=9000)
    ap.add_argument('--episodes', type=int, default=40)
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    if a.seed < 6000:
        ap.error('--seed: use seeds no evaluation uses (>= 6000)')
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    config, weights = graph_settings('push')
    high = HighLevelModel.load(a.high_level, encoder_id(model), model.latent_dim)
    bench = SimWorkbench(model, sim_camera())
    actor = Actor(model, config, weights, bench.kinematics, high_level=high)
    Z, A, EE, CUBE, EP = [], [], [], [], []
    t0 = time.monotonic()
    for i in range(a.episodes):
        transitions, positions = [], []
        encode = bench.encode

        def recording(image):   # the hand and cube at each encoded frame (diagnostics only)
            positions.append((bench.ee.copy(), bench.cube.copy()))
            return encode(image)

        bench.encode = recording
        result = run_episode(bench, actor, 'mode2', 'push', a.seed + i, transitions=transitions)
        bench.encode = encode
        latents = [t[0] for t in transitions] + [transitions[-1][2]]
        actions = [t[1] for t in transitions] + [np.zeros(4, np.float32)]
        # positions: one per encode: the goal image first, then each step's frame and the final frame
        positions = positions[1:]
        assert len(positions) == len(latents), (len(positions), len(latents))
        Z += latents
        A += actions
        EE += [p[0] for p in positions]
        CUBE += [p[1] for p in positions]
        EP += [i] * len(latents)
        print(f'episode {i + 1}/{a.episodes} seed {a.seed + i}: {result["start_distance_m"]:.3f} -> '
              f'{result["final_distance_m"]:.3f} m, {len(latents)} frames, {time.monotonic() - t0:.0f} s', flush=True)
    bench.close()
    np.savez_compressed(a.out, z=np.array(Z, np.float32), a=np.array(A, np.float32), ee=np.array(EE, np.float32),
                        cube=np.array(CUBE, np.float32), ep=np.array(EP), steps_per_ep=0)
    print(f'saved {a.out}: {len(EP)} frames', flush=True)


if __name__ == '__main__':
    main()
