"""The noise ablation of the packaged higher level, in process: `python ablate_high_level.py <sim_episodes args>`
runs jepa_bringup.sim_episodes with the --high-level model's predictor replaced by noise (the start latent plus a
random walk with the per-dimension std of real macro-step latent changes; the macro-actions are ignored). Its
library, latent space and macro length stay, so only the prediction is taken away."""
import sys

import torch
from torch import nn

from jepa_bringup import sim_episodes
from jepa_world_model.high_level import HighLevelModel


class NoiseHighLevel(nn.Module):
    def __init__(self, real: HighLevelModel, seed: int = 0):
        super().__init__()
        self.latent_dim, self.max_step, self.macro_steps = real.latent_dim, real.max_step, real.macro_steps
        self.register_buffer('library', real.library)
        self.register_buffer('delta_std', real.delta_std)
        self.generator = torch.Generator().manual_seed(seed)

    def rollout(self, latent, macros):
        batch, horizon = macros.shape[:2]
        noise = torch.randn(batch, horizon, latent.shape[-1], generator=self.generator) * self.delta_std
        return latent[:, None] + noise.cumsum(1)


def main():
    real_load = HighLevelModel.load
    HighLevelModel.load = classmethod(lambda cls, *a, **k: NoiseHighLevel(real_load(*a, **k)))
    return sim_episodes.main(sys.argv[1:])


if __name__ == '__main__':
    sys.exit(main())
