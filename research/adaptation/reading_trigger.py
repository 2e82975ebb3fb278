"""How well would the hand-reading error tell a perturbed camera or scene from nominal play? (offline, from bags)

Per window of `--window` seconds of consecutive play, the RMS gap between the hand position the world model's
effector map reads from each frame's latent and the one forward kinematics of the joint states give, after removing
the window's own mean offset (the map reads positions up to an offset). This is the signal a trigger for
`jepa adjust-encoder` would watch; the bags are `jepa collect` play (with and without --perturb).

    ../../.venv/bin/python reading_trigger.py nominal=/tmp/recal/play_nominal camera_moved=/tmp/recal/play_camera_moved
"""
import argparse

import numpy as np
import torch

from jepa_configurator.adjust_encoder import episodes_from_ticks, readings
from jepa_world_model.bag_layout import BagLayout
from jepa_world_model.dataset import bag_kinematics, load_bag
from jepa_world_model.model import default_checkpoint_path, load_checkpoint


def window_errors(model, bag: str, seconds: float, dt: float = 0.1) -> np.ndarray:
    layout = BagLayout()
    ticks = load_bag(bag, image_size=model.image_size, layout=layout)
    episodes = episodes_from_ticks(ticks, bag_kinematics(bag, layout), 2)
    gaps = [r - e.hand_positions for r, e in zip(readings(model, episodes), episodes)]
    size = int(round(seconds / dt))
    errors = []
    for gap in gaps:  # windows within one episode (a reset between episodes is not play)
        for start in range(0, len(gap) - size + 1, size):
            window = gap[start:start + size]
            errors.append(np.sqrt(((window - window.mean(0)) ** 2).sum(1).mean()))
    return np.array(errors)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('bags', nargs='+', help='NAME=BAG')
    parser.add_argument('--window', type=float, default=10.0, help='seconds per window')
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    for item in args.bags:
        name, _, bag = item.partition('=')
        e = 100 * window_errors(model, bag, args.window)
        print(f'{name}: {len(e)} windows of {args.window:g} s, hand-reading error RMS (cm) min {e.min():.2f} '
              f'p10 {np.percentile(e, 10):.2f} median {np.median(e):.2f} p90 {np.percentile(e, 90):.2f} max {e.max():.2f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
