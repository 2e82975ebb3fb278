"""The decoded-frame cache on real rosbag2 files: one memory-mapped folder per bag, built once and reused,
found by the bag's content (not its path), rebuilt when the bag changes or the cache is damaged, never left half
written; several bags (a folder, a glob, a list) as one on-disk concatenation that training gathers from in place."""
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jepa_world_model import dataset, train
from jepa_world_model.dataset import BagError, decode_bag
from test_world_model_bags import write_bag

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('cache_bags')
    return {'a': write_bag(root / 'play' / 'a', n_ticks=30, seed=1),
            'b': write_bag(root / 'play' / 'day2' / 'b', n_ticks=25, seed=2),
            'root': root}


DECODED = {}    # (bag, settings) -> Ticks: each bag is decoded for real once in this module (seconds each)


@pytest.fixture(autouse=True)
def decodes(monkeypatch):
    """The bags decode_bag is asked to decode, in order."""
    calls = []
    real = dataset.decode_bag

    def counted(bag, *args, images_out=None, **kwargs):
        calls.append(bag)      # decoded in memory (the cache then writes the images itself)
        key = (str(bag), args, tuple(sorted(kwargs.items())))
        if key not in DECODED:
            DECODED[key] = real(bag, *args, **kwargs)
        return DECODED[key]
    monkeypatch.setattr(dataset, 'decode_bag', counted)
    return calls


def cache_folders(cache, kind='bag'):
    return sorted(cache.glob(f'{kind}-*'))


def test_one_bag_is_memory_mapped_from_its_cache_built_once(bags, tmp_path, decodes):
    cache = tmp_path / 'cache'
    ticks = dataset.load_bag(bags['a'], cache_dir=cache)
    assert isinstance(ticks.images, np.memmap) and ticks.images.shape == (30, 64, 64, 3)
    folder, = cache_folders(cache)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f'{name}.npy' for name in dataset.ARRAYS]
                                                              + ['ticks.json'])
    np.testing.assert_array_equal(ticks.images, dataset.decode_bag(bags['a'], 64, dataset.DT, None).images)
    decodes.clear()
    again = dataset.load_bag(bags['a'], cache_dir=cache)
    assert decodes == []
    np.testing.assert_array_equal(again.actions, ticks.actions)
    assert again.sources[0]['path'] == str(bags['a'].resolve())
    # Copy-on-write: what a caller writes into the arrays never reaches the cache.
    again.images[0] = 0
    assert dataset.load_bag(bags['a'], cache_dir=cache).images[0].any()


def test_decoding_writes_the_frames_to_disk_a_frame_at_a_time(bags, tmp_path):
    in_memory = dataset.decode_bag(bags['a'], 64, dataset.DT, None)
    spilled = decode_bag(bags['a'], images_out=tmp_path / 'images.npy')      # the real one, not the counted
    assert isinstance(spilled.images, np.memmap) and Path(spilled.images.filename) == tmp_path / 'images.npy'
    np.testing.assert_array_equal(spilled.images, in_memory.images)
    assert [p.name for p in tmp_path.iterdir()] == ['images.npy']             # the spilled frames are gone
    as_recorded = decode_bag(bags['a'], None, images_out=tmp_path / 'native.npy')
    assert as_recorded.images.shape == (30, 80, 80, 3)


def test_the_cache_follows_the_bags_content_not_its_path(bags, tmp_path, decodes):
    cache = tmp_path / 'cache'
    dataset.load_bag(bags['a'], cache_dir=cache)
    moved = shutil.copytree(bags['a'], tmp_path / 'moved', copy_function=shutil.copy2)   # keeps the file times
    ticks = dataset.load_bag(moved, cache_dir=cache)
    assert decodes == [bags['a']] and len(cache_folders(cache)) == 1
    assert ticks.sources[0]['path'] == str(moved.resolve())
    # The same bag rewritten in place (a file of another time) is decoded again, into a cache of its own.
    storage = next(moved.glob('*.mcap'))
    os.utime(storage, ns=(storage.stat().st_atime_ns, storage.stat().st_mtime_ns + 10**9))
    dataset.load_bag(moved, cache_dir=cache)
    assert decodes == [bags['a'], moved] and len(cache_folders(cache)) == 2


@pytest.mark.parametrize('damage', ['truncated', 'missing', 'no_ticks_json', 'other_shape'])
def test_a_damaged_cache_is_rebuilt(bags, tmp_path, decodes, damage):
    cache = tmp_path / 'cache'
    # In memory: a file changed in place under a mapping of it is gone from under it (the cache itself only ever
    # replaces whole folders, so the files a running training maps stay as they were).
    expected = {name: np.array(array) for name, array in vars(dataset.load_bag(bags['a'], cache_dir=cache)).items()
                if name in dataset.ARRAYS}
    folder, = cache_folders(cache)
    if damage == 'truncated':
        path = folder / 'images.npy'
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    elif damage == 'missing':
        (folder / 'actions.npy').unlink()
    elif damage == 'no_ticks_json':
        (folder / 'ticks.json').unlink()
    else:
        np.save(folder / 'proprio.npy', np.zeros((3, 9), np.float32))
    ticks = dataset.load_bag(bags['a'], cache_dir=cache)
    assert len(decodes) == 2
    for name in dataset.ARRAYS:
        np.testing.assert_array_equal(getattr(ticks, name), expected[name])


def test_a_build_that_fails_leaves_no_cache(bags, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    save_ticks = dataset.save_ticks

    def interrupted(folder, ticks):
        np.save(folder / 'images.npy', ticks.images)
        raise KeyboardInterrupt
    monkeypatch.setattr(dataset, 'save_ticks', interrupted)
    with pytest.raises(KeyboardInterrupt):
        dataset.load_bag(bags['a'], cache_dir=cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith('.lock')] == []
    monkeypatch.setattr(dataset, 'save_ticks', save_ticks)
    assert len(dataset.load_bag(bags['a'], cache_dir=cache)) == 30


def test_two_processes_that_want_one_cache_build_it_once(bags, tmp_path, decodes, monkeypatch):
    # Threads stand for the processes: each opens the lock file itself, and flock excludes open files, not processes.
    save_ticks = dataset.save_ticks

    def slow(folder, ticks):
        time.sleep(0.3)
        return save_ticks(folder, ticks)
    monkeypatch.setattr(dataset, 'save_ticks', slow)
    loaded = []
    threads = [threading.Thread(target=lambda: loaded.append(dataset.load_bag(bags['a'], cache_dir=tmp_path)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loaded) == 2 and decodes == [bags['a']]
    np.testing.assert_array_equal(loaded[0].images, loaded[1].images)


def test_bags_by_folder_glob_and_list(bags, tmp_path):
    root, a, b = bags['root'], bags['a'], bags['b']
    assert dataset.expand_bags(root / 'play') == [a, b]                  # recursively, in name order
    (root / 'play' / 'collect.log').write_text('what a glob matches beside the bags is passed over')
    assert dataset.expand_bags(str(root / 'play' / '*')) == [a, root / 'play' / 'day2' / 'b']
    assert dataset.expand_bags(str(root / '**' / 'b')) == [b]
    assert dataset.expand_bags([b, a, root / 'play']) == [b, a]           # each bag once, in the order named
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    with pytest.raises(BagError, match='0 file.* match this pattern, none a bag'):
        dataset.expand_bags(str(tmp_path / 'nothing*'))
    with pytest.raises(BagError, match='1 file.* match this pattern, none a bag'):
        dataset.expand_bags(str(root / 'play' / '*.log'))
    with pytest.raises(BagError, match='holds neither'):
        dataset.expand_bags(tmp_path / 'empty')
    with pytest.raises(BagError, match='no such bag'):
        dataset.expand_bags(tmp_path / 'absent')


def test_several_bags_are_one_memory_mapped_concatenation(bags, tmp_path, decodes):
    cache = tmp_path / 'cache'
    ticks = dataset.load_bags([bags['root'] / 'play'], cache_dir=cache)
    a, b = (dataset.load_bag(bags[k], cache_dir=cache) for k in 'ab')
    assert len(ticks) == 55 and isinstance(ticks.images, np.memmap)
    assert len(cache_folders(cache, 'set')) == 1 and len(decodes) == 2
    for name in ('images', 'actions', 'proprio', 'ee', 'cube', 'stamps'):
        np.testing.assert_array_equal(getattr(ticks, name), np.concatenate([getattr(a, name), getattr(b, name)]))
    np.testing.assert_array_equal(ticks.segment, np.repeat([0, 1], [30, 25]))    # no window crosses the bags
    assert len(ticks.windows(6)) == 25 + 20
    assert [s['path'] for s in ticks.sources] == [str(bags[k].resolve()) for k in 'ab']
    assert json.loads((cache_folders(cache, 'set')[0] / 'ticks.json').read_text())['ticks'] == 55
    # Reused; training gathers its windows from the mapped file, without a copy of the frames.
    decodes.clear()
    again = dataset.load_bags([bags['a'], bags['b']], cache_dir=cache)
    assert decodes == [] and len(cache_folders(cache, 'set')) == 1
    sampler = train.WindowSampler(again, again.windows(6), 6, torch.device('cpu'))
    assert sampler.images.data_ptr() == again.images.ctypes.data
    images, actions = sampler.gather(torch.tensor([3, 40]))
    np.testing.assert_array_equal(images.numpy(), again.images[np.add.outer([3, 40], np.arange(6))])


def test_the_held_out_ticks_are_the_last_of_every_segment():
    # Segments interleaved and of all lengths: the held-out share of each is its last round(n * fraction) ticks.
    segment = np.array([0, 0, 1, 0, 1, 2, 0, 1, 1, 0, 0, 3, 1, 1])
    n = len(segment)
    ticks = dataset.Ticks(images=np.zeros((n, 1, 1, 3), np.uint8), actions=np.zeros((n, 4)), proprio=np.zeros((n, 9)),
                          ee=np.zeros((n, 3)), cube=np.zeros((n, 3)), segment=segment, stamps=np.arange(n) * 0.1)
    held = ticks.holdout_mask(0.34)
    for seg in np.unique(segment):
        idx = np.flatnonzero(segment == seg)
        n_held = int(round(len(idx) * 0.34))
        assert held[idx].tolist() == [False] * (len(idx) - n_held) + [True] * n_held
    assert held.sum() == 2 + 2 + 0 + 0
