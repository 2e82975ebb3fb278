"""The predictors' ablation for the graph: writes OUT/ablated.pt (the shipped world model) and, beside it where the
actor looks for its higher level, OUT/ablated_high_level.pt: the shipped higher level with its predictor's weights
drawn afresh from their initialization (a random network; the last layer at the usual scale, not the near-zero a
training starts from, so that its predicted changes are as large as real ones). Its normalization, play library,
latent space and macro length stay, so only what it learned is taken away. With --both the control level's
predictor is re-drawn the same way (the encoder, and so the latent space, stays). `ablate_high_level.py` is the
in-process twin (a random walk each call, which a file cannot hold).

    random_high_level.py --out /work/data/random_high --seed 0 [--both]
    jepa eval --task push --conditions mode2 ... checkpoint:=/work/data/random_high/ablated.pt
"""
import argparse
import shutil
from pathlib import Path

import torch

from jepa_common.digest import file_sha256
from jepa_world_model.high_level import HighLevelModel, default_high_level_path
from jepa_world_model.model import (default_checkpoint_path, encoder_id, load_checkpoint, read_checkpoint,
                                    save_checkpoint)


def redraw(net: torch.nn.Module) -> None:
    for module in net.modules():
        if module is not net and hasattr(module, 'reset_parameters'):
            module.reset_parameters()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', type=Path, required=True)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--both', action='store_true', help="also re-draw the control level's predictor")
    a = ap.parse_args()
    checkpoint = default_checkpoint_path()
    high_path = default_high_level_path(checkpoint)
    model = load_checkpoint(checkpoint)
    high = HighLevelModel.load(high_path, encoder_id(model))
    torch.manual_seed(a.seed)
    redraw(high.net)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.both:
        blob, _ = read_checkpoint(checkpoint)
        redraw(model.predictor)
        sha = file_sha256(checkpoint)
        standard = ('format_version', 'config', 'state_dict', 'provenance', 'metrics')
        save_checkpoint(model, a.out / 'ablated.pt', {**blob['provenance'], 'ablation': f'predictor weights re-drawn '
                        f'from their initialization (seed {a.seed}) from the world model {sha[:12]}'},
                        blob['metrics'], {k: v for k, v in blob.items() if k not in standard})
    else:
        shutil.copyfile(checkpoint, a.out / 'ablated.pt')
    sha = file_sha256(high_path)
    high.save(a.out / 'ablated_high_level.pt', {**high.provenance, 'ablation': f'predictor weights re-drawn from their '
                                                 f'initialization (seed {a.seed}) from the higher level {sha[:12]}'})
    for path in (a.out / 'ablated.pt', a.out / 'ablated_high_level.pt'):
        print(path, file_sha256(path))


if __name__ == '__main__':
    main()
