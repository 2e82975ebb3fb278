"""The higher level's world model (ROS-free): a predictor over macro-actions in the encoder's latent space.

A macro-action summarizes `macro_steps` control actions: the hand's net commanded displacement over them (in units
of macro_steps x max_step, so each component lies in [-1, 1]) and their mean gripper command. The predictor maps
the latent s_t and a macro-action to the latent `macro_steps` control steps later, s_{t+K} = s_t + f(s_t, m); it
learns from play through the frozen encoder, with an open-loop loss over `rollout_macros` macro-actions (so its
own errors are inputs it has seen), windows whose latent changes most weighted up (contact, without labels).

It also keeps a library of the macro-action sequences play contains: the higher level's planner draws its first
candidates from it (searching among macro-actions seen in play rather than over all of them).
"""
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jepa_common.settings import check_spans, setting
from jepa_world_model.versioned import read_versioned

HIGH_LEVEL_FORMAT_VERSION = 1


def default_high_level_path(checkpoint) -> Path:
    """Where the higher level of a world model checkpoint lives: beside it, <stem>_high_level.pt."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f'{checkpoint.stem}_high_level.pt')


def high_level_file(path: str, checkpoint) -> str:
    """The higher level a `high_level_path` setting names: itself, or for '' the one beside the world model
    `checkpoint` if there is one ('' if not)."""
    if path:
        return path
    beside = default_high_level_path(checkpoint)
    return str(beside) if beside.is_file() else ''


class HighLevelError(ValueError):
    """A higher-level model file that cannot serve: unreadable, another format, or another latent space."""


@dataclass
class HighLevelConfig:
    """The macro-action predictor's shape and training; the model file records the values it was trained with."""
    macro_steps: int = setting(5, 'control steps per macro-action', (1, 1000))
    rollout_macros: int = setting(6, 'macro-actions of the open-loop training rollout (the plan horizon it learns)',
                                  (1, 100))
    hidden: int = setting(384, 'width of the predictor MLP', (8, 65536))
    layers: int = setting(3, 'linear layers of the predictor MLP', (2, 16))
    dropout: float = setting(0.1, 'dropout in the predictor MLP while training', (0.0, 0.9))
    lr: float = setting(1e-3, 'AdamW learning rate (cosine schedule over the epochs)', (1e-6, 1.0))
    weight_decay: float = setting(1e-4, 'AdamW weight decay', (0.0, 1.0))
    epochs: int = setting(25, 'passes over the training windows (fewer if time_budget_s runs out)', (1, 100_000))
    batch: int = setting(256, 'windows per step', (1, 1_000_000))
    time_budget_s: float = setting(600.0, 'training stops after the epoch that passes this many seconds',
                                   (1.0, 1e6))
    change_weight: float = setting(1.0, "each predicted latent's loss weighs 1 + this x its change from the start / "
                                   'the mean change',
                                   (0.0, 1000.0))
    input_noise: float = setting(0.02, 'Gaussian noise on the start latent, in latent standard deviations',
                                 (0.0, 10.0))
    step_decay: float = setting(0.9, 'loss weight of the k-th macro-action of a rollout: step_decay ** k',
                                (0.0, 1.0))
    holdout: float = setting(0.1, 'share of the play episodes held out to pick the best epoch', (0.01, 0.5))
    library_stride: int = setting(3, 'control steps between the starts of the macro sequences kept in the library',
                                  (1, 1000))
    seed: int = setting(0, 'initial weights, episode split and batch order', (0, 2 ** 31 - 1))

    def __post_init__(self):
        check_spans(self)

    @property
    def window_ticks(self) -> int:
        """Control ticks one training window spans: rollout_macros macro-actions of macro_steps, and the start."""
        return self.macro_steps * self.rollout_macros + 1

    @classmethod
    def from_dict(cls, values: dict) -> 'HighLevelConfig':
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f'unknown high-level settings {sorted(unknown)}')
        return cls(**values)


def macro_actions(actions: np.ndarray | torch.Tensor, max_step: float):
    """actions (..., K, 4) ee_delta -> macro-actions (..., 4): net displacement / (K max_step), mean gripper."""
    steps = actions.shape[-2]
    net = actions[..., :3].sum(-2) / (steps * max_step)
    gripper = actions[..., 3:].mean(-2)
    if isinstance(actions, torch.Tensor):
        return torch.cat([net, gripper], -1)
    return np.concatenate([net, gripper], -1).astype(np.float32)


def predictor_mlp(inputs: int, outputs: int, config: HighLevelConfig) -> nn.Sequential:
    """The predictor's residual MLP: config.layers linear layers (LayerNorm, GELU, dropout between them), the last
    one small, so that a fresh model starts near "nothing changes"."""
    sizes = [inputs] + [config.hidden] * (config.layers - 1)
    layers = []
    for width_in, width_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(width_in, width_out), nn.LayerNorm(width_out), nn.GELU()]
        if config.dropout:
            layers.append(nn.Dropout(config.dropout))
    layers.append(nn.Linear(sizes[-1], outputs))
    net = nn.Sequential(*layers)
    nn.init.zeros_(net[-1].bias)
    net[-1].weight.data.mul_(0.1)
    return net


class HighLevelModel(nn.Module):
    """s_t, m -> s_{t+K} for latents of one encoder (`encoder_id`), with the play library of macro sequences."""

    def __init__(self, latent_dim: int, config: HighLevelConfig, encoder_id: str, max_step: float,
                 library_size: int = 0):
        super().__init__()
        self.latent_dim, self.config, self.encoder_id, self.max_step = latent_dim, config, encoder_id, max_step
        self.net = predictor_mlp(latent_dim + 4, latent_dim, config)
        self.register_buffer('mean', torch.zeros(latent_dim))
        self.register_buffer('std', torch.ones(latent_dim))
        self.register_buffer('delta_std', torch.ones(latent_dim))
        self.register_buffer('library', torch.zeros(library_size, config.rollout_macros, 4))

    @property
    def macro_steps(self) -> int:
        return self.config.macro_steps

    def forward(self, latent: torch.Tensor, macro: torch.Tensor) -> torch.Tensor:
        return latent + self.net(torch.cat([(latent - self.mean) / self.std, macro], -1)) * self.delta_std

    def predict(self, latent: torch.Tensor, macro: torch.Tensor) -> torch.Tensor:
        """One macro-action on, under the world model's name for a step (a policy's rollout runs on either)."""
        return self(latent, macro)

    def rollout(self, latent: torch.Tensor, macros: torch.Tensor) -> torch.Tensor:
        """latent (B, D), macros (B, H, 4) -> the latents after each macro-action (B, H, D)."""
        out = []
        for h in range(macros.shape[1]):
            latent = self(latent, macros[:, h])
            out.append(latent)
        return torch.stack(out, 1)

    def save(self, path, provenance: dict | None = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({'kind': 'jepa_high_level', 'format_version': HIGH_LEVEL_FORMAT_VERSION,
                    'latent_dim': self.latent_dim, 'config': asdict(self.config), 'encoder_id': self.encoder_id,
                    'max_step': self.max_step, 'library_size': len(self.library), 'state_dict': self.state_dict(),
                    'provenance': provenance or {}}, str(path))

    @classmethod
    def load(cls, path, encoder_id: str | None = None, latent_dim: int | None = None) -> 'HighLevelModel':
        """The model stored at path; with encoder_id / latent_dim, refused unless it predicts that latent space."""
        blob = read_versioned(path, 'jepa_high_level', HIGH_LEVEL_FORMAT_VERSION, HighLevelError, 'higher-level model',
                              hint='train it again with jepa train-high-level',
                              keys=('latent_dim', 'config', 'encoder_id', 'max_step', 'library_size', 'state_dict'))
        if latent_dim is not None and blob['latent_dim'] != latent_dim:
            raise HighLevelError(f'{path}: predicts {blob["latent_dim"]}-d latents, the world model has {latent_dim}')
        if encoder_id is not None and blob['encoder_id'] != encoder_id:
            raise HighLevelError(f'{path}: trained on latents of encoder {blob["encoder_id"]}, the world model in '
                                 f'service encodes with {encoder_id}: train it again on its latents')
        try:
            model = cls(blob['latent_dim'], HighLevelConfig.from_dict(blob['config']), blob['encoder_id'],
                        float(blob['max_step']), int(blob['library_size']))
            model.load_state_dict(blob['state_dict'])
        except (TypeError, ValueError, RuntimeError) as exc:   # (read_versioned checked the keys)
            raise HighLevelError(f'{path}: inconsistent higher-level model ({type(exc).__name__}: {exc})') from exc
        model.provenance = blob.get('provenance', {})
        return model.eval()


def episode_rows(segment: np.ndarray) -> list[np.ndarray]:
    """The tick indices of every continuous segment of at least two ticks, in segment order."""
    rows = (np.flatnonzero(segment == value) for value in np.unique(segment))
    return [r for r in rows if len(r) > 1]


def split_episodes(latents: np.ndarray, actions: np.ndarray, segment: np.ndarray) -> list[tuple]:
    """Per continuous segment: (latents (T, D), actions (T - 1, 4)), actions[k] taken between latents k and k+1."""
    return [(latents[rows], actions[rows[:-1]]) for rows in episode_rows(segment)]


def rollout_windows(episodes: list[tuple], config: HighLevelConfig, max_step: float, stride: int = 1):
    """(start latents (N, D), macro-actions (N, H, 4), latents after each (N, H, D)) of every window of
    rollout_macros macro-actions within an episode."""
    K, H = config.macro_steps, config.rollout_macros
    starts, macros, targets = [], [], []
    for latents, actions in episodes:
        for t in range(0, len(actions) - H * K + 1, stride):
            starts.append(latents[t])
            macros.append(macro_actions(actions[t:t + H * K].reshape(H, K, 4), max_step))
            targets.append(latents[t + K * np.arange(1, H + 1)])
    if not starts:
        raise ValueError(f'no episode is long enough for {H} macro-actions of {K} steps ({config.window_ticks} ticks)')
    return (torch.as_tensor(np.array(starts, np.float32)), torch.as_tensor(np.array(macros, np.float32)),
            torch.as_tensor(np.array(targets, np.float32)))


def training_windows(episodes: list[tuple], config: HighLevelConfig, max_step: float,
                     repeats: list[int] | None = None) -> tuple:
    """The held-out split (config.seed, config.holdout) and its windows: -> ((S, M, T) of the training episodes,
    each counted `repeats` times; (S, M, T) of the held-out ones, once, every third start; the library of macro
    sequences of all episodes, counted `repeats` times; the episode counts)."""
    repeats = [1] * len(episodes) if repeats is None else [int(r) for r in repeats]
    if len(repeats) != len(episodes) or min(repeats, default=1) < 1:
        raise ValueError(f'repeats: expected one count >= 1 for each of the {len(episodes)} episodes, '
                         f'got {len(repeats)} (smallest {min(repeats, default=None)})')
    if len(episodes) < 2:
        raise ValueError(f'{len(episodes)} play episode(s): need at least 2, one of them held out')
    order = np.random.default_rng(config.seed).permutation(len(episodes))
    held = max(1, int(round(len(episodes) * config.holdout)))
    val = [episodes[i] for i in order[:held]]
    train = [episodes[i] for i in order[held:] for _ in range(repeats[i])]
    weighted = [episode for episode, count in zip(episodes, repeats) for _ in range(count)]
    _, library, _ = rollout_windows(weighted, config, max_step, stride=config.library_stride)
    counts = {'train': len(episodes) - held, 'heldout': len(val), 'train_repeated': len(train)}
    return (rollout_windows(train, config, max_step), rollout_windows(val, config, max_step, stride=3), library,
            counts)


def fit_statistics(model: HighLevelModel, S: torch.Tensor, T: torch.Tensor, library: torch.Tensor) -> None:
    """The model's input normalization and residual scale from the training windows, and its library."""
    model.library.copy_(library)
    every = torch.cat([S, T.reshape(-1, S.shape[1])])
    model.mean.copy_(every.mean(0))
    model.std.copy_(every.std(0).clamp_min(1e-3))
    model.delta_std.copy_((T[:, 0] - S).std(0).clamp_min(1e-4))


def train_high_level(episodes: list[tuple], config: HighLevelConfig, encoder_id: str, max_step: float,
                     latent_scale: float, log=print, repeats: list[int] | None = None) -> tuple[HighLevelModel, dict]:
    """Train on play episodes [(latents (T, D), actions (T - 1, 4))]; the epoch with the least held-out open-loop
    error is kept. `repeats` (one count >= 1 per episode) weighs episodes: a training episode's windows and its
    library sequences count that many times; a held-out one counts once, so the epoch is picked on what play
    predicts, not on the repeated episodes' share. -> (model, report: held-out normalized error per macro-action
    against copying the start)."""
    (S, M, T), (Sv, Mv, Tv), library, counts = training_windows(episodes, config, max_step, repeats)
    torch.manual_seed(config.seed)
    model = HighLevelModel(S.shape[1], config, encoder_id, max_step, len(library))
    fit_statistics(model, S, T, library)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)
    step_weights = config.step_decay ** torch.arange(config.rollout_macros, dtype=torch.float32)
    change = (T - S[:, None]).pow(2).mean(-1)   # (N, H): how far each target is from the start
    window_weights = 1.0 + config.change_weight * change / change.mean()

    def error(predicted, target):   # (B, H): squared error / the latents' variance (1 ~ unrelated states)
        return (predicted - target).pow(2).mean(-1) / latent_scale

    generator = torch.Generator().manual_seed(config.seed)
    start, best, epochs = time.monotonic(), (math.inf, None), 0
    for epoch in range(config.epochs):
        model.train()
        for rows in torch.randperm(len(S), generator=generator).split(config.batch):
            noisy = S[rows] + config.input_noise * torch.randn(len(rows), S.shape[1], generator=generator) * model.std
            weights = window_weights[rows]
            loss = (error(model.rollout(noisy, M[rows]), T[rows]) * step_weights * weights).sum(-1).mean() \
                / weights.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        model.eval()
        with torch.no_grad():
            held_out = error(model.rollout(Sv, Mv), Tv).mean(0)
        epochs = epoch + 1
        if float(held_out.mean()) < best[0]:
            best = (float(held_out.mean()), {k: v.clone() for k, v in model.state_dict().items()}, held_out)
        log(f'epoch {epoch}: train loss {float(loss.detach()):.4f}, held-out error per macro-action '
            + ' '.join(f'{v:.3f}' for v in held_out.tolist()) + f' ({time.monotonic() - start:.0f} s)')
        if time.monotonic() - start > config.time_budget_s:
            log(f'time budget of {config.time_budget_s:.0f} s reached after epoch {epoch}')
            break
    model.load_state_dict(best[1])
    copy_last = error(Sv[:, None].expand_as(Tv), Tv).mean(0)
    report = {'train_windows': len(S), 'heldout_windows': len(Sv), 'library': len(library),
              'episodes': counts,
              'epochs': epochs,
              'seconds': round(time.monotonic() - start, 1),
              'heldout_error_per_macro': [round(v, 4) for v in best[2].tolist()],
              'copy_last_error_per_macro': [round(v, 4) for v in copy_last.tolist()]}
    return model.eval(), report
