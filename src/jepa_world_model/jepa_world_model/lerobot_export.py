"""Bags as a LeRobotDataset (the format robot-learning users share on the Hugging Face hub), and such a dataset back
as training Ticks.

`jepa export-lerobot --bag BAG [--bag BAG ...] --out DIR [--arm PRESET [--urdf FILE] [--camera-topic TOPIC]]
[--task TEXT] [--cache DIR]` writes the ticks of the bags (the control grid `jepa train` trains on: dataset.py; --bag
takes what `jepa train --bag` takes) in the LeRobotDataset v3.0 layout that LeRobot 0.4 reads with
`LeRobotDataset('local/play', root=DIR)`:

    meta/info.json            codebase_version v3.0, fps, robot_type, the features below, where the files are
    meta/stats.json           min, max, mean, std, count, q01..q99 of every feature (images per channel, in [0, 1])
    meta/tasks.parquet        the one task (--task)
    meta/episodes/chunk-000/file-000.parquet   per episode: its rows, its data file, its task, its statistics
    meta/jepa_sources.json    the bags exported: paths, sha256 of their files, recorded or derived actions
    data/chunk-000/file-NNN.parquet            a row per tick, in files of about DATA_FILE_MB, episodes whole

Features: observation.images.camera (the frames as the camera recorded them, PNG: lossless, so a training from
the export sees the pixels a training from the bag sees), observation.state (the layout's arm then gripper joint
positions), action (the end-effector step [dx, dy, dz, gripper] taken towards the next tick), observation.ee_position
(m), observation.environment_state (the cube's position; only when the bags recorded one, NaN where unknown),
stamp (the tick's time, s) and LeRobot's own timestamp (s since the episode's first tick), frame_index,
episode_index, index and task_index. An episode is a segment of a bag: consecutive ticks one control period apart,
which no training window leaves.

`jepa train --bag DIR` trains from such a dataset: dataset.load_bags recognizes meta/info.json and read_lerobot
turns it back into Ticks (frames resized as a bag's are) through the same memory-mapped cache. It reads datasets
with this action and these state joints (another LeRobot dataset's actions, joint targets or velocities, are not
the end-effector steps the world model learns), one camera stored as images, at the control rate.

The files are written and read with pyarrow rather than through the `lerobot` package: lerobot 0.4.4 requires
torch < 2.11 and opencv-python-headless < 4.13 while this stack pins torch 2.13.0 and opencv-python-headless
5.0.0.93, so pip cannot install it beside them, and it brings some 110 packages (datasets, diffusers, wandb,
rerun-sdk, CUDA wheels). The layout follows lerobot 0.4.4's own writer (lerobot/datasets/lerobot_dataset.py,
utils.py, compute_stats.py), and lerobot 0.4.4 reads what this module writes.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jepa_world_model.bag_layout import BagLayout, add_arm_arguments, arm_layout
from jepa_common.digest import file_sha256
from jepa_world_model.dataset import DT, BagError, Ticks, expand_bags, is_lerobot_dataset, load_bag
from jepa_world_model.model import resize_rgb

CODEBASE_VERSION = 'v3.0'
CAMERA = 'observation.images.camera'
STATE = 'observation.state'
ACTION = 'action'
EE = 'observation.ee_position'
CUBE = 'observation.environment_state'
STAMP = 'stamp'
ACTION_NAMES = ['dx', 'dy', 'dz', 'gripper']
DEFAULT_FEATURES = {name: {'dtype': dtype, 'shape': [1], 'names': None} for name, dtype in (
    ('timestamp', 'float32'), ('frame_index', 'int64'), ('episode_index', 'int64'), ('index', 'int64'),
    ('task_index', 'int64'))}
DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
EPISODES_PATH = 'meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
CHUNK_SIZE = 1000            # files per chunk folder (lerobot's DEFAULT_CHUNK_SIZE)
DATA_FILE_MB = 100           # a data file is closed once it holds this much (lerobot's DEFAULT_DATA_FILE_SIZE_IN_MB)
VIDEO_FILE_MB = 200          # lerobot's default, recorded in info.json (no videos are written)
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
ROWS_PER_BATCH = 256         # rows encoded (or decoded) at a time: the frames in memory at once


# ---------------------------------------------------------------- statistics (as lerobot's compute_stats)

def _stats(values: np.ndarray) -> dict:
    """Statistics of (n, d) values over n (NaN, an unknown value, left out)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)     # a column with no known value: NaN statistics
        stats = {'min': np.nanmin(values, axis=0), 'max': np.nanmax(values, axis=0),
                 'mean': np.nanmean(values, axis=0), 'std': np.nanstd(values, axis=0)}
        stats.update({f'q{round(q * 100):02d}': np.nanquantile(values, q, axis=0) for q in QUANTILES})
    stats['count'] = np.array([len(values)])
    return stats


def _image_stats(frames: np.ndarray) -> dict:
    """Per-channel statistics, in [0, 1], of (n, H, W, 3) uint8 frames, shaped (3, 1, 1) as lerobot stores them,
    over lerobot's sample of them (all up to 100, then n^0.75 evenly spaced up to 10,000; frames of 300 pixels or
    more thinned to about 150), taken from each channel's histogram of its 256 levels: exact, in little memory."""
    n = len(frames)
    samples = max(min(100, n), min(int(n ** 0.75), 10_000))
    picked = frames[np.round(np.linspace(0, n - 1, samples)).astype(int)]
    height, width = picked.shape[1:3]
    if max(height, width) >= 300:
        step = int(max(height, width) / 150)
        picked = picked[:, ::step, ::step]
    counts = np.stack([np.bincount(picked[..., c].ravel(), minlength=256) for c in range(3)]).astype(np.float64)
    levels = np.arange(256) / 255.0
    total = counts.sum(axis=1)
    mean = counts @ levels / total
    present, cumulative = counts > 0, np.cumsum(counts, axis=1) / total[:, None]
    stats = {'min': levels[np.argmax(present, axis=1)], 'max': levels[255 - np.argmax(present[:, ::-1], axis=1)],
             'mean': mean, 'std': np.sqrt((counts * (levels - mean[:, None]) ** 2).sum(axis=1) / total)}
    stats.update({f'q{round(q * 100):02d}': levels[np.argmax(cumulative >= q, axis=1)] for q in QUANTILES})
    stats = {k: v.reshape(3, 1, 1) for k, v in stats.items()}
    stats['count'] = np.array([samples])
    return stats


def _aggregate(episode_stats: list[dict]) -> dict:
    """The statistics of several episodes as lerobot's aggregate_stats takes them: weighted means and variances,
    overall extremes, quantiles averaged with the episodes' weights."""
    out = {}
    for key in episode_stats[0]:
        stats = [s[key] for s in episode_stats]
        counts = np.stack([s['count'] for s in stats]).astype(np.float64)
        means = np.stack([s['mean'] for s in stats])
        weights = counts.reshape(-1, *[1] * (means.ndim - 1))
        total = counts.sum()
        mean = (means * weights).sum(axis=0) / total
        variance = ((np.stack([s['std'] for s in stats]) ** 2 + (means - mean) ** 2) * weights).sum(axis=0) / total
        out[key] = {'min': np.min(np.stack([s['min'] for s in stats]), axis=0),
                    'max': np.max(np.stack([s['max'] for s in stats]), axis=0),
                    'mean': mean, 'std': np.sqrt(variance), 'count': np.array([int(total)])}
        for q in (k for k in stats[0] if k.startswith('q')):
            out[key][q] = (np.stack([s[q] for s in stats]) * weights).sum(axis=0) / total
    return out


def _listed(stats: dict) -> dict:
    return {key: {k: np.asarray(v).tolist() for k, v in values.items()} for key, values in stats.items()}


# ---------------------------------------------------------------- writing

def _features(layout: BagLayout, frame_shape: tuple, with_cube: bool) -> dict:
    features = {
        CAMERA: {'dtype': 'image', 'shape': list(frame_shape), 'names': ['height', 'width', 'channels']},
        STATE: {'dtype': 'float32', 'shape': [len(layout.joints)], 'names': list(layout.joints)},
        ACTION: {'dtype': 'float32', 'shape': [4], 'names': ACTION_NAMES},
        EE: {'dtype': 'float32', 'shape': [3], 'names': ['x', 'y', 'z']},
    }
    if with_cube:
        features[CUBE] = {'dtype': 'float32', 'shape': [3], 'names': ['cube_x', 'cube_y', 'cube_z']}
    features[STAMP] = {'dtype': 'float64', 'shape': [1], 'names': None}
    return {**features, **DEFAULT_FEATURES}


def _arrow_type(feature: dict) -> pa.DataType:
    if feature['dtype'] == 'image':
        return pa.struct([('bytes', pa.binary()), ('path', pa.string())])
    value = pa.from_numpy_dtype(np.dtype(feature['dtype']))
    return value if feature['shape'] == [1] else pa.list_(value, feature['shape'][0])


def _hf_feature(feature: dict) -> dict:
    """The `datasets` library's description of a feature (the parquet schema's 'huggingface' metadata, with which
    `datasets` decodes the image column without lerobot)."""
    if feature['dtype'] == 'image':
        return {'_type': 'Image'}
    value = {'dtype': feature['dtype'], '_type': 'Value'}
    return value if feature['shape'] == [1] else {'feature': value, 'length': feature['shape'][0], '_type': 'List'}


def _schema(features: dict) -> pa.Schema:
    metadata = {'huggingface': json.dumps({'info': {'features': {k: _hf_feature(f) for k, f in features.items()}}})}
    return pa.schema([(name, _arrow_type(feature)) for name, feature in features.items()], metadata=metadata)


def _png(frame: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode('.png', np.ascontiguousarray(frame[..., ::-1]))
    if not ok:
        raise ValueError(f'a {frame.shape} frame could not be encoded as PNG')
    return encoded.tobytes()


class _DataFiles:
    """data/chunk-CCC/file-FFF.parquet, the next one begun at an episode's start once the current holds
    DATA_FILE_MB."""

    def __init__(self, root: Path, schema: pa.Schema):
        self.root, self.schema = root, schema
        self.number, self.writer, self.bytes = -1, None, 0

    @property
    def chunk_file(self) -> tuple[int, int]:
        return divmod(self.number, CHUNK_SIZE)

    def start_episode(self) -> tuple[int, int]:
        if self.writer is None or self.bytes >= DATA_FILE_MB << 20:
            self.close()
            self.number += 1
            chunk, file = self.chunk_file
            path = self.root / DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer, self.bytes = pq.ParquetWriter(path, self.schema, compression='snappy'), 0
        return self.chunk_file

    def write(self, columns: dict) -> None:
        table = pa.table(columns, schema=self.schema)
        self.writer.write_table(table)
        self.bytes += table.nbytes

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _episodes(ticks: Ticks) -> list[tuple[int, int]]:
    """[start, end) of each segment of one bag's ticks (consecutive: a bag's segments are runs)."""
    cuts = np.flatnonzero(np.diff(ticks.segment)) + 1
    edges = [0, *cuts.tolist(), len(ticks)]
    return list(zip(edges[:-1], edges[1:]))


def _write_tasks(root: Path, task: str) -> None:
    """meta/tasks.parquet as pandas writes lerobot's DataFrame(task_index, index=task): the task is the index."""
    pandas = {'index_columns': ['__index_level_0__'], 'column_indexes': [],
              'columns': [{'name': 'task_index', 'field_name': 'task_index', 'pandas_type': 'int64',
                           'numpy_type': 'int64', 'metadata': None},
                          {'name': None, 'field_name': '__index_level_0__', 'pandas_type': 'unicode',
                           'numpy_type': 'object', 'metadata': None}],
              'creator': {'library': 'pyarrow', 'version': pa.__version__}, 'pandas_version': '2.0.0'}
    schema = pa.schema([('task_index', pa.int64()), ('__index_level_0__', pa.string())],
                       metadata={'pandas': json.dumps(pandas)})
    pq.write_table(pa.table({'task_index': [0], '__index_level_0__': [task]}, schema=schema),
                   root / 'meta' / 'tasks.parquet')


def export(bags, out, layout: BagLayout | None = None, task: str = 'play', cache_dir=None, dt: float = DT,
           command: str = '') -> dict:
    """Write the bags (what dataset.expand_bags takes) as a LeRobotDataset at `out`, which must not exist or be
    empty; it appears whole or not at all. Returns its info.json."""
    layout = layout or BagLayout()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f'--out {out}: exists and is not an empty folder (nothing is overwritten)')
    if not task.strip():
        raise ValueError('--task: empty; a LeRobotDataset names the task of its episodes')
    fps = round(1.0 / dt)
    if abs(fps * dt - 1.0) > 1e-9:
        raise ValueError(f'dt {dt} s: a LeRobotDataset has an integer frame rate, 1/dt is {1.0 / dt:.4g}')
    paths = expand_bags(bags)
    datasets = [p for p in paths if is_lerobot_dataset(p)]
    if datasets:
        raise BagError(f'{datasets[0]} is a LeRobot dataset already; --bag takes rosbag2 bags to export')
    parts = [load_bag(path, cache_dir, None, dt, layout) for path in paths]    # the frames as recorded
    shapes = {part.images.shape[1:] for part in parts}
    if len(shapes) != 1:
        raise BagError(f'the bags\' cameras record frames of different sizes ({sorted(shapes)}); export them apart')
    with_cube = any(np.isfinite(part.cube).any() for part in parts)
    features = _features(layout, next(iter(shapes)), with_cube)
    staging = out.with_name(f'.{out.name}.staging-{os.getpid()}')
    shutil.rmtree(staging, ignore_errors=True)
    (staging / 'meta').mkdir(parents=True)
    try:
        info = _write(staging, parts, features, layout, task, fps, command)
        if out.exists():
            out.rmdir()
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def _write(root: Path, parts: list[Ticks], features: dict, layout: BagLayout, task: str, fps: int,
           command: str) -> dict:
    data = _DataFiles(root, _schema(features))
    episodes, all_stats, index = [], [], 0
    for part in parts:
        for start, end in _episodes(part):
            episode = len(episodes)
            chunk, file = data.start_episode()
            values = {STATE: part.proprio[start:end], ACTION: part.actions[start:end], EE: part.ee[start:end],
                      CUBE: part.cube[start:end], STAMP: part.stamps[start:end, None]}
            n = end - start
            values.update({'timestamp': (part.stamps[start:end] - part.stamps[start]).astype(np.float32)[:, None],
                           'frame_index': np.arange(n)[:, None], 'episode_index': np.full((n, 1), episode),
                           'index': np.arange(index, index + n)[:, None], 'task_index': np.zeros((n, 1), np.int64)})
            for row in range(0, n, ROWS_PER_BATCH):
                rows = slice(row, min(row + ROWS_PER_BATCH, n))
                columns = {CAMERA: [{'bytes': _png(frame), 'path': None}
                                    for frame in part.images[start + rows.start:start + rows.stop]]}
                for name, feature in features.items():
                    if name != CAMERA:
                        column = np.asarray(values[name][rows], dtype=feature['dtype'])
                        columns[name] = column[:, 0] if feature['shape'] == [1] else list(column)
                data.write(columns)
            stats = {CAMERA: _image_stats(part.images[start:end])}
            stats.update({name: _stats(np.asarray(values[name], dtype=feature['dtype']))
                          for name, feature in features.items() if name != CAMERA})
            all_stats.append(stats)
            episodes.append({'episode_index': episode, 'tasks': [task], 'length': n,
                             'data/chunk_index': chunk, 'data/file_index': file,
                             'dataset_from_index': index, 'dataset_to_index': index + n,
                             'meta/episodes/chunk_index': 0, 'meta/episodes/file_index': 0,
                             **{f'stats/{name}/{k}': v for name, listed in _listed(stats).items()
                                for k, v in listed.items()}})
            index += n
    data.close()
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), path, compression='snappy')
    _write_tasks(root, task)
    (root / 'meta' / 'stats.json').write_text(json.dumps(_listed(_aggregate(all_stats)), indent=4))
    info = {'codebase_version': CODEBASE_VERSION, 'robot_type': layout.arm or 'panda_sim',
            'total_episodes': len(episodes), 'total_frames': index, 'total_tasks': 1, 'chunks_size': CHUNK_SIZE,
            'data_files_size_in_mb': DATA_FILE_MB, 'video_files_size_in_mb': VIDEO_FILE_MB, 'fps': fps,
            'splits': {'train': f'0:{len(episodes)}'}, 'data_path': DATA_PATH,
            'video_path': None, 'features': features}
    (root / 'meta' / 'info.json').write_text(json.dumps(info, indent=4))
    sources = [source for part in parts for source in part.sources]
    (root / 'meta' / 'jepa_sources.json').write_text(json.dumps({'command': command, 'bags': sources}, indent=1))
    return info


# ---------------------------------------------------------------- reading

def _refuse(root: Path, problem: str) -> BagError:
    return BagError(f'LeRobot dataset {root}: {problem}')


def _check_features(root: Path, info: dict, layout: BagLayout, dt: float) -> tuple[str, dict]:
    """The camera feature's name and the features, or BagError naming what this dataset has that training cannot
    take."""
    version = str(info.get('codebase_version', '?'))
    if not version.startswith('v3.'):
        raise _refuse(root, f'codebase_version {version}: the v3.0 layout is read (lerobot\'s '
                            'convert_dataset_v21_to_v30 converts older datasets)')
    if info.get('fps') != round(1.0 / dt):
        raise _refuse(root, f'{info.get("fps")} frames/s; training takes one tick every {dt} s '
                            f'({round(1.0 / dt)} frames/s)')
    features = info.get('features', {})
    videos = [k for k, f in features.items() if f.get('dtype') == 'video']
    cameras = [k for k, f in features.items() if f.get('dtype') == 'image']
    if videos:
        raise _refuse(root, f'camera(s) {videos} stored as video; training reads cameras stored as images '
                            '(as `jepa export-lerobot` writes them)')
    if len(cameras) != 1:
        raise _refuse(root, f'{len(cameras)} image features ({cameras}); training reads one camera')
    expected = {STATE: list(layout.joints), ACTION: ACTION_NAMES, EE: ['x', 'y', 'z']}
    for name, names in expected.items():
        have = features.get(name, {}).get('names')
        if have != names:
            what = {STATE: f'the joint positions of {layout.describe()}',
                    ACTION: 'the end-effector step the world model learns',
                    EE: 'the end-effector position'}[name]
            raise _refuse(root, f'feature {name} is {have or "absent"}; training needs {names} ({what}'
                                f'{"; another --arm?" if name == STATE else ""})')
    return cameras[0], features


def read_lerobot(root, staging: Path, image_size: int | None = 64, dt: float = DT,
                 layout: BagLayout | None = None) -> list:
    """Write the arrays of Ticks of the LeRobot dataset `root` into the cache folder `staging` (dataset.py's
    cache), its frames decoded and resized a batch of rows at a time (image_size None: as stored); returns the
    sources. An episode is a segment. BagError naming what does not fit."""
    root, layout = Path(root), layout or BagLayout()
    try:
        info = json.loads((root / 'meta' / 'info.json').read_text())
    except (OSError, ValueError) as exc:
        raise _refuse(root, f'meta/info.json: {exc}') from exc
    camera, features = _check_features(root, info, layout, dt)
    files = sorted(root.glob('data/*/*.parquet'))
    total = int(info.get('total_frames', -1))
    if not files or total < 2:
        raise _refuse(root, f'{len(files)} data files, {total} frames: no ticks to train on')
    frame = features[camera]['shape']
    side = (image_size, image_size) if image_size is not None else tuple(frame[:2])
    images = np.lib.format.open_memmap(staging / 'images.npy', mode='w+', dtype=np.uint8, shape=(total, *side, 3))
    columns = {name: [] for name in (STATE, ACTION, EE, CUBE, STAMP, 'timestamp', 'episode_index', 'frame_index',
                                     'index') if name in features}
    row = 0
    try:
        for path in files:
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(ROWS_PER_BATCH, columns=[camera, *columns]):
                if row + batch.num_rows > total:
                    raise _refuse(root, f'{path.relative_to(root)}: more rows than the {total} frames of info.json')
                for k, cell in enumerate(batch.column(camera).to_pylist()):
                    decoded = cv2.imdecode(np.frombuffer(cell['bytes'] or b'', np.uint8), cv2.IMREAD_COLOR) \
                        if cell else None
                    if decoded is None or decoded.shape != tuple(frame):
                        raise _refuse(root, f'{path.relative_to(root)} row {row + k}: {camera} is not a '
                                            f'{frame[1]}x{frame[0]} image')
                    rgb = np.ascontiguousarray(decoded[..., ::-1])
                    images[row + k] = rgb if image_size is None else resize_rgb(rgb, image_size)
                for name in columns:
                    column = batch.column(name)
                    columns[name].append(column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)
                                         if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)
                                         else column.to_numpy(zero_copy_only=False))
                row += batch.num_rows
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise _refuse(root, f'unreadable data file: {exc}') from exc
    images.flush()
    del images
    if row != total:
        raise _refuse(root, f'{row} rows in its data files, {total} frames in info.json')
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    episode, frame_index = arrays['episode_index'], arrays['frame_index']
    ordered = (np.array_equal(arrays['index'], np.arange(total)) and np.all(np.diff(episode) >= 0)
               and np.all(np.where(np.diff(episode) == 0, np.diff(frame_index) == 1, frame_index[1:] == 0))
               and frame_index[0] == 0)
    if not ordered:
        raise _refuse(root, 'its rows are not in index order, episode after episode, frame after frame')
    saved = {'actions': arrays[ACTION].astype(np.float32), 'proprio': arrays[STATE].astype(np.float32),
             'ee': arrays[EE].astype(np.float32),
             'cube': (arrays[CUBE] if CUBE in arrays else np.full((total, 3), np.nan)).astype(np.float32),
             'segment': episode.astype(np.int64),
             'stamps': (arrays[STAMP] if STAMP in arrays else arrays['timestamp']).astype(np.float64)}
    for name, array in saved.items():
        np.save(staging / f'{name}.npy', array)
    exported = root / 'meta' / 'jepa_sources.json'
    source = {'path': str(root.resolve()), 'format': f'LeRobotDataset {info["codebase_version"]}',
              'sha256': {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob('*')) if p.is_file()},
              'actions': 'recorded', 'ticks': total,
              'exported_from': json.loads(exported.read_text())['bags'] if exported.is_file() else None}
    if not layout.is_default:
        source['arm'] = layout.to_dict()
    return [source]


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='jepa export-lerobot', description=__doc__.split('\n\n')[0])
    parser.add_argument('--bag', action='append', required=True,
                        help='bag, folder of bags or glob pattern (repeatable), as `jepa train --bag` takes them')
    parser.add_argument('--out', required=True, help='the LeRobotDataset folder to write (must not exist or be empty)')
    parser.add_argument('--task', default='play', help='the task of the episodes, in words (default: play)')
    parser.add_argument('--cache', default=None, help='directory for decoded-bag caches (default: user cache)')
    add_arm_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = ' '.join(['jepa', 'export-lerobot', *(sys.argv[1:] if argv is None else argv)])
    try:
        info = export(args.bag, args.out, arm_layout(args), args.task, args.cache, command=command)
    except (BagError, ValueError) as exc:
        print(f'jepa export-lerobot: {exc}', file=sys.stderr)
        return 2
    print(f'jepa export-lerobot: wrote {args.out}: {info["total_frames"]} frames in {info["total_episodes"]} '
          f'episodes at {info["fps"]} frames/s (LeRobotDataset {CODEBASE_VERSION})', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
