"""Memory and speed of the training data path for 1x and 10x the play data: the peak resident memory of loading
the bags (decoding them into the memory-mapped cache, or mapping a cache that is there) and of sampling training
windows from them, and the loader's windows/s against the training step's, measured in the same run.

Data: the bags of --bag (the simulated Panda's, as `jepa train --bag` takes them), or by default a generated play
bag the size of the shipped world model's play data (48,032 ticks: the 24,016 of runs/play96 and of
runs/play_retreat, its provenance says) at the simulated camera's 96x96, in 25-s episodes (a reset between them
cuts the segments) of the arm driven through the Panda's kinematics; its frames are a toy render (what the loader
costs does not depend on what they show).
10x is that data 10 times under other names: folders holding links to its files, which training reads as 10 bags
(they are one content to the cache, decoded once, then concatenated 10 times on disk).

Every figure comes from a process of its own (`--measure`), so that its peak is its own:
  cold: the caches built by that process (decoded, concatenated); warm: the caches there, mapped;
  then, in both, windows of the training's WindowSampler (train.py) gathered from the mapped frames (batch and
  length of the default TrainConfig): first with the page cache of the cache's frames dropped (posix_fadvise), read
  from disk, then with the frames file read into the page cache once, and training steps of the default model
  on those batches.
Memory: peak RSS (VmHWM) and the peaks of its two parts, sampled every 20 ms: anonymous (what the process holds)
and file-backed (the libraries, and the pages of the mapped cache files it touched, which the kernel takes back when
memory runs short); each next to the same after the imports, before loading.
`--train-steps` also runs `jepa train`'s own train_world_model for that many steps (its validation on the held-out
tail of every segment included) in a process of its own, and reports its peaks.

    nice -n 19 .venv/bin/python bench/loader_memory.py [--bag BAG ...] [--ticks N] [--out FILE] [--quick]

At the default size it writes about 7.5 GB under --workdir (the bag 1.3 GB, its cache 0.6 GB, the 10x cache 5.6 GB)
and takes some 10 minutes on 2 cores.

--quick: a 300-tick bag, 10x cold only, a few batches and steps (seconds; checks the bench runs, its figures mean
little). Prints figures; asserts nothing.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

SHIPPED_PLAY_TICKS = 48_032      # runs/play96 + runs/play_retreat: the default checkpoint's training data
EPISODE_TICKS = 250              # 25 s episodes at 10 Hz
CAMERA = 96                      # jepa_sim's CameraConfig default


# ---------------------------------------------------------------- the play data

def write_play_bag(path: Path, ticks: int, camera: int, seed: int = 0) -> Path:
    """A bag of `ticks` control ticks with the topics `jepa collect` records in the simulator."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_FINGER_JOINTS, ArmKinematics
    from jepa_rosbag.typestore import jepa_typestore

    store, kinematics, rng = jepa_typestore(), ArmKinematics(), np.random.default_rng(seed)
    T = store.types
    # A few distinct episodes through the kinematics (IK per step is the slow part), then repeated in turn.
    episodes = []
    for _ in range(min(8, -(-ticks // EPISODE_TICKS))):
        q = kinematics.ik(kinematics.home, np.array([0.5 + rng.uniform(-0.1, 0.1), rng.uniform(-0.15, 0.15), 0.25]))
        fingers, action, cube, steps = kinematics.gripper_to_fingers(1.0), np.zeros(4), rng.uniform(-1, 1, 2), []
        for _ in range(EPISODE_TICKS):
            action[:3] = np.clip(0.7 * action[:3] + rng.normal(0, 0.012, 3), -0.03, 0.03)
            action[3] = 1.0 if rng.random() > 0.1 else -1.0
            steps.append((q.copy(), fingers.copy(), kinematics.fk(q), action.copy()))
            q, fingers = kinematics.action_to_joint_target(q, action)
        episodes.append((steps, cube))
    rows, cols = np.mgrid[0:camera, 0:camera]
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    topics = {'image': ('/camera/image_raw', 'sensor_msgs/msg/Image'),
              'joints': ('/joint_states', 'sensor_msgs/msg/JointState'),
              'action': ('/jepa/action', 'jepa_interfaces/msg/ActionStamped'),
              'ee': ('/sim/ee_pose', 'geometry_msgs/msg/PoseStamped'),
              'cube': ('/sim/cube_pose', 'geometry_msgs/msg/PoseStamped')}
    conns = {k: writer.add_connection(topic, kind, typestore=store) for k, (topic, kind) in topics.items()}

    def header(t):
        return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](
            sec=int(t), nanosec=int(round((t - int(t)) * 1e9)) % 1_000_000_000), frame_id='world')

    def put(name, t, msg):
        writer.write(conns[name], int(round(t * 1e9)), store.serialize_cdr(msg, topics[name][1]))

    def pose(t, xyz):
        return T['geometry_msgs/msg/PoseStamped'](header=header(t), pose=T['geometry_msgs/msg/Pose'](
            position=T['geometry_msgs/msg/Point'](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
            orientation=T['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0)))
    names = [*PANDA_ARM_JOINTS, *PANDA_FINGER_JOINTS]
    for k in range(ticks):
        steps, cube = episodes[(k // EPISODE_TICKS) % len(episodes)]
        q, fingers, ee, action = steps[k % EPISODE_TICKS]
        t = 100.0 + k * 0.1 + (k // EPISODE_TICKS) * 2.0         # 2 s of reset between episodes
        image = np.full((camera, camera, 3), 60, np.uint8)
        image[(rows - (ee[0] - 0.25) * 2 * camera) ** 2 + (cols - (ee[1] + 0.35) / 0.7 * camera) ** 2 < 30] = 230
        image[(rows - camera * (0.5 + 0.2 * cube[0])) ** 2 + (cols - camera * (0.5 + 0.2 * cube[1])) ** 2 < 20] = 120
        put('image', t, T['sensor_msgs/msg/Image'](header=header(t), height=camera, width=camera, encoding='rgb8',
                                                    is_bigendian=0, step=camera * 3, data=image.reshape(-1)))
        put('joints', t, T['sensor_msgs/msg/JointState'](header=header(t), name=names, position=np.r_[q, fingers],
                                                         velocity=np.zeros(0), effort=np.zeros(0)))
        put('ee', t, pose(t, ee))
        put('cube', t, pose(t, [0.5 + 0.1 * cube[0], 0.15 * cube[1], 0.02]))
        put('action', t + 0.002, T['jepa_interfaces/msg/ActionStamped'](
            header=header(t + 0.002), space='ee_delta', data=action.astype(np.float32)))
    writer.close()
    return path


def copies(bag: Path, folder: Path, count: int) -> list[Path]:
    """`count` bags under other names holding links to the files of `bag` (the same content, not the same path)."""
    out = []
    for i in range(count):
        copy = folder / f'{bag.name}_copy{i}'
        if not copy.exists():
            copy.mkdir(parents=True)
            for file in bag.iterdir():
                (copy / file.name).symlink_to(file.resolve())
        out.append(copy)
    return out


# ---------------------------------------------------------------- one measurement, in a process of its own

def memory_status() -> dict:
    fields = {}
    for line in Path('/proc/self/status').read_text().splitlines():
        key, _, value = line.partition(':')
        if key in ('VmRSS', 'VmHWM', 'RssAnon', 'RssFile', 'RssShmem'):
            fields[key] = int(value.split()[0]) / 1024.0      # MiB
    return fields


class PeakSampler(threading.Thread):
    """The peaks of RssAnon and RssFile, read every `period` s (the kernel keeps only the peak of their sum)."""

    def __init__(self, period: float = 0.02):
        super().__init__(daemon=True)
        self.period, self.peaks, self.running = period, {'RssAnon': 0.0, 'RssFile': 0.0}, True

    def run(self):
        while self.running:
            self.sample()
            time.sleep(self.period)

    def sample(self):
        status = memory_status()
        for key in self.peaks:
            self.peaks[key] = max(self.peaks[key], status.get(key, 0.0))

    def stop(self) -> dict:
        self.running = False
        self.join()
        self.sample()
        return {**self.peaks, 'VmHWM': memory_status()['VmHWM'],
                'maxrss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to drop its cached pages of one file (not the machine's whole page cache)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_through(path: Path) -> None:
    """Read a file once (not mapped: into the page cache, not into this process)."""
    with open(path, 'rb') as f:
        while f.read(16 << 20):
            pass


def measure(args) -> dict:
    import torch
    from jepa_world_model import dataset, train
    from jepa_world_model.model import WorldModel, WorldModelConfig

    torch.set_num_threads(os.cpu_count() or 1)
    before = memory_status()
    peaks = PeakSampler()
    peaks.start()
    started = time.perf_counter()
    ticks = dataset.load_bags(args.bags, args.cache, 64)
    load_s = time.perf_counter() - started
    frames_file = Path(ticks.images.filename)
    cfg = train.TrainConfig(batch_size=2, sequence_length=6, horizon=3) if args.quick else train.TrainConfig()
    length = max(cfg.sequence_length, cfg.horizon + 1)
    held = ticks.holdout_mask(cfg.val_fraction)
    generator = torch.Generator().manual_seed(0)
    result = {'ticks': len(ticks), 'bags': len(ticks.sources), 'frames_mb': ticks.images.nbytes / 2**20,
              'load_s': load_s, 'before': before, 'batch': cfg.batch_size, 'length': length}
    if args.train_steps:
        model = WorldModel(WorldModelConfig())
        cfg.val_every_s = 1e9            # one validation, at the end, as a run ends
        started = time.perf_counter()
        train.train_world_model(model, ticks, cfg, torch.device('cpu'), 1e9, args.train_steps, progress=False)
        result['train_world_model_s'] = time.perf_counter() - started
        result['peaks'] = peaks.stop()
        return result
    sampler = train.WindowSampler(ticks, ticks.windows(length, ~held), length, torch.device('cpu'))

    def windows_per_s(batches: int) -> float:
        started = time.perf_counter()
        for _ in range(batches):
            sampler.sample(cfg.batch_size, generator)
        return batches * cfg.batch_size / (time.perf_counter() - started)
    drop_page_cache(frames_file)
    result['loader_disk_windows_s'] = windows_per_s(args.batches)
    read_through(frames_file)
    result['loader_cached_windows_s'] = windows_per_s(args.batches)
    result['peaks_loader'] = peaks.stop()
    model = WorldModel(WorldModelConfig())
    optimizer = train.make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    batches = [sampler.sample(cfg.batch_size, generator) for _ in range(args.steps + 1)]

    def step(images, actions):
        loss, _ = train.jepa_loss(model, images, actions, cfg, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    step(*batches[0])                   # warm-up
    started = time.perf_counter()
    for images, actions in batches[1:]:
        step(images, actions)
    result['train_step_s'] = (time.perf_counter() - started) / args.steps
    return result


# ---------------------------------------------------------------- the runs

def run_measure(bags: list[Path], cache: Path, quick: bool, batches: int, steps: int, train_steps: int = 0) -> dict:
    command = [sys.executable, __file__, '--measure', '--cache', str(cache), '--batches', str(batches),
               '--steps', str(steps), '--train-steps', str(train_steps), *(['--quick'] if quick else [])]
    for bag in bags:
        command += ['--bag', str(bag)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f'{" ".join(command)} failed:\n{done.stderr[-3000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(label: str, r: dict) -> list[str]:
    b = r['before']
    before = (f'after the imports, before loading: {b["VmRSS"]:.0f} MiB (anonymous {b["RssAnon"]:.0f}, '
              f'file-backed {b["RssFile"]:.0f}: the libraries)')
    lines = [f'{label}: {r["ticks"]} ticks from {r["bags"]} bag(s), {r["frames_mb"]:.0f} MiB of 64x64 frames; '
             f'load {r["load_s"]:.1f} s']
    if 'train_world_model_s' in r:
        p = r['peaks']
        lines.append(f'  train_world_model ({r["train_world_model_s"]:.0f} s with its validation): peak RSS '
                     f'{p["VmHWM"]:.0f} MiB (anonymous {p["RssAnon"]:.0f}, file-backed {p["RssFile"]:.0f}); {before}')
        return lines
    p = r['peaks_loader']
    window_s = r['batch'] / r['train_step_s']
    lines += [f'  loading + sampling: peak RSS {p["VmHWM"]:.0f} MiB (anonymous {p["RssAnon"]:.0f}, file-backed '
              f'{p["RssFile"]:.0f}); {before}',
              f'  loader: {r["loader_disk_windows_s"]:.0f} windows/s from disk, {r["loader_cached_windows_s"]:.0f} '
              f'from the page cache ({r["batch"]} x {r["length"]} frames a batch); training step '
              f'{r["train_step_s"] * 1e3:.0f} ms = {window_s:.1f} windows/s; loader/training '
              f'{r["loader_disk_windows_s"] / window_s:.0f}x from disk, {r["loader_cached_windows_s"] / window_s:.0f}x '
              'cached']
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', dest='bags', action='append', default=[],
                        help='bags (or folders, globs) to measure (default: a generated play bag)')
    parser.add_argument('--ticks', type=int, default=None, help=f'ticks of the generated bag ({SHIPPED_PLAY_TICKS})')
    parser.add_argument('--workdir', type=Path, default=Path('runs/loader_memory'),
                        help='where the generated bag and the caches go (reused: the bag is generated once)')
    parser.add_argument('--batches', type=int, default=None, help='batches timed per loader figure (200)')
    parser.add_argument('--steps', type=int, default=None, help='training steps timed (10)')
    parser.add_argument('--train-steps', type=int, default=0,
                        help='also run train_world_model for this many steps, in a process of its own')
    parser.add_argument('--out', type=Path, help='write what is printed here too')
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--measure', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--cache', type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return 0
    batches = args.batches or (3 if args.quick else 200)
    steps = args.steps or (2 if args.quick else 10)
    ticks = args.ticks or (300 if args.quick else SHIPPED_PLAY_TICKS)
    workdir = args.workdir.resolve()
    from jepa_bringup.provenance import machine_load, provenance
    record = provenance([sys.executable, *sys.argv])
    lines = [f'# bench/loader_memory.py: {record["date_utc"]}, commit {record["git"]["commit"]}'
             f'{" (with uncommitted changes)" if record["git"]["dirty"] else ""}',
             f'# machine: {record["machine"]["cpu"]}, {record["machine"]["cores"]} cores, torch '
             f'{record["machine"]["torch"]}; load average at start {record["load_start"]["loadavg_1_5_15"]}',
             f'# command: {" ".join(record["command"])}']
    if args.bags:
        base = args.bags
        lines.append(f'# data: {", ".join(base)}')
    else:
        bag = workdir / f'play_{ticks}_{CAMERA}px'
        if not (bag / 'metadata.yaml').is_file():
            shutil.rmtree(bag, ignore_errors=True)
            started = time.perf_counter()
            write_play_bag(bag, ticks, CAMERA)
            lines.append(f'# generated {bag} in {time.perf_counter() - started:.0f} s')
        base = [str(bag)]
        size = sum(f.stat().st_size for f in bag.iterdir()) / 2**20
        shipped = ', the size of the shipped model\'s play data' if ticks == SHIPPED_PLAY_TICKS else ''
        lines.append(f'# data: a generated play bag of {ticks} ticks at {CAMERA}x{CAMERA} ({size:.0f} MiB){shipped}')
    from jepa_world_model.dataset import expand_bags
    one = expand_bags(base)
    ten = [c for b in one for c in copies(b, workdir / 'copies', 10)]
    cache = workdir / 'cache'
    shutil.rmtree(cache, ignore_errors=True)
    runs = [('10x cold', ten)] if args.quick else [('1x cold', one), ('1x warm', one), ('10x cold', ten),
                                                      ('10x warm', ten)]
    for line in lines:
        print(line, flush=True)
    for label, bags in runs:
        for line in describe(label, run_measure(bags, cache, args.quick, batches, steps)):
            print(line, flush=True)
            lines.append(line)
    if args.train_steps:
        for label, bags in (('1x', one), ('10x', ten)):
            for line in describe(label, run_measure(bags, cache, args.quick, batches, steps, args.train_steps)):
                print(line, flush=True)
                lines.append(line)
    lines.append(f'# load average at end {machine_load()["loadavg_1_5_15"]}')
    print(lines[-1])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text('\n'.join(lines) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
