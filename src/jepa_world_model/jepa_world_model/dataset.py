"""Training data from rosbag2 bags: camera + joint states (+ actions, + privileged poses) on a fixed control grid.

Any bag (mcap or sqlite3) with a camera image topic and joint states works, including bags from other tools. Which
topics and joints, and the arm's kinematics, come from a `BagLayout` (bag_layout.py): by default the simulated
Panda's (/camera/image_raw, /joint_states, panda_joint1..7 + two fingers), or an arm preset's (`jepa train --arm`).
A bag that does not match its layout is refused, naming what differs: the camera or joint states topic missing
(with the image topics the bag does have), joints the layout names that joint_states never names (with the ones
it does), a /robot_description of another arm. Joint states published in parts (an arm driver and a gripper
driver on one topic) are merged: a sample is the newest value of every joint.

- With /jepa/action (ActionStamped, space ee_delta) each action message is a control tick; the state of the
  tick is the latest image / joint state at (or just after, within `STAMP_TOLERANCE`) the action's stamp.
- Without it, ticks are laid every `dt` seconds, and the action of tick k is derived from the recorded motion:
  the end-effector displacement FK(q_{k+1}) - FK(q_k) through the layout's kinematics, clipped to the action
  bound, and the gripper command from the gripper joints' opening (0 for an arm without gripper joints).

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

from jepa_world_model.bag_layout import (ACTION_TOPIC, CUBE_TOPIC, DESCRIPTION_TOPIC, EE_TOPIC, IMAGE_TOPIC,
                                         JOINT_TOPIC, BagLayout)
from jepa_world_model.model import resize_rgb

DATASET_VERSION = 2   # part of the cache key: raised whenever decoding changes, so older caches are not reused
DT = 0.1
IMAGE_TYPE = 'sensor_msgs/msg/Image'
JOINT_TYPE = 'sensor_msgs/msg/JointState'
DESCRIPTION_TYPE = 'std_msgs/msg/String'
# The topics of the default layout (the simulated Panda's) and their types.
TOPIC_TYPES = {
    IMAGE_TOPIC: IMAGE_TYPE,
    JOINT_TOPIC: JOINT_TYPE,
    ACTION_TOPIC: 'jepa_interfaces/msg/ActionStamped',
    EE_TOPIC: 'geometry_msgs/msg/PoseStamped',
    CUBE_TOPIC: 'geometry_msgs/msg/PoseStamped',
}
REQUIRED_TOPICS = (IMAGE_TOPIC, JOINT_TOPIC)
# Joint states read before decoding to refuse a bag of another arm early (its joint names).
JOINT_NAMES_PREVIEW = 1000
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
    proprio: np.ndarray           # (N, J) float32: the layout's arm then gripper joint positions (Panda: 7 + 2)
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

def topic_types(layout: BagLayout) -> dict[str, str]:
    """The topics decoding reads with `layout` and their types (the privileged poses and actions keep their names)."""
    types = {layout.image_topic: IMAGE_TYPE, layout.joint_topic: JOINT_TYPE}
    types.update({t: v for t, v in TOPIC_TYPES.items() if t not in (IMAGE_TOPIC, JOINT_TOPIC)})
    return types


def _check_topics(bag: Path, present: dict[str, str], layout: BagLayout, topics) -> None:
    """BagError naming the layout's topics the bag lacks (with the image topics it has), or a topic of another
    type than decoding reads."""
    required = (layout.image_topic, layout.joint_topic)
    missing = [t for t in required if t not in present]
    if missing:
        images = sorted(t for t, kind in present.items() if kind == IMAGE_TYPE)
        hint = ''
        if layout.image_topic in missing:
            hint = (f'; {layout.describe()} reads the camera on {layout.image_topic}: the bag\'s image topics are '
                    f'{", ".join(images) or "none"} (another --arm or --camera-topic?)')
        raise BagError(f'bag {bag}: topic(s) {", ".join(missing)} missing (it has: {", ".join(sorted(present))}){hint}')
    types = topic_types(layout)
    for topic in topics:
        if topic in present and present[topic] != types[topic]:
            raise BagError(f'bag {bag}: topic {topic} has type {present[topic]}, expected {types[topic]}')


def read_bag_messages(bag: Path, topics: tuple[str, ...], layout: BagLayout | None = None):
    """Yield (topic, timestamp_ns, message) for those of `topics` the bag has, in time order; BagError if
    a topic the layout requires is missing or a topic has an unexpected type."""
    layout = layout or BagLayout()
    with BagReader(bag) as reader:
        present = {name: topic.msgtype for name, topic in reader.topics.items()}
        _check_topics(bag, present, layout, topics)
        for message in reader.messages([t for t in topics if t in present]):
            yield message.topic, message.timestamp_ns, message.message


def _preview(bag: Path, layout: BagLayout) -> tuple[set, str | None]:
    """(joint names of the first JOINT_NAMES_PREVIEW joint states, or fewer once every layout joint was seen;
    the text of the bag's /robot_description or None), read before decoding so that a bag of another arm is
    refused before its images are decoded. The first image is converted first: a camera the decoder cannot read
    is the first thing wrong with such a bag, whatever its joints."""
    from jepa_common.conversions import image_to_rgb
    names: set = set()
    description = None
    with BagReader(bag) as reader:
        present = {name: topic.msgtype for name, topic in reader.topics.items()}
        _check_topics(bag, present, layout, ())
        for message in reader.messages([layout.image_topic]):
            try:
                image_to_rgb(message.message)
            except ValueError as exc:
                raise BagError(f'bag {bag}: {layout.image_topic} message #0: {exc}') from exc
            break
        wanted = set(layout.joints)
        for count, message in enumerate(reader.messages([layout.joint_topic])):
            names.update(message.message.name)
            if wanted <= names or count + 1 >= JOINT_NAMES_PREVIEW:
                break
        if present.get(DESCRIPTION_TOPIC) == DESCRIPTION_TYPE:
            for message in reader.messages([DESCRIPTION_TOPIC]):
                description = str(message.message.data)
                break
    return names, description


def _joint_mismatch(bag: Path, layout: BagLayout, names: set, where: str) -> BagError:
    missing = [j for j in layout.joints if j not in names]
    extra = sorted(names - set(layout.joints))
    others = f'; of those, {", ".join(extra)} are not {layout.describe()}\'s' if extra and len(extra) < len(names) else ''
    return BagError(f'bag {bag}: {layout.joint_topic} ({where}) lacks the joint(s) {missing} that {layout.describe()} '
                    f'names; its joints are {", ".join(sorted(names)) or "none"}{others}: a bag of another arm?'
                    + ('' if layout.arm else ' Pass its arm preset with --arm.'))


def urdf_joints(text: str) -> set[str]:
    """Names of the joints of a URDF document (ValueError if it is not one)."""
    import xml.etree.ElementTree as ET
    try:
        root = ET.fromstring(text)
    except ET.ParseError as error:
        raise ValueError(f'not a URDF document: {error}') from error
    return {joint.get('name') for joint in root.iter('joint')}


def layout_kinematics(bag: Path, layout: BagLayout, description: str | None):
    """(ArmKinematics, where its URDF came from) for one bag: the layout's URDF file, or, where that file is
    absent, the bag's /robot_description. A recorded description that lacks the layout's joints is another arm:
    BagError naming them."""
    import tempfile
    if description is not None:
        try:
            described = urdf_joints(description)
        except ValueError as error:
            raise BagError(f'bag {bag}: {DESCRIPTION_TOPIC}: {error}') from error
        absent = [j for j in layout.joints if j not in described]
        if absent:
            raise BagError(f'bag {bag}: its {DESCRIPTION_TOPIC} has no joint(s) {absent} that {layout.describe()} '
                           'names: the bag was recorded on another arm')
    if layout.urdf and not os.path.isfile(layout.urdf):
        if description is None:
            raise BagError(f'bag {bag}: the URDF {layout.urdf} of {layout.describe()} does not exist and the bag has '
                           f'no {DESCRIPTION_TOPIC} to take the kinematics from; pass the arm\'s URDF with --urdf')
        with tempfile.TemporaryDirectory(prefix='jepa_urdf_') as folder:
            path = os.path.join(folder, 'robot_description.urdf')
            Path(path).write_text(description)
            try:
                return layout.kinematics(path), DESCRIPTION_TOPIC
            except (OSError, ValueError) as error:
                raise BagError(f'bag {bag}: the kinematics of {layout.describe()} from its {DESCRIPTION_TOPIC}: '
                               f'{error}') from error
    try:
        return layout.kinematics(), layout.urdf or 'the simulated Panda URDF'
    except (OSError, ValueError) as error:
        raise ValueError(f'the kinematics of {layout.describe()}: {error}') from error


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


def decode_bag(bag, image_size: int = 64, dt: float = DT, layout: BagLayout | None = None) -> Ticks:
    """Read and align one bag (no cache) with `layout` (default: the simulated Panda's). Raises BagError naming
    the bag, topic and problem, or what differs from the layout."""
    from jepa_common.conversions import image_to_rgb

    bag = Path(bag)
    layout = layout or BagLayout()
    names, description = _preview(bag, layout)
    if not set(layout.joints) <= names:
        raise _joint_mismatch(bag, layout, names, f'its first {JOINT_NAMES_PREVIEW} messages')
    kinematics, urdf_source = layout_kinematics(bag, layout, description)
    image_topic, joint_topic = layout.image_topic, layout.joint_topic
    types = topic_types(layout)
    joints = layout.joints
    latest_joint = {}                                  # joint -> newest position (joint states may come in parts)
    data = {t: ([], [], []) for t in types}           # topic -> (header stamps, receive times, values)
    counts = dict.fromkeys(types, 0)
    skipped = dict.fromkeys(types, 0)
    for topic, log_time, msg in read_bag_messages(bag, tuple(types), layout):
        n = counts[topic]
        counts[topic] += 1
        try:
            if topic == image_topic:
                value = resize_rgb(np.ascontiguousarray(image_to_rgb(msg)), image_size)
            elif topic == joint_topic:
                if len(msg.position) != len(msg.name):
                    raise ValueError(f'joint state has {len(msg.name)} names but {len(msg.position)} positions')
                update = {name: float(p) for name, p in zip(msg.name, msg.position) if name in joints}
                if not all(np.isfinite(v) for v in update.values()):
                    raise ValueError('joint state contains NaN or inf positions')
                latest_joint.update(update)
                if not update or len(latest_joint) < len(joints):
                    continue                           # no joint of ours, or not every joint seen yet
                value = np.array([latest_joint[j] for j in joints], dtype=np.float64)
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
    for topic in (image_topic, joint_topic):
        if not data[topic][0]:
            raise BagError(f'bag {bag}: topic {topic} has no messages')
    bases = {topic: time_base(bag, topic, np.asarray(header, dtype=np.float64), np.asarray(received))
             for topic, (header, received, _) in data.items() if header}

    def arrays(topic):
        stamps = bases[topic][1]
        order = np.argsort(stamps, kind='stable')
        values = data[topic][2]
        return stamps[order], ([values[i] for i in order] if topic == image_topic else
                               np.asarray(values, dtype=np.float64).reshape(len(values), -1)[order])

    def described(topic):
        stamps = bases[topic][1]
        return f'{topic} ({bases[topic][0]} {stamps.min():.1f}..{stamps.max():.1f} s)'

    img_t, images = arrays(image_topic)
    joint_t, q = arrays(joint_topic)
    first = max(img_t[0], joint_t[0])
    last = min(img_t[-1], joint_t[-1])
    if last - first < dt:
        raise BagError(f'bag {bag}: {described(image_topic)} and {described(joint_topic)} overlap for '
                       f'{max(last - first, 0):.2f} s, less than one control period'
                       + (': the topics use different clocks' if last < first else ''))
    for topic in (ACTION_TOPIC, EE_TOPIC, CUBE_TOPIC):
        if topic in bases and (bases[topic][1].max() < first - 1.0 or bases[topic][1].min() > last + 1.0):
            raise BagError(f'bag {bag}: {described(topic)} does not overlap {described(image_topic)} and '
                           f'{described(joint_topic)}: the topics use different clocks')

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

    arm = len(layout.arm_joints)
    fk = kinematics.fk(proprio[:, :arm])
    step = np.diff(fk, axis=0)
    gap_ok &= np.all(np.abs(step) <= MAX_JUMP_STEPS * kinematics.max_step, axis=1)
    if not recorded:
        fingers = proprio[:, arm:]
        if fingers.shape[1]:
            # Towards the upper limits is +1, as ArmKinematics.gripper_to_fingers maps commands.
            opening = np.diff(fingers.sum(axis=1))
            gripper = np.where(opening > 1e-3, 1.0, np.where(opening < -1e-3, -1.0,
                                                              np.sign(kinematics.fingers_to_gripper(fingers[1:]))))
        else:
            gripper = np.zeros(len(step))
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
    if not layout.is_default:
        source['arm'] = {**layout.to_dict(), 'urdf_source': urdf_source}
    return Ticks(images=np.stack([images[i] for i in img_idx]).astype(np.uint8),
                 actions=actions.astype(np.float32), proprio=proprio.astype(np.float32),
                 ee=ee.astype(np.float32), cube=pose_at(CUBE_TOPIC).astype(np.float32),
                 segment=segment, stamps=ticks, sources=[source])


# ---------------------------------------------------------------- cache

def default_cache_dir() -> Path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'jepa_world_model'


def _cache_key(bag: Path, image_size: int, dt: float, layout: BagLayout | None = None) -> str:
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in bag_files(bag)]
    parts = [DATASET_VERSION, str(bag.resolve()), stats, image_size, dt]
    if layout is not None and not layout.is_default:
        # Another arm's topics, joints and kinematics decode to other ticks (the default keeps its older keys).
        urdf = Path(layout.urdf)
        digest = hashlib.sha256(urdf.read_bytes()).hexdigest() if layout.urdf and urdf.is_file() else ''
        parts.append([layout.to_dict(), digest])
    blob = json.dumps(parts)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_bag(bag, cache_dir=None, image_size: int = 64, dt: float = DT, layout: BagLayout | None = None) -> Ticks:
    """Ticks of one bag, decoded once and then read from the .npz cache (cache_dir None: the user cache)."""
    bag = Path(bag)
    if not bag.exists():
        raise BagError(f'bag {bag}: no such bag')
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = cache_dir / f'{bag.resolve().name}-{_cache_key(bag, image_size, dt, layout)}.npz'
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as f:
                return Ticks(**{k: f[k] for k in ('images', 'actions', 'proprio', 'ee', 'cube', 'segment',
                                                  'stamps')}, sources=json.loads(str(f['sources'])))
        except (OSError, ValueError, KeyError):
            pass   # a damaged cache file is simply rebuilt
    ticks = decode_bag(bag, image_size, dt, layout)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f'.{cache.name}.tmp{os.getpid()}.npz')
    np.savez(tmp, images=ticks.images, actions=ticks.actions, proprio=ticks.proprio, ee=ticks.ee, cube=ticks.cube,
             segment=ticks.segment, stamps=ticks.stamps, sources=np.array(json.dumps(ticks.sources)))
    os.replace(tmp, cache)
    return ticks


def load_bags(bags, cache_dir=None, image_size: int = 64, dt: float = DT, layout: BagLayout | None = None) -> Ticks:
    """Ticks of several bags of one arm (`layout`, default the simulated Panda), as one."""
    return concat([load_bag(b, cache_dir, image_size, dt, layout) for b in bags])
