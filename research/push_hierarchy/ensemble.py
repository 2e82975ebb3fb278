"""A committee of higher levels trained alike (same windows, other seeds): the sub-goal search scores each candidate
by the members' mean predicted latents. Averaging members whose errors are partly independent leaves the search
less to exploit (§16: the search picks the candidates its one model is most wrong about); the mean, not a
disagreement penalty, since §11's penalty kept the hand away from contact, where members disagree."""
import torch
from torch import nn

from jepa_world_model.high_level import HighLevelModel


class HighLevelCommittee(nn.Module):
    def __init__(self, members: list[HighLevelModel]):
        super().__init__()
        first = members[0]
        for other in members[1:]:
            for key in ('latent_dim', 'encoder_id', 'max_step', 'macro_steps'):
                if getattr(other, key) != getattr(first, key):
                    raise ValueError(f'committee members differ in {key}: {getattr(first, key)} vs '
                                     f'{getattr(other, key)}')
        self.members = nn.ModuleList(members)
        self.latent_dim, self.encoder_id, self.max_step = first.latent_dim, first.encoder_id, first.max_step
        self.config = first.config

    @property
    def macro_steps(self) -> int:
        return self.members[0].macro_steps

    @property
    def library(self) -> torch.Tensor:
        return self.members[0].library

    def rollout(self, latent: torch.Tensor, macros: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.rollout(latent, macros) for m in self.members]).mean(0)

    @classmethod
    def load(cls, paths: list[str], encoder_id: str, latent_dim: int) -> 'HighLevelCommittee':
        return cls([HighLevelModel.load(p, encoder_id, latent_dim) for p in paths]).eval()
