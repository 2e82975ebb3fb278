"""Train the packaged higher level (jepa_world_model.high_level) on in-process play (gen_play.py's npz: the shipped
encoder's latents and the actions), for in-process comparisons before play bags exist; `jepa train-high-level`
does the same from bags."""
import argparse
import json

import numpy as np
import torch

from jepa_world_model.high_level import HighLevelConfig, split_episodes, train_high_level
from jepa_world_model.model import default_checkpoint_path, encoder_id, load_checkpoint


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--play', nargs='+', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--set', action='append', default=[], metavar='NAME=VALUE')
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    episodes = []
    for path in a.play:
        play = dict(np.load(path))
        episodes += split_episodes(play['z'], play['a'], play['ep'])
    defaults = vars(HighLevelConfig())
    config = HighLevelConfig(**{k: type(defaults[k])(v) for k, v in (kv.split('=') for kv in a.set)})
    high, report = train_high_level(episodes, config, encoder_id(model), 0.03, float(model.latent_var.mean()),
                                    log=lambda line: print(line, flush=True))
    high.save(a.out, {'play': a.play, 'config': vars(config), 'report': report})
    print(json.dumps(report))


if __name__ == '__main__':
    main()
