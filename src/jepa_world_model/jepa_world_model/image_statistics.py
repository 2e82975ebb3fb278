"""Image statistics of camera frames (ROS-free): what the encoder's training images look like, in three numbers.

`jepa train` records the statistics of its training images in the checkpoint's metrics (`image_statistics`, as
`ImageReference.to_dict` writes it); perception's frame check compares live frames against that record, so that
frames far from anything the encoder was trained on are refused instead of encoded. The statistics are computed
at the encoder's input size, so that they do not depend on the camera's resolution:

- brightness: the mean grey level (0-255);
- contrast: log2 of the grey levels' standard deviation (a black or blank frame has none);
- roughness: log2 of the mean absolute difference of neighbouring pixels over that standard deviation: about
  1.1 for pixel noise of any amplitude, 0.06-0.08 for the simulator's camera, whatever it looks at.

A reference is the statistics' median and 1.4826 x their median absolute deviation as the scale (the standard
deviation for normal data, unmoved by a minority of outliers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STATISTICS = ('brightness', 'contrast', 'roughness')
METRICS_KEY = 'image_statistics'  # where a checkpoint's metrics hold the record of its training images
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
    def of_images(cls, images: np.ndarray, source: str, count: int = 4096) -> 'ImageReference':
        """From (N, S, S, 3) uint8 images at the encoder's input size: up to `count` of them, evenly spaced
        (the median and MAD of a few thousand frames are as good as of all of them)."""
        if len(images) == 0:
            raise ValueError('no images to take statistics of')
        index = np.unique(np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int))
        return cls.of(np.stack([image_statistics(images[i]) for i in index]), source)

    @classmethod
    def from_checkpoint(cls, metrics: dict, source: str) -> 'ImageReference | None':
        """The reference a checkpoint's metrics record, None when they record none; ValueError when malformed."""
        record = metrics.get(METRICS_KEY)
        if record is None:
            return None
        try:
            median, scale = (np.asarray(record[k], dtype=np.float64) for k in ('median', 'scale'))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f'{source}: {METRICS_KEY} must hold median and scale: {exc}') from exc
        if median.shape != (len(STATISTICS),) or scale.shape != median.shape or not np.all(np.isfinite(median)):
            raise ValueError(f'{source}: {METRICS_KEY} must hold {len(STATISTICS)} finite medians and scales')
        return cls(median, scale, source)

    def to_dict(self) -> dict:
        return {'statistics': list(STATISTICS), 'median': self.median.tolist(), 'scale': self.scale.tolist()}
