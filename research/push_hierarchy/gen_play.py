"""Generate play in-process: PandaSim + trajectory follower + BabblingPolicy (collect.py's), frames encoded with
the frozen shipped encoder. Saves per-episode arrays: latents z_t (of the frame at t), actions a_t (taken after
frame t), ee_t and cube_t (privileged; diagnostics/probes only, never on the decision path)."""
import argparse, time
import numpy as np
import torch
from jepa_bringup.sim_episodes import SimWorkbench
from jepa_bringup.episodes import DT, sim_camera
from jepa_world_model.model import default_checkpoint_path, load_checkpoint
# collect.py imports rclpy at module level; copy the ROS-free BabblingPolicy source instead if that fails
try:
    from jepa_bringup.collect import BabblingPolicy, BabblingConfig
except Exception:  # noqa
    from babbling import BabblingPolicy, BabblingConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--minutes', type=float, default=30)
    ap.add_argument('--seed', type=int, default=100)
    ap.add_argument('--episode-seconds', type=float, default=25.0)
    ap.add_argument('--retreat-fraction', type=float, default=0.4)
    ap.add_argument('--push-fraction', type=float, default=0.7)
    ap.add_argument('--out', default='data/play.npz')
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    bench = SimWorkbench(model, sim_camera())
    steps_per_ep = int(round(a.episode_seconds / DT))
    n_eps = int(np.ceil(a.minutes * 60 / a.episode_seconds))
    Z, A, EE, CUBE, EP = [], [], [], [], []
    t0 = time.monotonic()
    for ep in range(n_eps):
        rs, ps = np.random.SeedSequence([a.seed, ep]).generate_state(2)
        bench.reset(int(rs))
        pol = BabblingPolicy(BabblingConfig(retreat_fraction=a.retreat_fraction, push_fraction=a.push_fraction),
                             seed=int(ps))
        imgs = []
        for t in range(steps_per_ep + 1):
            imgs.append(bench.sim.render())
            ee, cube = bench.ee.copy(), bench.cube.copy()
            EE.append(ee); CUBE.append(cube); EP.append(ep)
            act = pol.act(ee, cube)
            A.append(act)
            if t < steps_per_ep:
                bench.command(act)
                bench.advance(DT)
        with torch.inference_mode():
            z = torch.cat([model.encode(np.stack(imgs[i:i + 64])) for i in range(0, len(imgs), 64)]).numpy()
        Z.append(z)
        print(f'episode {ep + 1}/{n_eps} done, {time.monotonic() - t0:.0f} s', flush=True)
    np.savez_compressed(a.out, z=np.concatenate(Z).astype(np.float32), a=np.array(A, np.float32),
                        ee=np.array(EE, np.float32), cube=np.array(CUBE, np.float32), ep=np.array(EP),
                        steps_per_ep=steps_per_ep)
    print(f'saved {a.out}: {len(EP)} frames, {time.monotonic() - t0:.0f} s', flush=True)


if __name__ == '__main__':
    main()
