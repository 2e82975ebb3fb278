"""The JEPA world model: an image encoder, an action-conditioned latent predictor and a bounded latent variable.

The model never reconstructs pixels: it predicts the *representation* of the next observation,
s_{t+1} = s_t + f(s_t, a_t, z_t), where z_t is a low-dimensional latent variable standing for what the action
cannot explain (another object moving, contact outcomes). z_t is inferred from (s_t, s_{t+1}) only while
training, through a Gaussian posterior whose KL to N(0, I) is penalized, so it carries at most a few nats;
at planning time z = 0 (the prior mean).

Everything is configured by `WorldModelConfig`, and a checkpoint is the config + state_dict + provenance +
metrics, so a checkpoint rebuilds exactly the model that wrote it (`load_checkpoint`) or says why it cannot.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

# Bumped whenever the code would compute something else from the same state_dict and config.
FORMAT_VERSION = 2
CHECKPOINT_KEYS = ('format_version', 'config', 'state_dict', 'provenance', 'metrics')


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the mismatch."""


@dataclass
class WorldModelConfig:
    image_size: int = 64
    # ee_delta: [dx, dy, dz, gripper]; the model sees actions divided by action_scale (so within [-1, 1]).
    action_dim: int = 4
    action_scale: tuple = (0.03, 0.03, 0.03, 1.0)
    latent_dim: int = 64
    # Few channels at high resolution: the first layers dominate the CPU cost of training.
    encoder_channels: tuple = (8, 16, 32, 64)
    # Spatial-softmax keypoints (0: none) computed after this many encoder stages (2: a 16x16 map).
    keypoints: int = 16
    keypoint_stage: int = 2
    # Optional proprioception (joint positions) fused into the encoder; off by default so that a camera
    # image alone defines the state (perception only sees images).
    use_proprio: bool = False
    proprio_dim: int = 9
    predictor_hidden: int = 256
    predictor_layers: int = 3
    z_dim: int = 4
    z_hidden: int = 128
    inverse_hidden: int = 128
    translation_dims: int = 3     # leading action components that are end-effector displacements

    @classmethod
    def from_dict(cls, values: dict) -> 'WorldModelConfig':
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f'unknown world model config keys {unknown}')
        cleaned = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        config = cls(**cleaned)
        config.validate()
        return config

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def validate(self) -> None:
        if self.image_size % (2 ** len(self.encoder_channels)) != 0:
            raise ValueError(f'image_size {self.image_size} is not divisible by 2^{len(self.encoder_channels)} '
                             '(one stride-2 convolution per encoder stage)')
        if self.keypoints and not 1 <= self.keypoint_stage <= len(self.encoder_channels):
            raise ValueError(f'keypoint_stage {self.keypoint_stage} is not one of the {len(self.encoder_channels)} '
                             'encoder stages')
        if len(self.action_scale) != self.action_dim:
            raise ValueError(f'action_scale has {len(self.action_scale)} values for action_dim {self.action_dim}')
        if not 0 <= self.translation_dims <= self.action_dim:
            raise ValueError(f'translation_dims {self.translation_dims} must be within 0..action_dim {self.action_dim}')
        for name in ('latent_dim', 'action_dim', 'z_dim', 'predictor_hidden', 'predictor_layers'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')


def resize_rgb(images: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) or (B, H, W, 3) uint8 -> same at size x size, area-averaged (the one resize used by both
    the datasets and inference, so that a model sees the same pixels live as in training)."""
    if images.shape[-3:-1] == (size, size):
        return images
    if images.ndim == 3:
        return cv2.resize(images, (size, size), interpolation=cv2.INTER_AREA)
    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])


def mlp(sizes: list[int], final_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or final_norm:
            layers += [nn.LayerNorm(n_out), nn.GELU()]
    return nn.Sequential(*layers)


class SpatialSoftmax(nn.Module):
    """Feature maps (B, C, H, W) -> expected image coordinates (B, 2C) in [-1, 1] of each map's softmax:
    keypoints that move linearly with what they track, so a small arm motion is a small latent motion."""

    def __init__(self, height: int, width: int):
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing='ij')
        self.register_buffer('grid', torch.stack([xs.flatten(), ys.flatten()], dim=1), persistent=False)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(maps.flatten(2) / self.log_temperature.exp(), dim=2)    # (B, C, HW)
        return (weights @ self.grid).flatten(1)


class Encoder(nn.Module):
    """64x64 RGB (+ optional proprioception) -> latent. Stride-2 4x4 convolutions with GroupNorm (batch
    independent, so batch 1 at inference equals training behaviour) and ReLU (GELU costs 1.5x the
    training time of this small network on CPU). The head sees the last feature map and, when
    `keypoints` > 0, spatial-softmax keypoints taken after `keypoint_stage` stages."""

    def __init__(self, config: WorldModelConfig):
        super().__init__()
        self.stages = nn.ModuleList()
        channels_in = 3
        for channels in config.encoder_channels:
            self.stages.append(nn.Sequential(nn.Conv2d(channels_in, channels, 4, stride=2, padding=1),
                                             nn.GroupNorm(min(8, channels), channels), nn.ReLU()))
            channels_in = channels
        side = config.image_size // 2 ** len(config.encoder_channels)
        features = channels_in * side * side
        self.keypoint_stage = config.keypoint_stage
        if config.keypoints:
            keypoint_side = config.image_size // 2 ** config.keypoint_stage
            self.keypoint_maps = nn.Conv2d(config.encoder_channels[config.keypoint_stage - 1], config.keypoints, 1)
            self.spatial_softmax = SpatialSoftmax(keypoint_side, keypoint_side)
            features += 2 * config.keypoints
        else:
            self.keypoint_maps = None
        self.proprio = mlp([config.proprio_dim, 64, 64], final_norm=True) if config.use_proprio else None
        self.head = nn.Linear(features + (64 if config.use_proprio else 0), config.latent_dim)

    def forward(self, pixels: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        x = pixels
        for index, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if self.keypoint_maps is not None and index == self.keypoint_stage:
                parts.append(self.spatial_softmax(self.keypoint_maps(x)))
        parts.append(x.flatten(1))
        if self.proprio is not None:
            parts.append(self.proprio(proprio))
        return self.head(torch.cat(parts, dim=1))


class WorldModel(nn.Module):
    """encode(images) -> states; predict(state, action, z) -> next state; rollout(state, actions) -> states.

    Also holds the training-only heads: the posterior over z (`infer_latent_var`) and the inverse-dynamics
    head (`inverse_dynamics`), and the latent statistics of the training data (`latent_mean`, `latent_var`)
    used to normalize prediction errors.
    """

    def __init__(self, config: WorldModelConfig | None = None):
        super().__init__()
        self.config = config or WorldModelConfig()
        self.config.validate()
        c = self.config
        self.encoder = Encoder(c)
        self.predictor = mlp([c.latent_dim + c.action_dim + c.z_dim] + [c.predictor_hidden] * (c.predictor_layers - 1)
                              + [c.latent_dim])
        # A near-zero last layer starts the predictor at "nothing changes", the copy-last baseline.
        nn.init.zeros_(self.predictor[-1].bias)
        self.predictor[-1].weight.data.mul_(0.1)
        self.posterior = mlp([2 * c.latent_dim, c.z_hidden, 2 * c.z_dim])
        # The end-effector step is read *linearly* from the latent displacement: this makes the latent a
        # space in which the arm's position is (close to) a linear function, which is what planning towards
        # a goal latent and a linear probe need. Other action components (the gripper target) are not a
        # displacement and go through a small MLP.
        self.inverse_translation = nn.Linear(c.latent_dim, c.translation_dims, bias=False)
        self.inverse = mlp([2 * c.latent_dim, c.inverse_hidden, c.inverse_hidden, c.action_dim - c.translation_dims])
        self.register_buffer('action_scale', torch.tensor(c.action_scale, dtype=torch.float32))
        self.register_buffer('latent_mean', torch.zeros(c.latent_dim))
        self.register_buffer('latent_var', torch.ones(c.latent_dim))
        self.model_id = 'unsaved'

    # -- the contract of docs/architecture.md
    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.action_scale.device

    def pixels(self, images) -> torch.Tensor:
        """uint8 (B, H, W, 3) numpy or tensor -> float (B, 3, S, S) in [-0.5, 0.5] on the model's device.
        Numpy images of another size are resized with `resize_rgb`."""
        if isinstance(images, np.ndarray):
            if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
                raise ValueError(f'expected uint8 images (B, H, W, 3), got {images.shape} {images.dtype}')
            images = torch.from_numpy(np.ascontiguousarray(resize_rgb(images, self.image_size)))
        if images.ndim != 4 or images.shape[-1] != 3 or tuple(images.shape[1:3]) != (self.image_size,) * 2:
            raise ValueError(f'expected images (B, {self.image_size}, {self.image_size}, 3), got {tuple(images.shape)}')
        return images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)

    def encode(self, images, proprio=None) -> torch.Tensor:
        """uint8 images (B, H, W, 3) [+ proprio (B, proprio_dim) when configured] -> states (B, D)."""
        if self.config.use_proprio:
            if proprio is None:
                raise ValueError('this model encodes proprioception too: pass proprio (B, '
                                 f'{self.config.proprio_dim}) joint positions')
            proprio = torch.as_tensor(proprio, dtype=torch.float32, device=self.device)
        return self.encoder(self.pixels(images), proprio)

    def predict(self, z: torch.Tensor, action: torch.Tensor, latent_var: torch.Tensor | None = None) -> torch.Tensor:
        """Next state from state z (B, D) and ee_delta action (B, A) in metres/gripper units; latent_var
        (B, z_dim) is the latent variable (None: 0, the prior mean, as used for planning)."""
        action = torch.as_tensor(action, dtype=z.dtype, device=z.device)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f'expected states (B, {self.latent_dim}), got {tuple(z.shape)}')
        if action.shape != (z.shape[0], self.action_dim):
            raise ValueError(f'expected actions ({z.shape[0]}, {self.action_dim}), got {tuple(action.shape)}')
        if latent_var is None:
            latent_var = z.new_zeros(z.shape[0], self.config.z_dim)
        return z + self.predictor(torch.cat([z, action / self.action_scale, latent_var], dim=1))

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor, latent_vars: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable open-loop rollout: z0 (B, D), actions (B, T, A) -> predicted states (B, T, D)."""
        actions = torch.as_tensor(actions, dtype=z0.dtype, device=z0.device)
        if actions.ndim != 3:
            raise ValueError(f'expected actions (B, T, {self.action_dim}), got {tuple(actions.shape)}')
        states, state = [], z0
        for t in range(actions.shape[1]):
            state = self.predict(state, actions[:, t], None if latent_vars is None else latent_vars[:, t])
            states.append(state)
        return torch.stack(states, dim=1)

    # -- training-time heads
    def infer_latent_var(self, state: torch.Tensor, next_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior q(z | s, s') as (mean, log-variance), each (B, z_dim)."""
        mean, logvar = self.posterior(torch.cat([state, next_state - state], dim=1)).chunk(2, dim=1)
        return mean, logvar.clamp(-8.0, 4.0)

    def inverse_dynamics(self, state: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        """The action (ee_delta units) that took state to next_state, as the inverse-dynamics head sees it."""
        step = next_state - state
        action = torch.cat([self.inverse_translation(step), self.inverse(torch.cat([state, step], dim=1))], dim=1)
        return action * self.action_scale

    def normalized_error(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared error averaged over latent dimensions, divided by the mean per-dimension variance of the
        training embeddings (1 = as far off as a random other state would be, roughly)."""
        return (predicted - target).pow(2).mean(dim=-1) / self.latent_var.mean()


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) in nats, summed over dimensions: (B, z_dim) -> (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


# ---------------------------------------------------------------- checkpoints

def encoder_id(model: WorldModel) -> str:
    """A fingerprint of the encoder's weights: two models with one encoder_id encode into one latent space (the
    configurator's adjustments fine-tune the predictor only and keep it; every retraining changes it)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:10]


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def model_id_for(path: Path, content: bytes) -> str:
    return f'{Path(path).name}@{hashlib.sha256(content).hexdigest()[:10]}'


def save_checkpoint(model: WorldModel, path, provenance: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None) -> str:
    """Write the checkpoint (atomically) plus a JSON sidecar (config, provenance, metrics) next to it.
    `extra` holds further top-level entries such as the optimizer state for resuming. Returns and sets
    model.model_id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        'format_version': FORMAT_VERSION,
        'config': model.config.to_dict(),
        'state_dict': {k: v.detach().cpu() for k, v in model.state_dict().items()},
        'provenance': provenance or {},
        'metrics': metrics or {},
        **(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    content = buffer.getvalue()
    _atomic_write(path, content)
    model.model_id = model_id_for(path, content)
    sidecar = {'model_id': model.model_id, 'format_version': FORMAT_VERSION, 'config': checkpoint['config'],
               'provenance': checkpoint['provenance'], 'metrics': checkpoint['metrics']}
    _atomic_write(path.with_suffix('.json'), json.dumps(sidecar, indent=1, default=str).encode())
    return model.model_id


# torch.save writes a zip archive: every file it wrote starts with a zip local file header.
ZIP_MAGIC = b'PK\x03\x04'


def read_checkpoint(path) -> tuple[dict, str]:
    """The checkpoint dict (format checked, not yet turned into a model) and its model_id."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such checkpoint file')
    content = path.read_bytes()
    try:
        # weights_only: a checkpoint is data (tensors, numbers, strings), never code to execute.
        checkpoint = torch.load(io.BytesIO(content), map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        if not content.startswith(ZIP_MAGIC):
            # A text file, an image, a bag...: torch's own error (a KeyError for text) would not say so. A file that
            # starts as a zip archive is a checkpoint, damaged (truncated: no central directory at its end).
            raise CheckpointError(f'{path}: not a checkpoint file (torch.save writes a zip archive, this file '
                                  f'is none: it starts with {content[:16]!r})') from exc
        raise CheckpointError(f'{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})') from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path}: expected a checkpoint dict, found {type(checkpoint).__name__}')
    missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f'{path}: checkpoint lacks {missing} (keys present: {sorted(checkpoint)})')
    if checkpoint['format_version'] != FORMAT_VERSION:
        raise CheckpointError(f'{path}: checkpoint format_version {checkpoint["format_version"]!r}, this code reads '
                              f'format_version {FORMAT_VERSION}')
    return checkpoint, model_id_for(path, content)


def model_from_checkpoint(checkpoint: dict, path, model_id: str, device='cpu') -> WorldModel:
    # A key missing from the config would silently take today's default, which may not be what trained.
    absent = sorted({f.name for f in fields(WorldModelConfig)} - set(checkpoint['config']))
    if absent:
        raise CheckpointError(f'{path}: model config lacks {absent} (written by another version of the model code)')
    try:
        config = WorldModelConfig.from_dict(checkpoint['config'])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f'{path}: bad model config: {exc}') from exc
    model = WorldModel(config)
    expected = model.state_dict()
    found = checkpoint['state_dict']
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [f'{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(v.shape)}'
                  for k, v in expected.items() if k in found and tuple(found[k].shape) != tuple(v.shape)]
    if missing or unexpected or mismatched:
        parts = ([f'missing parameters {missing}'] if missing else []) + \
                ([f'unexpected parameters {unexpected}'] if unexpected else []) + \
                ([f'shape mismatch {mismatched}'] if mismatched else [])
        raise CheckpointError(f'{path}: state_dict does not match its config: ' + '; '.join(parts))
    model.load_state_dict(found)
    model.model_id = model_id
    return model.to(device).eval()


def load_checkpoint(path, device='cpu') -> WorldModel:
    """The WorldModel stored at path, in eval mode on device; CheckpointError names what does not fit."""
    checkpoint, model_id = read_checkpoint(path)
    return model_from_checkpoint(checkpoint, path, model_id, device)


def default_checkpoint_path() -> Path:
    """The shipped checkpoint (trained on simulated play data)."""
    return Path(__file__).resolve().parent / 'checkpoints' / 'default.pt'
