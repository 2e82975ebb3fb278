"""ROS-free check of camera frames before the agent encodes, remembers or learns from them.

A camera glitch must never change what the robot has learned: a frame is refused when its size disagrees with
the camera's CameraInfo, when it is frozen (identical to the previous frame), or when its image statistics are
far outside those of the images the encoder was trained on. The statistics are computed at the encoder's input
size, so that they do not depend on the camera's resolution:

- brightness: the mean grey level (0-255);
- contrast: log2 of the grey levels' standard deviation (a black or blank frame has none);
- roughness: log2 of the mean absolute difference of neighbouring pixels over that standard deviation: about
  1.1 for pixel noise of any amplitude, 0.06-0.08 for the simulator's camera, whatever it looks at.

The reference is the checkpoint's record of its training images' statistics (metrics `image_statistics`, as
`ImageReference.to_dict` writes it) when it has one. Otherwise it is derived from the first
`reference_frames` frames that pass the absolute limits (some contrast, no pixel noise), on the premise that a
camera starts out showing the scene it was trained on: their median, and 1.4826 x their median absolute
deviation as the scale (the standard deviation for normal data, unmoved by a minority of outliers). It is not
updated afterwards, so a burst of bad frames can never shift it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STATISTICS = ('brightness', 'contrast', 'roughness')
_MAD_TO_SIGMA = 1.4826


def image_statistics(image: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 at the encoder's input size -> [brightness, contrast, roughness] (see the module doc)."""
    grey = image.astype(np.float32).mean(axis=2)
    deviation = float(grey.std())
    steps = (np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()) / 2
    # Floors keep the logs finite: a constant frame has contrast 0 and no roughness to speak of.
    return np.array([grey.mean(), math.log2(max(deviation, 1.0)), math.log2(max(steps / max(deviation, 1.0), 1e-3))])


@dataclass
class ImageReference:
    """The statistics of the images the encoder saw: their medians and robust scales."""
    median: np.ndarray
    scale: np.ndarray
    source: str

    @classmethod
    def of(cls, statistics: np.ndarray, source: str) -> 'ImageReference':
        """From rows of image_statistics."""
        statistics = np.asarray(statistics, dtype=np.float64).reshape(-1, len(STATISTICS))
        median = np.median(statistics, axis=0)
        return cls(median, _MAD_TO_SIGMA * np.median(np.abs(statistics - median), axis=0), source)

    @classmethod
    def from_checkpoint(cls, metrics: dict, source: str) -> 'ImageReference | None':
        """The reference a checkpoint's metrics record, None when they record none; ValueError when malformed."""
        record = metrics.get('image_statistics')
        if record is None:
            return None
        try:
            median, scale = (np.asarray(record[k], dtype=np.float64) for k in ('median', 'scale'))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f'{source}: image_statistics must hold median and scale: {exc}') from exc
        if median.shape != (len(STATISTICS),) or scale.shape != median.shape or not np.all(np.isfinite(median)):
            raise ValueError(f'{source}: image_statistics must hold {len(STATISTICS)} finite medians and scales')
        return cls(median, scale, source)

    def to_dict(self) -> dict:
        return {'statistics': list(STATISTICS), 'median': self.median.tolist(), 'scale': self.scale.tolist()}


@dataclass
class FrameCheckConfig:
    # A statistic is implausible beyond max(tolerance x the reference's scale, min_band) from its median.
    tolerance: float = 5.0
    # The least band, per statistic: 40 grey levels of brightness, a factor 2 of contrast and of roughness (a
    # still scene has a scale near 0; lighting and what is in view change more than that).
    min_band: tuple = (40.0, 1.0, 1.0)
    # Absolute limits, also before a reference exists: a frame with less contrast (grey levels) shows nothing,
    # one rougher than this is mostly pixel noise (a scene is far smoother: see the module doc).
    min_contrast: float = 2.0
    max_roughness: float = 0.5
    # Frames that derive the reference when the checkpoint records none.
    reference_frames: int = 50

    def validate(self) -> None:
        if len(self.min_band) != len(STATISTICS) or min(self.min_band) < 0:
            raise ValueError(f'min_band needs {len(STATISTICS)} values >= 0 ({", ".join(STATISTICS)})')
        if self.tolerance <= 0 or self.reference_frames < 1:
            raise ValueError('tolerance must be > 0 and reference_frames >= 1')


@dataclass
class Verdict:
    """Why a frame is refused: kind ('' = accepted, 'size', 'frozen', 'statistics') and what was wrong."""
    kind: str = ''
    reason: str = ''

    def __bool__(self) -> bool:
        return not self.kind


class FrameCheck:
    """Judges each camera frame in arrival order; `counts` holds the refusals per kind. `latent` is the whole
    decision for a frame, as perception makes it: a refused frame gives no latent, a frozen one the previous
    frame's latent again, bit for bit, when that frame was encoded by the same model (the world model and the
    short-term memory take a repeated latent for no new observation), an accepted one its own."""

    KINDS = ('size', 'frozen', 'statistics')

    def __init__(self, config: FrameCheckConfig | None = None):
        self.config = config or FrameCheckConfig()
        self.config.validate()
        self.reference: ImageReference | None = None
        self.expected_size: tuple[int, int] | None = None  # (width, height) the camera says it sends
        self.counts = dict.fromkeys(self.KINDS, 0)
        self._previous: np.ndarray | None = None
        self._previous_latent: tuple[str, np.ndarray] | None = None  # (model id, latent) of the previous frame
        self._gathered: list[np.ndarray] = []
        self._from_checkpoint = False

    def latent(self, encoder, rgb: np.ndarray, proprio: np.ndarray | None = None) -> tuple[np.ndarray | None, Verdict]:
        """(latent or None, verdict) of one (H, W, 3) uint8 camera frame through `encoder` (an ImageEncoder).
        Raises ValueError or RuntimeError as the encoder does; the frame then counts as not encoded."""
        previous, self._previous_latent = self._previous_latent, None
        verdict = self.check_size(rgb)
        if verdict:
            image, _ = encoder.prepare(rgb)
            verdict = self.check(rgb, image)
        if verdict.kind == 'frozen' and previous is not None and previous[0] == encoder.model_id:
            self._previous_latent = previous
            return previous[1], verdict
        if not verdict:
            return None, verdict
        latent = encoder.encode_batch(image[None], proprio)[0]
        self._previous_latent = (encoder.model_id, latent)
        return latent, verdict

    def use_checkpoint(self, metrics: dict, source: str) -> str:
        """A model loaded: its recorded training statistics become the reference; without them a reference
        derived from the stream stays (it describes the camera, not the model). Returns what is wrong with a
        malformed record ('' when none), which leaves the reference derived from the stream."""
        try:
            reference = ImageReference.from_checkpoint(metrics, source)
        except ValueError as exc:
            reference, problem = None, str(exc)
        else:
            problem = ''
        if reference is not None:
            self.reference, self._from_checkpoint = reference, True
        elif self._from_checkpoint:
            self.reference, self._from_checkpoint, self._gathered = None, False, []
        return problem

    def check_size(self, rgb: np.ndarray) -> Verdict:
        if self.expected_size is not None and (rgb.shape[1], rgb.shape[0]) != self.expected_size:
            return self._refuse('size', f'image is {rgb.shape[1]}x{rgb.shape[0]}, the camera info says '
                                        f'{self.expected_size[0]}x{self.expected_size[1]}')
        return Verdict()

    def check(self, rgb: np.ndarray, image: np.ndarray) -> Verdict:
        """rgb: the camera's frame; image: the same at the encoder's input size. Call check_size first. A frame
        both implausible and frozen (a black screen held) is named by its statistics."""
        frozen = self._previous is not None and np.array_equal(rgb, self._previous)
        self._previous = rgb
        stats = image_statistics(image)
        c = self.config
        if stats[1] < math.log2(c.min_contrast) or stats[2] > math.log2(c.max_roughness):
            return self._refuse('statistics', f'{_describe(stats)}: outside the absolute limits (contrast >= '
                                              f'{c.min_contrast} grey levels, roughness <= {c.max_roughness})')
        if self.reference is not None:
            band = np.maximum(c.tolerance * self.reference.scale, c.min_band)
            outside = [name for name, value, median, width in zip(STATISTICS, stats, self.reference.median, band)
                       if abs(value - median) > width]
            if outside:
                return self._refuse('statistics', f'{_describe(stats)}: {", ".join(outside)} outside '
                                                  f'{_describe(self.reference.median)} +- {_describe(band)} '
                                                  f'({self.reference.source})')
        if frozen:
            return self._refuse('frozen', 'identical to the previous frame')
        if self.reference is None:
            self._gathered.append(stats)
            if len(self._gathered) >= c.reference_frames:
                self.reference = ImageReference.of(np.stack(self._gathered),
                                                   f'the first {c.reference_frames} plausible frames')
                self._gathered = []
        return Verdict()

    def _refuse(self, kind: str, reason: str) -> Verdict:
        self.counts[kind] += 1
        return Verdict(kind, reason)


def _describe(stats) -> str:
    return 'brightness {:.1f}, log2 contrast {:.2f}, log2 roughness {:.2f}'.format(*stats)
