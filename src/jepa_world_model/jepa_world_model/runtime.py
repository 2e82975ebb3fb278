"""The world model's runtime (ROS-free): device choice, checkpoint resolution and loading, latency statistics,
the online predictor, and the world_model node's settings. Every learned node loads its model through
`LoadedModel`; training shares `select_device`.
"""
from __future__ import annotations

import collections
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from jepa_common.settings import check_spans, setting

from jepa_world_model.model import WorldModel, default_checkpoint_path, model_from_checkpoint, read_checkpoint


def check_device_name(name: str) -> None:
    """ValueError unless name is auto, cpu, cuda or cuda:N (whether that GPU exists is select_device's check)."""
    if not re.fullmatch(r'auto|cpu|cuda(:\d+)?', name):
        raise ValueError(f'device must be auto, cpu, cuda or cuda:N, got {name!r}')


def select_device(name: str) -> torch.device:
    """'auto' picks the GPU when there is one; 'cuda' without a GPU is an error, not a silent fallback."""
    check_device_name(name)
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'device {name!r} requested but torch sees no CUDA GPU')
    return torch.device(name)


def limit_torch_threads(threads: int) -> None:
    """Intra-op threads of this process (0 = torch's default, one per core). Every learned node is its own
    process: with one thread each they share the cores instead of spinning against each other, which on busy
    cores makes a frame's encoding many times slower than with one thread."""
    if threads > 0:
        torch.set_num_threads(threads)


@dataclass
class WorldModelNodeConfig:
    """The world_model node's parameters. Only `checkpoint` is applied while the node runs."""
    checkpoint: str = setting(
        '', "world-model checkpoint ('' = the shipped default); setting it loads that checkpoint, or is refused "
            'and the current model kept', live=True)
    device: str = setting('auto', 'torch device: auto (the GPU when there is one), cpu, cuda or cuda:N')
    torch_threads: int = setting(1, 'intra-op torch threads (0 = one per core); the nodes share the cores', (0, 256))
    action_window: float = setting(
        0.1, 's after a latent within which the action taken from it is stamped', (0.001, 10.0))
    max_gap: float = setting(
        0.5, 's: a latent further after the one a prediction came from is not scored (frames were refused or '
             'dropped between them)', (0.001, 3600.0))
    max_rollout_elements: int = setting(
        4_000_000, 'largest batch x horizon x latent_dim of one world_model/rollout request', (1, 2 ** 40))
    diagnostics_period: float = setting(2.0, 's between /diagnostics reports', (0.1, 3600.0))

    def __post_init__(self):
        check_spans(self)
        check_device_name(self.device)


_DEFAULTS = WorldModelNodeConfig()


def resolve_checkpoint(path: str) -> str:
    """'' means the shipped default checkpoint."""
    return str(default_checkpoint_path()) if not path else os.path.abspath(os.path.expanduser(path))


class LatencyStats:
    """Rolling per-frame latency (seconds in, milliseconds out) over the last `window` frames."""

    def __init__(self, window: int = 500):
        self._samples = collections.deque(maxlen=window)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._samples.append(seconds * 1e3)
        self.count += 1

    def percentiles(self) -> tuple[float, float]:
        if not self._samples:
            return float('nan'), float('nan')
        p50, p95 = np.percentile(np.fromiter(self._samples, dtype=float), [50, 95])
        return float(p50), float(p95)


class LoadedModel:
    """The currently loaded checkpoint. `load` swaps in a new model only once it loaded completely, so a
    failed reload (missing file, mismatched checkpoint) leaves the previous model in service."""

    def __init__(self, checkpoint: str = '', device: str = 'auto'):
        self.device = select_device(device)
        self.model: WorldModel | None = None
        self.metrics: dict = {}  # what the checkpoint records about its training (held-out errors, ...)
        self.checkpoint = ''
        self._signature = None
        self.load(checkpoint)

    def load(self, checkpoint: str) -> bool:
        """Load checkpoint ('' = shipped default); False when that file is already loaded, unchanged."""
        path = resolve_checkpoint(checkpoint)
        stat = os.stat(path) if os.path.isfile(path) else None
        signature = (path, stat.st_mtime_ns, stat.st_size) if stat else None
        if signature is not None and signature == self._signature:
            return False
        checkpoint, model_id = read_checkpoint(path)  # raises CheckpointError naming what is wrong
        model = model_from_checkpoint(checkpoint, path, model_id, self.device)
        self.model, self.metrics, self.checkpoint, self._signature = model, checkpoint['metrics'], path, signature
        return True

    @property
    def model_id(self) -> str:
        return self.model.model_id


def _finite_vector(values, dim: int, what: str) -> np.ndarray:
    """values as a flat float32 vector of the model's size; ValueError naming what is wrong otherwise."""
    vector = np.asarray(values, dtype=np.float32).reshape(-1)
    if vector.size != dim:
        raise ValueError(f'{what} has {vector.size} values, the model uses {dim}')
    if not np.all(np.isfinite(vector)):
        raise ValueError(f'{what} contains NaN or inf')
    return vector


class OnlinePredictor:
    """Pairs each latent with the action executed from it, predicts the next latent, and scores that
    prediction when the next latent arrives. Stamps are integer nanoseconds (exact, so outputs carry the
    very stamp of their source).

    The action taken from the state at stamp t is the one stamped within [t, t + action_window): the actor
    stamps its action when it issues it, after the state arrived, and it may reach this node before or
    after the latent does. When no action comes for a state, the last executed action is assumed to have
    continued.

    A latent more than max_gap after the one predicted from follows frames perception refused (a frozen or
    broken camera) or a dropped stream: an unknown number of actions passed unseen, so it is not scored against
    a one-step prediction (`skipped` counts these). A latent equal to the previous one is a still scene, an
    observation like any other: perception publishes no latent for a frozen camera's frames.
    """

    def __init__(self, loaded: LoadedModel, action_window_ns: int = round(_DEFAULTS.action_window * 1e9),
                 max_gap_ns: int = round(_DEFAULTS.max_gap * 1e9)):
        self.loaded = loaded
        self.action_window_ns = int(action_window_ns)
        self.max_gap_ns = int(max_gap_ns)
        self.skipped = 0
        self.reset()

    def reset(self) -> None:
        self._actions: collections.deque = collections.deque(maxlen=32)  # (stamp_ns, action)
        self._pending: tuple[np.ndarray, int] | None = None  # latest latent not yet predicted from
        self._prediction: tuple[torch.Tensor, int] | None = None  # prediction for the next latent, source stamp
        self._last_stamp: int | None = None

    def _check_latent(self, latent: np.ndarray) -> np.ndarray:
        return _finite_vector(latent, self.loaded.model.latent_dim, 'latent')

    def check_action(self, action: np.ndarray) -> np.ndarray:
        return _finite_vector(action, self.loaded.model.action_dim, 'action')

    def _action_from(self, stamp_ns: int) -> np.ndarray | None:
        for action_stamp, action in reversed(self._actions):
            if stamp_ns <= action_stamp < stamp_ns + self.action_window_ns:
                return action
        return None

    def _last_action_before(self, stamp_ns: int) -> np.ndarray | None:
        for action_stamp, action in reversed(self._actions):
            if action_stamp < stamp_ns:
                return action
        return None

    @torch.inference_mode()
    def _predict(self, latent: np.ndarray, stamp_ns: int, action: np.ndarray) -> tuple[np.ndarray, int]:
        device = self.loaded.device
        z = torch.from_numpy(latent).to(device)[None]
        predicted = self.loaded.model.predict(z, torch.from_numpy(action).to(device)[None])[0]
        if not torch.all(torch.isfinite(predicted)):
            raise ValueError('the model predicted NaN or inf')
        self._prediction = (predicted, stamp_ns)
        self._pending = None
        return predicted.cpu().numpy(), stamp_ns

    @torch.inference_mode()
    def observe_latent(self, latent: np.ndarray, stamp_ns: int) -> tuple[list, tuple | None]:
        """A new latent arrived. Returns (predictions made now: [(latent, source stamp)],
        surprise: (error, normalized error, source stamp) or None)."""
        latent = self._check_latent(latent)
        if self._last_stamp is not None and stamp_ns <= self._last_stamp:
            # Time went backwards (a replay restarted, a sim reset its clock): start over.
            actions = list(self._actions)
            self.reset()
            self._actions.extend(a for a in actions if a[0] >= stamp_ns)
        self._last_stamp = stamp_ns
        predictions = []
        if self._pending is not None:
            action = self._last_action_before(stamp_ns)
            if action is not None:
                predictions.append(self._predict(*self._pending, action))
        surprise = None
        if self._prediction is not None:
            predicted, source = self._prediction
            self._prediction = None
            if stamp_ns - source > self.max_gap_ns:
                self.skipped += 1
            else:
                actual = torch.from_numpy(latent).to(self.loaded.device)
                surprise = (float((predicted - actual).pow(2).mean()),
                            float(self.loaded.model.normalized_error(predicted, actual)), source)
        self._pending = (latent, stamp_ns)
        action = self._action_from(stamp_ns)
        if action is not None:
            predictions.append(self._predict(latent, stamp_ns, action))
        return predictions, surprise

    def observe_action(self, action: np.ndarray, stamp_ns: int) -> tuple[np.ndarray, int] | None:
        """An executed action: returns the prediction (latent, source stamp) it completes, if any."""
        action = self.check_action(action)
        self._actions.append((stamp_ns, action))
        if self._pending is not None and self._pending[1] <= stamp_ns < self._pending[1] + self.action_window_ns:
            return self._predict(*self._pending, action)
        return None

    @torch.inference_mode()
    def rollout(self, start: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """start (D,) and actions (B, T, A) -> predicted latents (B, T, D)."""
        start = self._check_latent(start)
        model = self.loaded.model
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[2] != model.action_dim or actions.shape[0] < 1 or actions.shape[1] < 1:
            raise ValueError(f'actions must be (batch >= 1, horizon >= 1, {model.action_dim}), got {actions.shape}')
        if not np.all(np.isfinite(actions)):
            raise ValueError('actions contain NaN or inf')
        device = self.loaded.device
        z0 = torch.from_numpy(start).to(device)[None].expand(actions.shape[0], -1)
        predicted = model.rollout(z0, torch.from_numpy(actions).to(device))
        if not torch.all(torch.isfinite(predicted)):
            raise ValueError('the rollout diverged to NaN or inf')
        return predicted.float().cpu().numpy()
