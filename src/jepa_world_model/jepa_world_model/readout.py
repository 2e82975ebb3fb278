"""The cube read-out (ROS-free): a learned probe of the world model's latent, latent -> cube (x, y).

`CubeReadout` is a small network fitted on play data without labels (`fit_cube_readout`, CLI `jepa
fit-readout`). The scripted push reference (jepa_actor.scripted_skill) and the push diagnostics use it; the
learned agent's planning does not.

How play labels the cube without being told where it is: the cube only moves when the hand pushes it, so a
latent step that the hand's own motion does not explain is contact. At the onset of a contact with the hand
closed, low and moving straight, the cube's centre is one contact distance ahead of the hand along its motion
(the hand's position is known from the arm's kinematics); the cube rested there since the previous contact, so
every frame back to it gets that label. Onsets are few (a couple per minute of play) and the latent
holds the cube nonlinearly (a linear map reads it 2-3 times worse than a small network, both fitted on true
positions), so the read-out is a small network, and the frames between any two contacts, labelled or not, teach
it what onsets cannot: the cube is where it was, wherever the hand goes meanwhile (their read-outs are pulled
together). False onsets give labels centimetres off: the worst fifth is dropped and the network fitted again.
"""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jepa_world_model.model import default_checkpoint_path


def default_readout_path() -> Path:
    """The cube read-out of the shipped world model (fitted by `jepa fit-readout`), next to its checkpoint."""
    return default_checkpoint_path().with_name('default_cube_readout.npz')


class ReadoutError(ValueError):
    """A cube read-out that cannot be fitted or used (too little contact in the play, another latent space,
    an unreadable file)."""


@dataclass
class ReadoutFit:
    """What fitting found in the play data (counts, and the labels' agreement with the fit)."""
    frames: int = 0
    contact_frames: int = 0
    onsets: int = 0
    labelled_frames: int = 0
    kept_frames: int = 0
    rest_intervals: int = 0
    fit_residual_m: float = float('nan')   # median over the kept labels


@dataclass
class ReadoutSettings:
    contact: float = 0.045          # cube centre ahead of the closed hand at the onset of contact, as in the simulator
    threshold_mads: float = 4.0     # contact: unexplained latent step above median + this many MADs
    quiet_before: int = 5           # no contact in the ticks before an onset
    persist: int = 1                # and contact in the ticks after it
    min_motion: float = 0.003       # metres per tick the hand must move (horizontally) at the onset
    max_opening: float = 0.03       # finger opening (sum of the two finger joints) counted as closed
    max_height: float = 0.08        # the hand this low at the onset
    hidden: int = 256               # the read-out network's two hidden layers
    rest_weight: float = 3.0        # pull between read-outs of two frames between the same two contacts
    trim_rounds: int = 1
    keep_share: float = 0.8
    readout_steps: int = 4000
    predictor_steps: int = 4000
    seed: int = 0


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def silu_network(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Two hidden layers with SiLU: the contact detector's step predictor and the read-out (which `CubeReadout`
    evaluates in numpy)."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, outputs))


@dataclass
class CubeReadout:
    """latent (D,) or (N, D) -> cube (x, y) in metres (2,) or (N, 2), for latents of one encoder: standardize,
    then dense layers (weights (in, out), bias (out,)) with SiLU between them."""
    mean_x: np.ndarray
    std_x: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    encoder_id: str
    fit: ReadoutFit = field(default_factory=ReadoutFit)

    def __call__(self, latents) -> np.ndarray:
        z = np.asarray(latents, dtype=np.float64)
        if z.shape[-1] != self.mean_x.shape[0]:
            raise ReadoutError(f'latent of size {z.shape[-1]}; the cube read-out takes {self.mean_x.shape[0]}')
        h = (z - self.mean_x) / self.std_x
        for i, (weights, bias) in enumerate(self.layers):
            h = h @ weights + bias
            if i < len(self.layers) - 1:
                h = silu(h)
        return h

    def save(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        layers = {f'{kind}{i}': array for i, layer in enumerate(self.layers) for kind, array in zip('wb', layer)}
        with open(path, 'wb') as f:  # np.savez would append .npz to a path without it
            np.savez(f, mean_x=self.mean_x, std_x=self.std_x, **layers,
                     meta=np.array(json.dumps({'encoder_id': self.encoder_id, 'layers': len(self.layers),
                                               'fit': asdict(self.fit)})))

    @classmethod
    def load(cls, path, encoder_id: str | None = None) -> 'CubeReadout':
        """The read-out stored at path; with encoder_id, refused unless it was fitted on that encoder's latents."""
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f['meta']))
                mean_x, std_x = f['mean_x'].astype(np.float64), f['std_x'].astype(np.float64)
                layers = [(f[f'w{i}'].astype(np.float64), f[f'b{i}'].astype(np.float64))
                          for i in range(int(meta['layers']))]
            readout = cls(mean_x, std_x, layers, encoder_id=str(meta['encoder_id']), fit=ReadoutFit(**meta['fit']))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReadoutError(f'{path}: not a cube read-out ({type(exc).__name__}: {exc})') from exc
        width, consistent = mean_x.shape[0], std_x.shape == mean_x.shape and bool(layers)
        for weights, bias in layers:
            consistent &= weights.ndim == 2 and weights.shape[0] == width and bias.shape == weights.shape[1:]
            width = weights.shape[-1]
        if not consistent or width != 2:
            shapes = {'mean_x': mean_x.shape, 'std_x': std_x.shape, 'layers': [(w.shape, b.shape) for w, b in layers]}
            raise ReadoutError(f'{path}: inconsistent shapes {shapes}')
        if encoder_id is not None and readout.encoder_id != encoder_id:
            raise ReadoutError(f'{path}: fitted on latents of encoder {readout.encoder_id}, the model in service '
                               f'encodes with {encoder_id}')
        return readout


def unexplained_steps(latents: np.ndarray, hand: np.ndarray, opening: np.ndarray, segment: np.ndarray,
                      settings: ReadoutSettings) -> np.ndarray:
    """Per tick k: the norm of the latent step k -> k+1 that the hand's own state and motion do not explain (a
    small network fitted to predict the step from them, with an L1 loss so that the rare contacts stay
    unexplained); 0 where k+1 is in another segment."""
    same = np.r_[segment[1:] == segment[:-1], False]
    hand_state = np.c_[hand, opening]
    features = np.c_[hand_state, np.r_[hand_state[1:], hand_state[-1:]] - hand_state].astype(np.float32)
    steps = np.r_[latents[1:] - latents[:-1], np.zeros((1, latents.shape[1]))].astype(np.float32)
    x, y = torch.from_numpy(features[same]), torch.from_numpy(steps[same])
    mean, std = x.mean(0), x.std(0) + 1e-6
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)
    net = silu_network(x.shape[1], 256, y.shape[1])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(settings.predictor_steps):
        batch = torch.randint(0, len(x), (512,), generator=generator)
        loss = (net((x[batch] - mean) / std) - y[batch]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        residual = steps - net((torch.from_numpy(features) - mean) / std).numpy()
    score = np.linalg.norm(residual, axis=1)
    score[~same] = 0.0
    return score


def contact_steps(score: np.ndarray, segment: np.ndarray, settings: ReadoutSettings) -> np.ndarray:
    """Per tick k: whether the step k -> k+1 is contact (its unexplained part is an outlier)."""
    same = np.r_[segment[1:] == segment[:-1], False]
    median = np.median(score[same])
    return score > median + settings.threshold_mads * np.median(np.abs(score[same] - median))


def contact_labels(contact: np.ndarray, hand: np.ndarray, opening: np.ndarray, segment: np.ndarray,
                   settings: ReadoutSettings) -> tuple[np.ndarray, int]:
    """Cube (x, y) labels per tick (NaN where unknown) from contact onsets; also the count of onsets."""
    s = settings
    motion = np.r_[np.diff(hand[:, :2], axis=0), np.zeros((1, 2))]
    speed = np.linalg.norm(motion, axis=1)
    labels = np.full((len(contact), 2), np.nan)
    onsets = 0
    for k in range(s.quiet_before, len(contact) - s.persist - 1):
        if not contact[k] or contact[k - s.quiet_before:k].any() or not contact[k + 1:k + 1 + s.persist].all():
            continue
        if (segment[k - s.quiet_before:k + 2] != segment[k]).any():
            continue
        if speed[k] < s.min_motion or opening[k] > s.max_opening or hand[k, 2] > s.max_height:
            continue
        straight = motion[k - 1] @ motion[k] >= 0.8 * speed[k - 1] * speed[k]
        level = abs(hand[k + 1, 2] - hand[k, 2]) <= 0.005
        if not (straight and level):
            continue
        onsets += 1
        start = k
        while start > 0 and segment[start - 1] == segment[k] and not contact[start - 1]:
            start -= 1
        labels[start:k + 1] = hand[k, :2] + s.contact * motion[k] / speed[k]
    return labels, onsets


def rest_intervals(contact: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Per tick: the id of the stretch between two contacts it lies in (the cube rests all through it), -1 for
    the ticks a contact moves the cube into or out of."""
    moving = contact | np.r_[False, contact[:-1]]
    ids = np.cumsum(np.r_[True, (segment[1:] != segment[:-1]) | moving[1:]])
    ids[moving] = -1
    return ids


class ReadoutTraining:
    """Fits the read-out network: an L1 loss on the labelled ticks plus `rest_weight` times the L1 distance
    between the read-outs of two ticks of one rest interval."""

    def __init__(self, latents: np.ndarray, intervals: np.ndarray, settings: ReadoutSettings):
        self.settings = settings
        x = torch.from_numpy(latents.astype(np.float32))
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        self.x = (x - self.mean) / self.std
        resting = np.nonzero(intervals >= 0)[0]
        resting = resting[np.argsort(intervals[resting], kind='stable')]
        sorted_ids = intervals[resting]
        starts = np.r_[0, np.nonzero(sorted_ids[1:] != sorted_ids[:-1])[0] + 1]
        ends = np.r_[starts[1:], len(resting)]
        several = ends - starts > 1
        self.resting, self.starts, self.lengths = resting, starts[several], (ends - starts)[several]

    @property
    def intervals(self) -> int:
        return len(self.starts)

    def rest_pairs(self, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        which = rng.integers(0, len(self.starts), count)
        first, second = (self.starts[which] + (rng.random(count) * self.lengths[which]).astype(int) for _ in range(2))
        return torch.from_numpy(self.resting[first]), torch.from_numpy(self.resting[second])

    def fit(self, index: np.ndarray, labels: np.ndarray) -> nn.Sequential:
        s = self.settings
        torch.manual_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        net = silu_network(self.x.shape[1], s.hidden, 2)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
        y = torch.from_numpy(labels.astype(np.float32))
        for _ in range(s.readout_steps):
            batch = torch.from_numpy(rng.integers(0, len(index), 256))
            loss = (net(self.x[index[batch]]) - y[batch]).abs().sum(1).mean()
            if s.rest_weight > 0 and self.intervals:
                first, second = self.rest_pairs(512, rng)
                loss = loss + s.rest_weight * (net(self.x[first]) - net(self.x[second])).abs().sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return net.eval()

    def residuals(self, net: nn.Sequential, index: np.ndarray, labels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.linalg.norm(net(self.x[index]).numpy() - labels, axis=1)

    def readout(self, net: nn.Sequential, encoder_id: str, fit: ReadoutFit) -> CubeReadout:
        layers = [(m.weight.detach().numpy().T.astype(np.float64), m.bias.detach().numpy().astype(np.float64))
                  for m in net if isinstance(m, nn.Linear)]
        return CubeReadout(self.mean.numpy().astype(np.float64), self.std.numpy().astype(np.float64), layers,
                           encoder_id, fit)


def fit_cube_readout(latents, hand, opening, segment, encoder_id: str,
                     settings: ReadoutSettings | None = None) -> CubeReadout:
    """The cube read-out from play: latents (N, D) of consecutive ticks, the end effector's position (N, 3)
    from the arm's kinematics, the finger opening (N,), and segment ids (N,) (ticks of one segment are
    consecutive control steps)."""
    s = settings or ReadoutSettings()
    latents, hand = np.asarray(latents, dtype=np.float64), np.asarray(hand, dtype=np.float64)
    opening, segment = np.asarray(opening, dtype=np.float64), np.asarray(segment)
    n = len(latents)
    if not (hand.shape == (n, 3) and opening.shape == (n,) and segment.shape == (n,)) or latents.ndim != 2:
        raise ReadoutError(f'expected latents (N, D), hand (N, 3), opening (N,), segment (N,); got '
                           f'{latents.shape}, {hand.shape}, {opening.shape}, {segment.shape}')
    finite = np.isfinite(latents).all(1) & np.isfinite(hand).all(1) & np.isfinite(opening)
    if not finite.all():
        raise ReadoutError(f'{int((~finite).sum())} of {n} ticks hold NaN or inf')
    contact = contact_steps(unexplained_steps(latents, hand, opening, segment, s), segment, s)
    labels, onsets = contact_labels(contact, hand, opening, segment, s)
    if onsets < 10:
        raise ReadoutError(f'the play shows {onsets} usable contact onsets (of {int(contact.sum())} contact ticks '
                           f'in {n}); the read-out needs at least 10: record more play with pushes')
    training = ReadoutTraining(latents, rest_intervals(contact, segment), s)
    labelled = np.nonzero(np.isfinite(labels[:, 0]))[0]
    keep = labelled
    net = training.fit(keep, labels[keep])
    for _ in range(s.trim_rounds):
        residual = training.residuals(net, labelled, labels[labelled])
        keep = labelled[residual < max(np.quantile(residual, s.keep_share), 0.02)]
        net = training.fit(keep, labels[keep])
    fit = ReadoutFit(n, int(contact.sum()), onsets, len(labelled), len(keep), training.intervals,
                     float(np.median(training.residuals(net, keep, labels[keep]))))
    return training.readout(net, encoder_id, fit)
