"""Training data from rosbag2 bags: camera + joint states (+ actions, + privileged poses) on a fixed control grid.

Any bag (mcap or sqlite3) with /camera/image_raw and /joint_states works, including bags from other tools:

- With /jepa/action (ActionStamped, space ee_delta) each action message is a control tick; the state of the
  tick is the latest image / joint state at (or just after, within `STAMP_TOLERANCE`) the action's stamp.
- Without it, ticks are laid every `dt` seconds, and the action of tick k is derived from the recorded motion:
  the end-effector displacement FK(q_{k+1}) - FK(q_k) clipped to the action bound, and the gripper command
  from the finger joints.

Each topic of a bag has one time base: its header stamps (a zero stamp included: sim time starts at 0), or,
when no message of the topic is stamped (all zero), the times the recorder received them. Stamps that mix
clocks (sim time and wall-clock time) are refused, naming the topic; the control grid is laid only where there
are samples, so no allocation depends on how far apart stamps are.

Ticks are cut into segments wherever the data cannot be a single control step (no fresh image, an action gap
far from dt, an end-effector jump no action could make, e.g. a reset); training windows never cross segments.
Every problem is a jepa_rosbag BagError naming the bag, the topic and what is wrong. Decoded ticks are
cached as an .npz keyed by the bag's files (name, size, mtime) and the decoding settings, so repeated
training does not decode the bag again.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jepa_rosbag.reader import BagError, BagReader

from jepa_world_model.model import resize_rgb

DATASET_VERSION = 2   # part of the cache key: raised whenever decoding changes, so older caches are not reused
DT = 0.1
IMAGE_TOPIC = '/camera/image_raw'
JOINT_TOPIC = '/joint_states'
ACTION_TOPIC = '/jepa/action'
EE_TOPIC = '/sim/ee_pose'
CUBE_TOPIC = '/sim/cube_pose'
TOPIC_TYPES = {
    IMAGE_TOPIC: 'sensor_msgs/msg/Image',
    JOINT_TOPIC: 'sensor_msgs/msg/JointState',
    ACTION_TOPIC: 'jepa_interfaces/msg/ActionStamped',
    EE_TOPIC: 'geometry_msgs/msg/PoseStamped',
    CUBE_TOPIC: 'geometry_msgs/msg/PoseStamped',
}
REQUIRED_TOPICS = (IMAGE_TOPIC, JOINT_TOPIC)
# An image or joint state may be stamped this much after the tick it belongs to (publish jitter).
STAMP_TOLERANCE = 0.005
# A tick whose newest image or joint state is older than this has no valid observation.
MAX_STALENESS = 1.0 * DT
# Between two ticks the end effector cannot move further than this along an axis under one action.
MAX_JUMP_STEPS = 3.0
# Two stamps of one topic this far apart (11.6 days) come from two clocks, not from one recording: sim time
# counts from 0, wall-clock time from 1970 (1.7e9 s), and an unset stamp is 0.
MIXED_CLOCKS_GAP_S = 1e6
HEADER_STAMPS, RECEIVE_TIMES = 'header stamps', 'receive times'


@dataclass
class Ticks:
    """Per-control-tick arrays of one or more bags. actions[k] is the action taken at tick k (towards tick
    k+1); it is meaningful only where tick k+1 is in the same segment."""
    images: np.ndarray            # (N, S, S, 3) uint8
    actions: np.ndarray           # (N, 4) float32
    proprio: np.ndarray           # (N, 9) float32: 7 arm + 2 finger joint positions
    ee: np.ndarray                # (N, 3) float32, metres; NaN where unknown
    cube: np.ndarray              # (N, 3) float32, metres; NaN where unknown
    segment: np.ndarray           # (N,) int64
    stamps: np.ndarray            # (N,) float64 seconds
    sources: list = field(default_factory=list)   # per bag: path, files sha256, action source, ticks

    def __len__(self) -> int:
        return len(self.stamps)

    def windows(self, length: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """Start indices of all windows of `length` consecutive ticks within one segment (and, if given,
        within the ticks where `allowed` is true)."""
        if len(self) < length:
            return np.zeros(0, dtype=np.int64)
        segment = self.segment if allowed is None else np.where(allowed, self.segment, -1 - np.arange(len(self)))
        same = segment[length - 1:] == segment[:len(self) - length + 1]
        starts = np.flatnonzero(same)
        if allowed is not None:
            starts = starts[allowed[starts]]
        return starts.astype(np.int64)

    def holdout_mask(self, fraction: float) -> np.ndarray:
        """True for the last `fraction` of the ticks of every segment: a held-out tail per continuous
        stretch, so that validation windows share no tick with training windows."""
        held = np.zeros(len(self), dtype=bool)
        for seg in np.unique(self.segment):
            idx = np.flatnonzero(self.segment == seg)
            n_held = int(round(len(idx) * fraction))
            if n_held:
                held[idx[-n_held:]] = True
        return held


def concat(parts: list[Ticks]) -> Ticks:
    """Ticks of several bags as one; segment ids are renumbered so no window crosses bags."""
    if not parts:
        raise ValueError('no bags given')
    offset, segments = 0, []
    for part in parts:
        segments.append(part.segment - part.segment.min() + offset if len(part) else part.segment)
        offset = int(segments[-1].max()) + 1 if len(part) else offset
    return Ticks(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                   ('images', 'actions', 'proprio', 'ee', 'cube')),
                 segment=np.concatenate(segments), stamps=np.concatenate([p.stamps for p in parts]),
                 sources=[s for p in parts for s in p.sources])


# ---------------------------------------------------------------- bag access

def read_bag_messages(bag: Path, topics: tuple[str, ...]):
    """Yield (topic, timestamp_ns, message) for those of `topics` the bag has, in time order; BagError if
    a required topic is missing or has an unexpected type."""
    with BagReader(bag) as reader:
        present = {name: topic.msgtype for name, topic in reader.topics.items()}
        missing = [t for t in REQUIRED_TOPICS if t not in present]
        if missing:
            raise BagError(f'bag {bag}: topic(s) {", ".join(missing)} missing (it has: {", ".join(sorted(present))})')
        for topic in topics:
            if topic in present and present[topic] != TOPIC_TYPES[topic]:
                raise BagError(f'bag {bag}: topic {topic} has type {present[topic]}, expected {TOPIC_TYPES[topic]}')
        for message in reader.messages([t for t in topics if t in present]):
            yield message.topic, message.timestamp_ns, message.message


def bag_files(bag: Path) -> list[Path]:
    bag = Path(bag)
    return sorted(p for p in bag.iterdir() if p.is_file()) if bag.is_dir() else [bag]


def files_sha256(bag: Path) -> dict:
    """sha256 of every file of the bag (metadata.yaml and storage files), for provenance."""
    digests = {}
    for path in bag_files(bag):
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                h.update(chunk)
        digests[path.name] = h.hexdigest()
    return digests


# ---------------------------------------------------------------- decoding

def time_base(bag: Path, topic: str, header: np.ndarray, received: np.ndarray) -> tuple[str, np.ndarray]:
    """The time base of one topic in one bag and its stamps (s): the header stamps, or the receive times when
    no message is stamped (all zero). BagError if the stamps mix clocks."""
    name, stamps = (HEADER_STAMPS, header) if np.any(header != 0) else (RECEIVE_TIMES, received)
    ordered = np.sort(stamps)
    gaps = np.diff(ordered)
    if len(gaps) and gaps.max() > MIXED_CLOCKS_GAP_S:
        k = int(np.argmax(gaps)) + 1
        raise BagError(f'bag {bag}: the {name} of {topic} mix clocks: {k} in {ordered[0]:.1f}..{ordered[k - 1]:.1f} s '
                       f'and {len(ordered) - k} in {ordered[k]:.1f}..{ordered[-1]:.1f} s (sim time and wall-clock '
                       'time? an unset stamp among set ones?); one topic needs one clock')
    return name, stamps


def _grid_near(stamps: np.ndarray, first: float, last: float, dt: float) -> np.ndarray:
    """The points first + k*dt (up to last) with a sample of `stamps` fresh enough for them (at most
    MAX_STALENESS before, or STAMP_TOLERANCE after): the only candidates for ticks, a few per sample however
    far apart the samples are."""
    low = np.ceil((stamps - STAMP_TOLERANCE - first) / dt - 1e-6)
    span = int(np.ceil((MAX_STALENESS + STAMP_TOLERANCE) / dt)) + 1
    k = (low[:, None] + np.arange(span)).ravel()
    k = np.unique(k[(k >= 0) & (k <= np.floor((last - first) / dt + 1e-6))])
    return first + k * dt


def _latest(stamps: np.ndarray, ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the newest sample at or before each tick (+ tolerance), and whether it is fresh."""
    idx = np.searchsorted(stamps, ticks + STAMP_TOLERANCE, side='right') - 1
    valid = idx >= 0
    idx = np.clip(idx, 0, None)
    return idx, valid & (ticks - stamps[idx] <= MAX_STALENESS)


def _select_action_ticks(stamps: np.ndarray, dt: float) -> np.ndarray:
    """Indices of action messages one control period apart (actions recorded faster than 1/dt are thinned)."""
    keep, last = [], -np.inf
    for i, t in enumerate(stamps):
        if t >= last + 0.5 * dt:
            keep.append(i)
            last = t
    return np.asarray(keep, dtype=np.int64)


def decode_bag(bag, image_size: int = 64, dt: float = DT) -> Ticks:
    """Read and align one bag (no cache). Raises BagError naming the bag, topic and problem."""
    from jepa_common.conversions import joint_positions, image_to_rgb
    from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_FINGER_JOINTS, ArmKinematics

    bag = Path(bag)
    joints = (*PANDA_ARM_JOINTS, *PANDA_FINGER_JOINTS)
    data = {t: ([], [], []) for t in TOPIC_TYPES}     # topic -> (header stamps, receive times, values)
    counts = dict.fromkeys(TOPIC_TYPES, 0)
    skipped = dict.fromkeys(TOPIC_TYPES, 0)
    for topic, log_time, msg in read_bag_messages(bag, tuple(TOPIC_TYPES)):
        n = counts[topic]
        counts[topic] += 1
        try:
            if topic == IMAGE_TOPIC:
                value = resize_rgb(np.ascontiguousarray(image_to_rgb(msg)), image_size)
            elif topic == JOINT_TOPIC:
                value = joint_positions(msg, joints)
            elif topic == ACTION_TOPIC:
                if msg.space != 'ee_delta':
                    raise ValueError(f'action space {msg.space!r}, expected "ee_delta"')
                value = np.asarray(msg.data, dtype=np.float64)
                if value.shape != (4,) or not np.all(np.isfinite(value)):
                    raise ValueError(f'expected 4 finite values [dx, dy, dz, gripper], got {value.tolist()}')
            else:
                p = msg.pose.position
                value = np.array([p.x, p.y, p.z])
                if not np.all(np.isfinite(value)):
                    raise ValueError('position contains NaN or inf')
        except ValueError as exc:
            if 'NaN' in str(exc):
                # One non-finite sample is skipped (its tick then has no fresh data and cuts the segment);
                # anything structural (encoding, joint names, action space) makes the bag unusable.
                skipped[topic] += 1
                continue
            raise BagError(f'bag {bag}: {topic} message #{n}: {exc}') from exc
        data[topic][0].append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
        data[topic][1].append(log_time * 1e-9)
        data[topic][2].append(value)
    for topic in REQUIRED_TOPICS:
        if not data[topic][0]:
            raise BagError(f'bag {bag}: topic {topic} has no messages')
    bases = {topic: time_base(bag, topic, np.asarray(header, dtype=np.float64), np.asarray(received))
             for topic, (header, received, _) in data.items() if header}

    def arrays(topic):
        stamps = bases[topic][1]
        order = np.argsort(stamps, kind='stable')
        values = data[topic][2]
        return stamps[order], ([values[i] for i in order] if topic == IMAGE_TOPIC else
                               np.asarray(values, dtype=np.float64).reshape(len(values), -1)[order])

    def described(topic):
        stamps = bases[topic][1]
        return f'{topic} ({bases[topic][0]} {stamps.min():.1f}..{stamps.max():.1f} s)'

    img_t, images = arrays(IMAGE_TOPIC)
    joint_t, q = arrays(JOINT_TOPIC)
    first = max(img_t[0], joint_t[0])
    last = min(img_t[-1], joint_t[-1])
    if last - first < dt:
        raise BagError(f'bag {bag}: {described(IMAGE_TOPIC)} and {described(JOINT_TOPIC)} overlap for '
                       f'{max(last - first, 0):.2f} s, less than one control period'
                       + (': the topics use different clocks' if last < first else ''))
    for topic in (ACTION_TOPIC, EE_TOPIC, CUBE_TOPIC):
        if topic in bases and (bases[topic][1].max() < first - 1.0 or bases[topic][1].min() > last + 1.0):
            raise BagError(f'bag {bag}: {described(topic)} does not overlap {described(IMAGE_TOPIC)} and '
                           f'{described(JOINT_TOPIC)}: the topics use different clocks')

    recorded = ACTION_TOPIC in bases
    if recorded:
        act_t, act = arrays(ACTION_TOPIC)
        chosen = _select_action_ticks(act_t, dt)
        act_t, act = act_t[chosen], act[chosen]
        inside = (act_t >= first - STAMP_TOLERANCE) & (act_t <= last + STAMP_TOLERANCE)
        ticks, actions = act_t[inside], act[inside]
    else:
        ticks = _grid_near(img_t, first, last, dt)
    if len(ticks) < 2:
        raise BagError(f'bag {bag}: fewer than 2 control ticks (actions inside the camera/joint time range: '
                       f'{len(ticks)})')

    img_idx, img_fresh = _latest(img_t, ticks)
    q_idx, q_fresh = _latest(joint_t, ticks)
    valid = img_fresh & q_fresh
    ticks, img_idx, q_idx = ticks[valid], img_idx[valid], q_idx[valid]
    # Consecutive ticks form one control step only if they are one period apart (none dropped between).
    gap_ok = np.abs(np.diff(ticks) - dt) <= 0.5 * dt
    if recorded:
        actions = actions[valid]
    proprio = q[q_idx]

    kinematics = ArmKinematics()
    fk = kinematics.fk(proprio[:, :7])
    step = np.diff(fk, axis=0)
    gap_ok &= np.all(np.abs(step) <= MAX_JUMP_STEPS * kinematics.max_step, axis=1)
    if not recorded:
        fingers = proprio[:, 7:9]
        opening = np.diff(fingers.sum(axis=1))
        gripper = np.where(opening > 1e-3, 1.0, np.where(opening < -1e-3, -1.0,
                                                          np.sign(kinematics.fingers_to_gripper(fingers[1:]))))
        actions = np.zeros((len(ticks), 4))
        actions[:-1] = kinematics.clip_action(np.c_[step, gripper])
    segment = np.concatenate([[0], np.cumsum(~gap_ok)]).astype(np.int64)

    def pose_at(topic):
        if topic not in bases:
            return np.full((len(ticks), 3), np.nan)
        stamps, values = arrays(topic)
        idx, fresh = _latest(stamps, ticks)
        return np.where(fresh[:, None], values[idx], np.nan)

    ee = pose_at(EE_TOPIC)
    # Without the privileged pose the forward kinematics of the recorded joints is the best ee estimate.
    ee = np.where(np.isnan(ee), fk, ee)
    source = {'path': str(bag.resolve()), 'sha256': files_sha256(bag),
              'actions': 'recorded' if recorded else 'derived_from_joint_motion', 'ticks': int(len(ticks)),
              'messages': {t: c for t, c in counts.items() if c},
              'time_bases': {t: base for t, (base, _) in bases.items()},
              'skipped_non_finite': {t: c for t, c in skipped.items() if c}}
    return Ticks(images=np.stack([images[i] for i in img_idx]).astype(np.uint8),
                 actions=actions.astype(np.float32), proprio=proprio.astype(np.float32),
                 ee=ee.astype(np.float32), cube=pose_at(CUBE_TOPIC).astype(np.float32),
                 segment=segment, stamps=ticks, sources=[source])


# ---------------------------------------------------------------- cache

def default_cache_dir() -> Path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'jepa_world_model'


def _cache_key(bag: Path, image_size: int, dt: float) -> str:
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in bag_files(bag)]
    blob = json.dumps([DATASET_VERSION, str(bag.resolve()), stats, image_size, dt])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_bag(bag, cache_dir=None, image_size: int = 64, dt: float = DT) -> Ticks:
    """Ticks of one bag, decoded once and then read from the .npz cache (cache_dir None: the user cache)."""
    bag = Path(bag)
    if not bag.exists():
        raise BagError(f'bag {bag}: no such bag')
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = cache_dir / f'{bag.resolve().name}-{_cache_key(bag, image_size, dt)}.npz'
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                return Ticks(**{k: f[k] for k in ('images', 'actions', 'proprio', 'ee', 'cube', 'segment',
                                                  'stamps')}, sources=json.loads(str(f['sources'])))
        except (OSError, ValueError, KeyError):
            pass   # a damaged cache file is simply rebuilt
    ticks = decode_bag(bag, image_size, dt)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f'.{cache.name}.tmp{os.getpid()}.npz')
    np.savez(tmp, images=ticks.images, actions=ticks.actions, proprio=ticks.proprio, ee=ticks.ee, cube=ticks.cube,
             segment=ticks.segment, stamps=ticks.stamps, sources=np.array(json.dumps(ticks.sources)))
    os.replace(tmp, cache)
    return ticks


def load_bags(bags, cache_dir=None, image_size: int = 64, dt: float = DT) -> Ticks:
    return concat([load_bag(b, cache_dir, image_size, dt) for b in bags])
