"""The round trip bag -> LeRobotDataset -> training on a small real rosbag2 bag: `jepa export-lerobot` writes the
v3.0 layout, `jepa train --bag DIR` reads it back as the very ticks of the bag (same frames, actions, joints,
segments) and trains; what training cannot take from a LeRobot dataset is refused, naming it."""
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jepa_bringup import cli
from jepa_world_model import dataset, lerobot_export, train
from jepa_world_model.bag_layout import layout_from_preset
from jepa_world_model.dataset import BagError
from test_world_model_bags import CAMERA, make_episode, write_bag

pytestmark = pytest.mark.usefixtures('one_torch_thread')


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A bag of two episodes (a reset between them: two segments), exported."""
    root = tmp_path_factory.mktemp('lerobot')
    bag = write_bag(root / 'play', steps=make_episode(24, 4) + make_episode(20, 5, start=(0.4, 0.2, 0.4)))
    out, cache = root / 'play_lerobot', root / 'cache'
    assert cli.main(['export-lerobot', '--bag', str(bag), '--out', str(out), '--cache', str(cache),
                     '--task', 'motor babbling']) == 0
    return {'bag': bag, 'out': out, 'cache': cache, 'root': root}


def test_the_export_is_a_lerobot_v3_dataset(exported):
    out = exported['out']
    info = json.loads((out / 'meta' / 'info.json').read_text())
    assert info['codebase_version'] == 'v3.0' and info['fps'] == 10 and info['robot_type'] == 'panda_sim'
    assert (info['total_frames'], info['total_episodes'], info['splits']) == (44, 2, {'train': '0:2'})
    features = info['features']
    assert features['observation.images.camera'] == {'dtype': 'image', 'shape': [CAMERA, CAMERA, 3],
                                                     'names': ['height', 'width', 'channels']}
    assert features['action']['names'] == ['dx', 'dy', 'dz', 'gripper']
    assert len(features['observation.state']['names']) == 9
    data = pq.read_table(out / 'data' / 'chunk-000' / 'file-000.parquet')
    assert data.column('episode_index').to_pylist() == [0] * 24 + [1] * 20
    assert data.column('frame_index').to_pylist() == list(range(24)) + list(range(20))
    assert data.column('timestamp').to_pylist()[:3] == pytest.approx([0.0, 0.1, 0.2], abs=1e-6)
    episodes = pq.read_table(out / 'meta' / 'episodes' / 'chunk-000' / 'file-000.parquet').to_pylist()
    assert [(e['dataset_from_index'], e['dataset_to_index'], e['tasks']) for e in episodes] == \
        [(0, 24, ['motor babbling']), (24, 44, ['motor babbling'])]
    stats = json.loads((out / 'meta' / 'stats.json').read_text())
    assert stats['observation.images.camera']['mean'][0][0][0] == pytest.approx(
        np.asarray(dataset.load_bag(exported['bag'], exported['cache'], None).images)[..., 0].mean() / 255, abs=0.02)
    assert stats['action']['count'] == [44] and len(stats['action']['q99']) == 4
    tasks = pq.read_table(out / 'meta' / 'tasks.parquet')
    assert tasks.to_pylist() == [{'task_index': 0, '__index_level_0__': 'motor babbling'}]
    sources = json.loads((out / 'meta' / 'jepa_sources.json').read_text())['bags']
    assert sources[0]['path'] == str(exported['bag'].resolve()) and 'metadata.yaml' in sources[0]['sha256']


def test_the_dataset_reads_back_as_the_bags_ticks_and_trains(exported, tmp_path):
    bag_ticks = dataset.load_bag(exported['bag'], exported['cache'])
    ticks = dataset.load_bags([exported['out']], exported['cache'])
    for name in ('images', 'actions', 'proprio', 'ee', 'cube', 'segment', 'stamps'):
        np.testing.assert_array_equal(getattr(ticks, name), getattr(bag_ticks, name), err_msg=name)
    assert ticks.sources[0]['format'] == 'LeRobotDataset v3.0'
    assert ticks.sources[0]['exported_from'][0]['path'] == str(exported['bag'].resolve())
    out = tmp_path / 'wm.pt'
    assert train.main(['--bag', str(exported['out']), '--cache', str(exported['cache']), '--out', str(out),
                       '--steps', '3', '--device', 'cpu', '--no-progress', '--threads', '1',
                       '--set', 'latent_dim=8', '--set', 'encoder_channels=[4, 4, 8, 8]',
                       '--set', 'predictor_hidden=16', '--set', 'batch_size=2', '--set', 'sequence_length=6',
                       '--set', 'horizon=2']) == 0
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint['metrics']['steps'] == 3
    assert checkpoint['provenance']['bags'][0]['path'] == str(exported['out'].resolve())


def test_what_training_cannot_take_is_refused(exported, tmp_path):
    out, cache = exported['out'], exported['cache']
    assert lerobot_export.main(['--bag', str(exported['bag']), '--out', str(out)]) == 2     # not overwritten
    with pytest.raises(BagError, match="observation.state .*joint positions of arm preset ur5e"):
        dataset.load_bag(out, cache, layout=layout_from_preset('ur5e'))
    copy = shutil.copytree(out, tmp_path / 'video')
    info = json.loads((copy / 'meta' / 'info.json').read_text())
    info['features']['observation.images.camera']['dtype'] = 'video'
    (copy / 'meta' / 'info.json').write_text(json.dumps(info))
    with pytest.raises(BagError, match='stored as video'):
        dataset.load_bag(copy, cache)
    info['features']['observation.images.camera']['dtype'] = 'image'
    info['features']['action']['names'] = ['shoulder_pan.pos', 'elbow.pos', 'wrist.pos', 'gripper.pos']
    (copy / 'meta' / 'info.json').write_text(json.dumps(info))
    with pytest.raises(BagError, match='feature action is .*end-effector step'):
        dataset.load_bag(copy, cache)
    with pytest.raises(BagError, match='is a LeRobot dataset already'):
        lerobot_export.export([out], tmp_path / 'again')
