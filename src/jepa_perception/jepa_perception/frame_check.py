"""ROS-free check of camera frames before the agent encodes, remembers or learns from them.

A camera glitch must never change what the robot has learned. A frame is refused (no latent) when:

- size: its size disagrees with the camera's CameraInfo;
- statistics: its image statistics (jepa_world_model.image_statistics: brightness, contrast, roughness at the
  encoder's input size) are outside the absolute limits (no contrast, mostly pixel noise) or far from those of
  the images the encoder was trained on;
- frozen: it is identical to the previous frame while the arm's joint states show the arm moved since that
  picture was first seen, beyond `still_tolerance`: a live camera would have shown the motion. Identical frames
  while the arm is still are a still scene (a simulator renders a held arm identically, an arm resting at its
  goal) and are accepted as normal observations: the critic and the world model need those states too. When no
  joint state tells whether the arm moved, an identical frame is refused: it cannot be told from a frozen camera.
  A picture first seen before the joint state of its own instant arrived (the frame and that state are processed
  in either order) takes its joints from its first repeat, that frame refused: the joint state nearest before it
  may be another pose altogether (a reset teleports the arm between two joint states), and judged against that
  pose, every frame of the arm holding still would be refused as frozen.

The statistics' reference is the checkpoint's record of its training images (metrics `image_statistics`, which
`jepa train` writes) when it has one. Otherwise it is derived from the first `reference_frames` distinct frames
that pass the absolute limits, on the premise that a camera starts out showing the scene it was trained on
(robust median and scale, see jepa_world_model.image_statistics). It is not updated afterwards, so a burst of
bad frames can never shift it.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np
from jepa_common.settings import check_spans, setting
from jepa_world_model.image_statistics import STATISTICS, ImageReference, image_statistics

__all__ = ['STATISTICS', 'FrameCheck', 'FrameCheckConfig', 'ImageReference', 'JointHistory', 'Verdict',
           'image_statistics']


@dataclass
class FrameCheckConfig:
    """Perception's parameters `frame_check.*`. Read-only on a running node: the reference and the refusal
    counts were judged under these values."""
    tolerance: float = setting(
        5.0, "a statistic is implausible beyond max(tolerance x the reference's robust scale, min_band) from its "
             "median", (0.1, 1000.0))
    min_band: list[float] = setting(
        [40.0, 1.0, 1.0], "the least band around the reference's median, per statistic: grey levels of brightness, "
                          "log2 contrast, log2 roughness (a still scene has a scale near 0; lighting and what is in "
                          "view change more than that)")
    min_contrast: float = setting(
        2.0, 'grey levels: a frame with less contrast shows nothing (black, covered lens)', (0.0, 255.0))
    max_roughness: float = setting(
        0.5, 'neighbour differences over contrast above which a frame is mostly pixel noise (noise is about 1.1, '
             'a scene far smoother)', (0.01, 10.0))
    reference_frames: int = setting(
        50, 'distinct plausible frames that derive the reference when the checkpoint records none', (1, 100000))
    # A holding arm settles by about a milliradian, and a motion that moves the hand less than a pixel of the
    # camera's view leaves the frame identical; 0.01 rad moves the Panda's hand about 6 mm, while a moving arm
    # passes it within a control period, so a frozen camera is still caught at once.
    still_tolerance: float = setting(
        0.01, 'largest joint motion (rad, m for prismatic joints) since a picture was first seen for which an '
              'identical frame is a still scene; beyond it the camera is frozen', (0.0, 1.0))

    def __post_init__(self):
        check_spans(self)
        self.min_band = [float(v) for v in self.min_band]
        if len(self.min_band) != len(STATISTICS) or min(self.min_band) < 0:
            raise ValueError(f'min_band needs {len(STATISTICS)} values >= 0 ({", ".join(STATISTICS)}), '
                             f'got {self.min_band!r}')


@dataclass
class Verdict:
    """Why a frame is refused: kind ('' = accepted, 'size', 'frozen', 'statistics') and what was wrong."""
    kind: str = ''
    reason: str = ''

    def __bool__(self) -> bool:
        return not self.kind


class JointHistory:
    """The arm's recent joint positions by stamp (seconds), so that a camera frame is judged and encoded with
    the joints of its own instant, not of the moment it is processed (frames wait in a queue while the arm
    moves on)."""

    def __init__(self, span: float = 2.0, maxlen: int = 4096):
        self.span = span
        self._items: collections.deque = collections.deque(maxlen=maxlen)  # (stamp, positions), stamps ascending

    def add(self, stamp: float, positions) -> None:
        if self._items and stamp < self._items[-1][0]:
            self._items.clear()  # time went backwards (a replay restarted, a simulation reset its clock)
        self._items.append((stamp, np.asarray(positions, dtype=np.float64)))
        while self._items[0][0] < stamp - self.span:
            self._items.popleft()

    def at(self, stamp: float, max_offset: float) -> np.ndarray | None:
        """The positions stamped nearest `stamp`, None when none is within max_offset of it."""
        best = None
        for item_stamp, positions in reversed(self._items):
            offset = abs(item_stamp - stamp)
            if best is None or offset < best[0]:
                best = (offset, positions)
            if item_stamp < stamp - max_offset:
                break  # older ones are further still
        return best[1] if best is not None and best[0] <= max_offset else None

    def latest(self) -> np.ndarray | None:
        return self._items[-1][1] if self._items else None

    def settled(self, stamp: float) -> bool:
        """Whether a joint state stamped at or after `stamp` has arrived: then the one nearest `stamp` is known, not
        still on its way."""
        return bool(self._items) and self._items[-1][0] >= stamp


class FrameCheck:
    """Judges each camera frame in arrival order; `counts` holds the refusals per kind. `latent` is the whole
    decision for a frame, as perception makes it: a refused frame gives no latent, an accepted one its own."""

    KINDS = ('size', 'frozen', 'statistics')

    def __init__(self, config: FrameCheckConfig | None = None):
        self.config = config or FrameCheckConfig()
        self.reference: ImageReference | None = None
        self.expected_size: tuple[int, int] | None = None  # (width, height) the camera says it sends
        self.counts = dict.fromkeys(self.KINDS, 0)
        self._previous: np.ndarray | None = None
        self._picture_joints: np.ndarray | None = None  # the arm's joints when the current picture was first seen
        self._gathered: list[np.ndarray] = []
        self._from_checkpoint = False

    def latent(self, encoder, rgb: np.ndarray, joints: np.ndarray | None = None,
               settled: bool = True) -> tuple[np.ndarray | None, Verdict]:
        """(latent or None, verdict) of one (H, W, 3) uint8 camera frame through `encoder` (an ImageEncoder).
        joints: the arm's joint positions at the frame's stamp (in the encoder's proprioception order), None
        when unknown; settled: False while they are those nearest before the stamp and the joint state of its own
        instant may still arrive (JointHistory.settled). Raises ValueError or RuntimeError as the encoder does; the
        frame then counts as not encoded."""
        verdict = self.check_size(rgb)
        if verdict:
            image, _ = encoder.prepare(rgb)
            verdict = self.check(rgb, image, joints, settled)
        if not verdict:
            return None, verdict
        proprio = None if joints is None else np.asarray(joints, dtype=np.float32)[None]
        return encoder.encode_batch(image[None], proprio)[0], verdict

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

    def check(self, rgb: np.ndarray, image: np.ndarray, joints: np.ndarray | None = None,
              settled: bool = True) -> Verdict:
        """rgb: the camera's frame; image: the same at the encoder's input size; joints: the arm's joint
        positions at the frame's stamp, None when unknown; settled: as in `latent`. Call check_size first. A frame
        both implausible and frozen (a black screen held) is named by its statistics."""
        repeated = self._previous is not None and np.array_equal(rgb, self._previous)
        self._previous = rgb
        joints = None if joints is None else np.array(joints, dtype=np.float64)
        if not repeated:
            self._picture_joints = joints if settled else None
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
        if repeated:
            moved = self._arm_moved(joints)
            if moved:
                return self._refuse('frozen', f'identical to the previous frame {moved}')
        elif self.reference is None:
            # Distinct pictures only: a still scene repeated would make the reference as narrow as one frame.
            self._gathered.append(stats)
            if len(self._gathered) >= c.reference_frames:
                self.reference = ImageReference.of(np.stack(self._gathered),
                                                   f'the first {c.reference_frames} plausible frames')
                self._gathered = []
        return Verdict()

    def _arm_moved(self, joints: np.ndarray | None) -> str:
        """Why a repeated picture is a frozen camera ('' when the arm stood still since it was first seen)."""
        if joints is None:
            return 'and no joint state tells whether the arm moved'
        if self._picture_joints is None or self._picture_joints.shape != joints.shape:
            # Judged from here on: the joints when the picture was first seen are unknown. Those of its first
            # repeat are taken even if not settled: a joint-state stream stamped behind the camera's would
            # otherwise leave a still scene refused for ever, and a frame later a reset's jump has arrived.
            self._picture_joints = joints
            return 'and no joint state tells whether the arm moved since the picture was first seen'
        motion = float(np.max(np.abs(joints - self._picture_joints))) if joints.size else 0.0
        if motion > self.config.still_tolerance:
            return f'while the arm moved (a joint by {motion:.4g} since the picture was first seen)'
        return ''

    def _refuse(self, kind: str, reason: str) -> Verdict:
        self.counts[kind] += 1
        return Verdict(kind, reason)


def _describe(stats) -> str:
    return 'brightness {:.1f}, log2 contrast {:.2f}, log2 roughness {:.2f}'.format(*stats)
