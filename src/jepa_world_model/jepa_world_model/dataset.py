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
Every problem is a jepa_rosbag BagError naming the bag, the topic and what is wrong.

Data larger than memory: `load_bags` takes any number of bags (a bag, a folder holding bags, a glob pattern,
several of these) and LeRobot datasets (lerobot_export.py). Each is decoded once into a cache folder of .npy arrays
keyed by its content identity and the decoding settings, and memory-mapped from there: training gathers its
windows from the files, and the kernel keeps in memory only the pages it reads while it has room. Several bags are
one more cache folder, their arrays copied one after the other on disk, so every user of Ticks sees plain arrays.
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jepa_common.digest import file_sha256
from jepa_rosbag.reader import STORAGE_SUFFIXES, BagError, BagReader

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
    images: np.ndarray            # (N, S, S, 3) uint8 (N, H, W, 3 when decoded at the size recorded)
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
        _, group, counts = np.unique(self.segment, return_inverse=True, return_counts=True)
        order = np.argsort(group, kind='stable')             # the ticks segment by segment, each in tick order
        rank = np.arange(len(self)) - np.repeat(np.cumsum(counts) - counts, counts)     # place in its segment
        kept = counts - np.round(counts * fraction).astype(np.int64)
        held = np.zeros(len(self), dtype=bool)
        held[order] = rank >= np.repeat(kept, counts)
        return held


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


def bag_kinematics(bag: Path, layout: BagLayout):
    """The ArmKinematics one bag (or LeRobot dataset) was recorded with, as decoding it uses them
    (layout_kinematics)."""
    bag = Path(bag)
    description = None if is_lerobot_dataset(bag) else _preview(bag, layout)[1]
    return layout_kinematics(bag, layout, description)[0]


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
    return {path.name: file_sha256(path) for path in bag_files(bag)}


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


class _Frames:
    """A bag's decoded camera frames in the order they came: in memory, or, given a spill file, appended to it one
    at a time and memory-mapped, so that decoding holds a frame at a time however long the bag."""

    def __init__(self, spill: Path | None):
        self.spill, self.frames, self.shape, self.count, self.file = spill, [], None, 0, None

    def add(self, frame: np.ndarray) -> int:
        """Keep a frame (ValueError if its size differs from the first's); returns its number."""
        if self.shape is None:
            self.shape = frame.shape
        elif frame.shape != self.shape:
            raise ValueError(f'a {frame.shape[1]}x{frame.shape[0]} image after {self.shape[1]}x{self.shape[0]} ones: '
                             'the images are kept as recorded only when all have one size')
        if self.spill is None:
            self.frames.append(frame)
        else:
            if self.file is None:
                self.file = open(self.spill, 'wb')
            self.file.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self.count += 1
        return self.count - 1

    def pick(self, numbers: np.ndarray, out: Path | None) -> np.ndarray:
        """The frames `numbers`, stacked in memory, or (with a spill file) copied from it into the .npy file `out`
        by plain reads and writes (neither file mapped into this process) and mapped from there."""
        if self.spill is None:
            return np.stack([self.frames[i] for i in numbers]).astype(np.uint8)
        self.close()
        size = int(np.prod(self.shape))
        header = {'descr': np.lib.format.dtype_to_descr(np.dtype(np.uint8)), 'fortran_order': False,
                  'shape': (len(numbers), *self.shape)}
        with open(self.spill, 'rb') as src, open(out, 'wb') as dst:
            np.lib.format.write_array_header_2_0(dst, header)
            for number in numbers:
                dst.write(os.pread(src.fileno(), size, int(number) * size))
        return np.load(out, mmap_mode='r')

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def decode_bag(bag, image_size: int | None = 64, dt: float = DT, layout: BagLayout | None = None,
               images_out: Path | None = None) -> Ticks:
    """Read and align one bag (no cache) with `layout` (default: the simulated Panda's), its images resized to
    image_size (None: as the camera recorded them, all of one size). With images_out (a .npy path) the images are
    written there, a frame at a time, and mapped from it, instead of held in memory. Raises BagError naming the
    bag, topic and problem, or what differs from the layout."""
    bag = Path(bag)
    frames = _Frames(None if images_out is None else Path(images_out).with_suffix('.frames'))
    try:
        return _decode(bag, image_size, dt, layout or BagLayout(), frames, images_out)
    finally:
        frames.close()
        if frames.spill is not None:
            frames.spill.unlink(missing_ok=True)


def _decode(bag: Path, image_size: int | None, dt: float, layout: BagLayout, frames: _Frames,
            images_out: Path | None) -> Ticks:
    from jepa_common.conversions import image_to_rgb

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
                value = np.ascontiguousarray(image_to_rgb(msg))
                value = frames.add(value if image_size is None else resize_rgb(value, image_size))
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
    return Ticks(images=frames.pick(np.asarray(images, dtype=np.int64)[img_idx], images_out),
                 actions=actions.astype(np.float32), proprio=proprio.astype(np.float32),
                 ee=ee.astype(np.float32), cube=pose_at(CUBE_TOPIC).astype(np.float32),
                 segment=segment, stamps=ticks, sources=[source])


# ---------------------------------------------------------------- which bags

GLOB_CHARACTERS = frozenset('*?[')


def is_lerobot_dataset(path) -> bool:
    """A LeRobotDataset's root: a directory with meta/info.json (lerobot_export.py reads it)."""
    return (Path(path) / 'meta' / 'info.json').is_file()


def is_bag(path) -> bool:
    """A rosbag2 bag: a .mcap/.db3 file, or a directory with metadata.yaml or storage files of its own (one left
    without metadata.yaml is still a bag, for its reader to say what is wrong with it)."""
    path = Path(path)
    if not path.is_dir():
        return path.suffix in STORAGE_SUFFIXES
    return (path / 'metadata.yaml').exists() or any(p.suffix in STORAGE_SUFFIXES and p.is_file()
                                                    for p in path.iterdir())


def _datasets_under(folder: Path) -> list[Path]:
    """The bags and LeRobot datasets in `folder` and its subfolders, in name order (none looked for inside one)."""
    found = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith('.'):
            found += [child] if is_lerobot_dataset(child) or is_bag(child) else _datasets_under(child)
    return found


def _datasets_in(path: Path) -> list[Path]:
    if not path.exists():
        raise BagError(f'bag {path}: no such bag')
    if not path.is_dir() or is_lerobot_dataset(path) or is_bag(path):
        return [path]        # a file that is not a bag is one for its reader to refuse, naming it
    found = _datasets_under(path)
    if not found:
        raise BagError(f'{path} is not a rosbag2 bag (no metadata.yaml), not a LeRobot dataset (no meta/info.json) '
                       'and holds neither in its subfolders')
    return found


def expand_bags(specs) -> list[Path]:
    """The bags and LeRobot datasets that `specs` (one or a list) name, in their order, each once however many
    specs name it. A spec is a bag (a directory with metadata.yaml, or a .mcap/.db3 file), a LeRobot dataset (a
    directory with meta/info.json), a folder holding any of these (searched recursively, in name order), or a glob
    pattern (`runs/play*`, `bags/**/arm_*`) of any of these (what else it matches is passed over). BagError naming a
    spec that names none."""
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    found: dict[Path, Path] = {}
    for spec in specs:
        text = os.path.expanduser(str(spec))
        if GLOB_CHARACTERS & set(text) and not os.path.exists(text):
            matches = [Path(match) for match in sorted(glob.glob(text, recursive=True))]
            # What a pattern matches beside the bags (a log file, a folder of plots) is passed over.
            paths = [path for match in matches for path in (
                [match] if is_lerobot_dataset(match) or is_bag(match) else
                _datasets_under(match) if match.is_dir() else [])]
            if not paths:
                raise BagError(f'{spec}: {len(matches)} file(s) or folder(s) match this pattern, none a bag, a '
                               'LeRobot dataset or a folder holding one')
        else:
            paths = _datasets_in(Path(text))
        for path in paths:
            found.setdefault(path.resolve(), path)
    if not found:
        raise ValueError('no bags given')
    return list(found.values())


# ---------------------------------------------------------------- cache

# A cache folder holds one .npy file per array of Ticks (ARRAYS) and ticks.json (CACHE_FORMAT, the arrays' shapes
# and dtypes, the sources). CACHE_FORMAT is raised whenever that layout changes.
CACHE_FORMAT = 1
ARRAYS = ('images', 'actions', 'proprio', 'ee', 'cube', 'segment', 'stamps')
CACHE_ERRORS = (OSError, ValueError, KeyError, TypeError)
COPY_BLOCK = 16 << 20     # bytes per read when the arrays of several bags are copied into one file


def default_cache_dir() -> Path:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'jepa_world_model'


def content_identity(path) -> list:
    """What the cache takes as the content of a bag or LeRobot dataset: the sha256 of its metadata file
    (metadata.yaml, meta/info.json) and the name, size and modification time of every file in it. A sha256 of every
    file would read the whole recording again at every start of training (minutes for hours of camera frames); the
    metadata names what was recorded (topics, message counts, start and duration), and a file rewritten in place
    changes its size or time. The sha256 of every file is taken once, when the cache is built, for provenance."""
    path = Path(path)
    files = sorted(p for p in path.rglob('*') if p.is_file()) if path.is_dir() else [path]
    described = [f for f in (path / 'metadata.yaml', path / 'meta' / 'info.json') if f.is_file()]
    return [[hashlib.sha256(f.read_bytes()).hexdigest() for f in described],
            [[str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns]
             for f in files]]


def _cache_key(bag: Path, image_size: int | None, dt: float, layout: BagLayout | None = None) -> str:
    parts = [DATASET_VERSION, content_identity(bag), image_size, dt]
    if layout is not None and not layout.is_default:
        # Another arm's topics, joints and kinematics decode to other ticks.
        urdf = Path(layout.urdf)
        digest = hashlib.sha256(urdf.read_bytes()).hexdigest() if layout.urdf and urdf.is_file() else ''
        parts.append([layout.to_dict(), digest])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _open_cache(folder: Path) -> Ticks:
    """Ticks memory-mapped (copy-on-write: the files are never changed) from a cache folder; one of CACHE_ERRORS
    if the folder is absent, of another format or damaged (an array missing, truncated or of another shape)."""
    meta = json.loads((folder / 'ticks.json').read_text())
    if meta['format'] != CACHE_FORMAT:
        raise ValueError(f'{folder}: cache format {meta["format"]}, not {CACHE_FORMAT}')
    arrays = {}
    for name in ARRAYS:
        array = np.load(folder / f'{name}.npy', mmap_mode='c', allow_pickle=False)
        if [list(array.shape), str(array.dtype)] != meta['arrays'][name]:
            raise ValueError(f'{folder}: {name}.npy is {array.shape} {array.dtype}, not {meta["arrays"][name]}')
        arrays[name] = array
    return Ticks(**arrays, sources=meta['sources'])


def _cached(folder: Path, build) -> Ticks:
    """Ticks of the cache `folder`, made first by build(staging) -> sources (writing ARRAYS into staging) when the
    folder is absent or damaged. The folder appears whole or not at all (built under another name, then renamed),
    and while one process builds it, others that want it wait for it (a lock file beside it)."""
    try:
        return _open_cache(folder)
    except CACHE_ERRORS:
        pass
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f'.{folder.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _open_cache(folder)       # another process built it meanwhile
        except CACHE_ERRORS:
            shutil.rmtree(folder, ignore_errors=True)
        for stale in folder.parent.glob(f'.{folder.name}.staging-*'):    # left by a process that was killed
            shutil.rmtree(stale, ignore_errors=True)
        staging = folder.with_name(f'.{folder.name}.staging-{os.getpid()}')
        staging.mkdir()
        try:
            sources = build(staging)
            arrays = {name: np.load(staging / f'{name}.npy', mmap_mode='r') for name in ARRAYS}
            meta = {'format': CACHE_FORMAT, 'ticks': len(arrays['stamps']), 'sources': sources,
                    'arrays': {name: [list(a.shape), str(a.dtype)] for name, a in arrays.items()}}
            del arrays
            (staging / 'ticks.json').write_text(json.dumps(meta))
            os.rename(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return _open_cache(folder)


def save_ticks(folder: Path, ticks: Ticks) -> list:
    """Ticks' arrays as the .npy files of a cache folder (but those already there: the images decode_bag wrote
    a frame at a time); returns their sources."""
    for name in ARRAYS:
        if not (folder / f'{name}.npy').exists():
            np.save(folder / f'{name}.npy', np.ascontiguousarray(getattr(ticks, name)))
    return ticks.sources


def _copy_rows(out: Path, files: list[Path]) -> None:
    """One .npy file of the rows of the .npy `files` one after the other, copied a block at a time from file to
    file: however large, no array is read into memory."""
    layouts = []
    for path in files:
        with open(path, 'rb') as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            layouts.append((shape, fortran, dtype, f.tell()))
    rows = {(shape[1:], dtype) for shape, _, dtype, _ in layouts}
    if len(rows) != 1 or any(fortran for _, fortran, _, _ in layouts):
        raise ValueError(f'{out.name}: the arrays to concatenate differ ({sorted(map(str, rows))})')
    (row, dtype), = rows
    header = {'descr': np.lib.format.dtype_to_descr(dtype), 'fortran_order': False,
              'shape': (sum(shape[0] for shape, *_ in layouts), *row)}
    with open(out, 'wb') as dst:
        np.lib.format.write_array_header_2_0(dst, header)
        for path, (_, _, _, offset) in zip(files, layouts):
            with open(path, 'rb') as src:
                src.seek(offset)
                shutil.copyfileobj(src, dst, COPY_BLOCK)


def _renumbered_segments(parts: list[Ticks]) -> np.ndarray:
    """The segment ids of several Ticks one after the other, renumbered so that no window crosses from one to the
    next."""
    offset, segments = 0, []
    for part in parts:
        segments.append(part.segment - part.segment.min() + offset if len(part) else np.asarray(part.segment))
        offset = int(segments[-1].max()) + 1 if len(part) else offset
    return np.concatenate(segments).astype(np.int64)


def _save_concatenated(staging: Path, parts: list[tuple[Path, Ticks]]) -> list:
    """The cache folders `parts` (folder, its Ticks) as one: their arrays one after the other."""
    for name in ARRAYS:
        if name == 'segment':
            np.save(staging / 'segment.npy', _renumbered_segments([ticks for _, ticks in parts]))
        else:
            _copy_rows(staging / f'{name}.npy', [folder / f'{name}.npy' for folder, _ in parts])
    return [source for _, ticks in parts for source in ticks.sources]


def _located(ticks: Ticks, paths: list[Path]) -> Ticks:
    """Ticks whose sources name the paths they were loaded from now (a cache is found by content: a bag that was
    moved or copied finds the one it made elsewhere)."""
    for source, path in zip(ticks.sources, paths):
        source['path'] = str(Path(path).resolve())
    return ticks


def _bag_cache(bag: Path, cache_dir, image_size: int | None, dt: float,
               layout: BagLayout | None) -> tuple[Path, Ticks]:
    if not bag.exists():
        raise BagError(f'bag {bag}: no such bag')
    folder = (Path(cache_dir) if cache_dir else default_cache_dir()) / f'bag-{_cache_key(bag, image_size, dt, layout)}'
    if is_lerobot_dataset(bag):
        from jepa_world_model.lerobot_export import read_lerobot
        return folder, _cached(folder, lambda staging: read_lerobot(bag, staging, image_size, dt, layout))
    return folder, _cached(folder, lambda staging: save_ticks(
        staging, decode_bag(bag, image_size, dt, layout, images_out=staging / 'images.npy')))


def load_bag(bag, cache_dir=None, image_size: int | None = 64, dt: float = DT,
             layout: BagLayout | None = None) -> Ticks:
    """Ticks of one bag (or LeRobot dataset), decoded once into its cache folder (cache_dir None: the user cache)
    and memory-mapped from there; image_size None keeps the images as recorded."""
    bag = Path(bag)
    return _located(_bag_cache(bag, cache_dir, image_size, dt, layout)[1], [bag])


def load_bags(bags, cache_dir=None, image_size: int | None = 64, dt: float = DT,
              layout: BagLayout | None = None) -> Ticks:
    """Ticks of the bags and LeRobot datasets `bags` names (expand_bags: bags, folders of them, glob patterns) of
    one arm (`layout`, default the simulated Panda), as one memory-mapped whole: one bag's cache, or, for several,
    the cache of their concatenation (made once per list of bags, copied on disk from theirs)."""
    paths = expand_bags(bags)
    parts = [_bag_cache(path, cache_dir, image_size, dt, layout) for path in paths]
    if len(parts) == 1:
        return _located(parts[0][1], paths)
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, [folder.name for folder, _ in parts]]).encode()).hexdigest()[:16]
    folder = parts[0][0].parent / f'set-{key}'
    return _located(_cached(folder, lambda staging: _save_concatenated(staging, parts)), paths)
