"""Fuzz the bag reader and `jepa record --reindex` with randomly damaged copies of real bags.

Bags, written by BagRecorder: small (24 joint states in 3 split files), images (60 128x128 images and 60 joint
states, three 1 MiB chunks), zstd (the same with zstd chunks), sqlite3 (the same in sqlite3). Each copy gets one
damage of jepa_rosbag.fuzz.DAMAGES (4 KB overwritten, 1-8 flipped bits, truncation, a damaged metadata.yaml) and
fuzz.check holds it to the rules: reading gives what was recorded or a BagError, reindex a new bag of recorded
messages only (or a BagError), the damaged copy is never modified; sqlite3 has no checksums, so its reads of
flipped message bytes are counted as "altered" instead. Prints, per bag and damage, what reading and reindex
made of the copies, then the rules broken (tracebacks included), which must be 0: exit 1 otherwise.
--quick: 24 copies of the small bag.

    .venv/bin/python bench/bag_fuzz.py [--copies 100] [--seed 0] [--quick]
"""
import argparse
import collections
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from jepa_rosbag.fuzz import DAMAGES, FuzzError, messages, trial
from jepa_rosbag.recorder import BagRecorder
from jepa_rosbag.typestore import jepa_typestore

STORE = jepa_typestore()
T = STORE.types


def _header(i: int):
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=i // 100, nanosec=i % 100 * 10**7),
                                    frame_id='')


def write(path: Path, n: int, image_side: int = 0, **recorder_args) -> None:
    """n joint states at 100 Hz (and as many images of image_side pixels, if given)."""
    recorder = BagRecorder(path, **recorder_args)
    recorder.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
    if image_side:
        recorder.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
    for i in range(n):
        stamp = 1_000_000_000 + i * 10_000_000
        joints = T['sensor_msgs/msg/JointState'](header=_header(i), name=['a', 'b'], position=np.array([i, -i], float),
                                                 velocity=np.zeros(0), effort=np.zeros(0))
        recorder.write('/joint_states', stamp, bytes(STORE.serialize_cdr(joints, 'sensor_msgs/msg/JointState')))
        if image_side:
            image = T['sensor_msgs/msg/Image'](header=_header(i), height=image_side, width=image_side, encoding='rgb8',
                                               is_bigendian=0, step=image_side * 3,
                                               data=np.random.default_rng(i).integers(0, 256, image_side ** 2 * 3,
                                                                                      dtype=np.uint8))
            recorder.write('/camera/image_raw', stamp + 1, bytes(STORE.serialize_cdr(image, 'sensor_msgs/msg/Image')))
    recorder.close()


BAGS = {
    'small': dict(n=24, max_split_bytes=1000),
    'images': dict(n=60, image_side=128),
    'zstd': dict(n=60, image_side=128, compression='zstd'),
    'sqlite3': dict(n=60, image_side=128, storage='sqlite3'),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--copies', type=int, default=100, help='damaged copies per bag (default 100)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true', help='24 copies of the small bag')
    args = parser.parse_args()
    bags = ['small'] if args.quick else list(BAGS)
    copies = 24 if args.quick else args.copies
    rng = random.Random(args.seed)
    broken = []
    total = 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='bag_fuzz_') as tmp:
        for name in bags:
            bag = Path(tmp) / name
            write(bag, **BAGS[name])
            recorded = messages(bag)
            tally = collections.Counter()
            recovered_share = collections.defaultdict(list)
            for i in range(copies):
                kind = DAMAGES[i % len(DAMAGES)]
                try:
                    outcome = trial(bag, recorded, rng, kind, Path(tmp),
                                    checksummed=BAGS[name].get('storage') != 'sqlite3')
                except FuzzError as err:
                    broken.append(str(err))
                except Exception:  # noqa: BLE001 - a traceback is what this bench looks for
                    broken.append(f'{name} copy {i} ({kind}): {traceback.format_exc()}')
                else:
                    tally[kind, outcome.read] += 1
                    tally[kind, 'nothing recovered' if outcome.recovered is None else 'recovered'] += 1
                    recovered_share[kind].append((outcome.recovered or 0) / len(recorded))
                total += 1
            print(f'{name} ({len(recorded)} messages):')
            for kind in DAMAGES:
                share = recovered_share[kind]
                print(f'  {kind:<9}  read: {tally[kind, "complete"]:>3} complete, {tally[kind, "BagError"]:>3} BagError, '
                      f'{tally[kind, "altered"]:>3} altered;  reindex: {tally[kind, "recovered"]:>3} new bags, '
                      f'{tally[kind, "nothing recovered"]:>3} BagError; messages recovered '
                      f'{100 * np.mean(share) if share else 0:.0f} % on average')
    for problem in broken[:10]:
        print(f'BROKEN: {problem}')
    print(f'bag fuzz: {total} damaged copies of {len(bags)} bags in {time.monotonic() - start:.1f} s: '
          f'{len(broken)} broken rules (tracebacks included)')
    return 1 if broken else 0


if __name__ == '__main__':
    sys.exit(main())
