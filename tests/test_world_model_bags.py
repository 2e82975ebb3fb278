"""World model data path on real rosbag2 files written here with rosbags: datasets (with and without
/jepa/action, mcap and sqlite3), errors on bad bags, a few training steps (and the record of the training images
perception checks camera frames against), eval JSON, surprise plot."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rosbags.rosbag2 import StoragePlugin, Writer

from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_FINGER_JOINTS, ArmKinematics
from jepa_rosbag.typestore import jepa_typestore
from jepa_world_model import dataset, eval_model, surprise, train, runtime
from jepa_world_model.bag_layout import BagLayout, layout_from_preset
from jepa_world_model.dataset import BagError
from jepa_world_model.model import load_checkpoint, resize_rgb
from ur5e_model import ARM_JOINTS as UR5E_ARM, GRIPPER_JOINTS as UR5E_GRIPPER, ur5e_kinematics, write_ur5e_urdf


pytestmark = pytest.mark.usefixtures('one_torch_thread')

DT = 0.1
CAMERA = 80           # not the model's 64: the dataset has to resize


def render(ee, cube, size=CAMERA, encoding='rgb8'):
    """A toy top-down camera: a red disk at the end effector (bigger when higher), a green cube."""
    rows, cols = np.mgrid[0:size, 0:size]
    image = np.full((size, size, 3), 60, dtype=np.uint8)
    image[..., 2] = 90 + (rows * 100 // size).astype(np.uint8)
    for (x, y), radius, colour in (((cube[0], cube[1]), 5, (40, 200, 40)),
                                   ((ee[0], ee[1]), 4 + 10 * ee[2], (230, 40, 40))):
        r, c = (x - 0.25) / 0.5 * size, (y + 0.35) / 0.7 * size
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = colour
    return image[..., ::-1].copy() if encoding == 'bgr8' else image


def make_episode(n_ticks, seed, start=(0.5, 0.0, 0.25)):
    """Joint trajectory driven through the real kinematics by smooth random ee_delta actions."""
    kinematics = ArmKinematics()
    rng = np.random.default_rng(seed)
    q = kinematics.ik(kinematics.home, np.array(start))
    fingers = kinematics.gripper_to_fingers(1.0)
    cube = np.array([0.5 + rng.uniform(-0.1, 0.1), rng.uniform(-0.15, 0.15), 0.02])
    action = np.zeros(4)
    steps = []
    for _ in range(n_ticks):
        action[:3] = np.clip(0.7 * action[:3] + rng.normal(0, 0.012, 3), -0.03, 0.03)
        action[3] = 1.0 if rng.random() > 0.1 else -1.0
        ee = kinematics.fk(q)
        steps.append((q.copy(), fingers.copy(), ee, cube.copy(), action.copy()))
        q, fingers = kinematics.action_to_joint_target(q, action)
    return steps


def write_bag(path, n_ticks=60, seed=0, actions=True, storage=StoragePlugin.MCAP, encoding='rgb8', poses=True,
              image_topic='/camera/image_raw', t0=100.0, steps=None, stamp=lambda topic, t: t,
              log_time=lambda topic, t: t, rclpy_bytes=False, arm_joints=PANDA_ARM_JOINTS,
              finger_joints=PANDA_FINGER_JOINTS, extra_joints=(), split_joint_states=False, description=None):
    """A bag of an episode at t0 + k * DT. stamp(topic, t) is the header stamp and log_time(topic, t) the time
    the bag records; rclpy_bytes writes what rclpy's serialize_message makes of each message (as a plain rclpy
    subscriber saving its messages with rosbags does). arm_joints / finger_joints name the joints of the steps'
    positions (another arm's), extra_joints are published too (at 0); split_joint_states publishes the arm and
    the fingers in two messages (an arm driver and a gripper driver); description is a /robot_description text."""
    store = jepa_typestore()
    T = store.types
    writer = Writer(path, version=9, storage_plugin=storage)
    writer.open()

    def header(t):
        sec = int(np.floor(t))
        stamp = T['builtin_interfaces/msg/Time'](sec=sec, nanosec=int(round((t - sec) * 1e9)))
        return T['std_msgs/msg/Header'](stamp=stamp, frame_id='world')

    conns = {'image': writer.add_connection(image_topic, 'sensor_msgs/msg/Image', typestore=store),
             'joints': writer.add_connection('/joint_states', 'sensor_msgs/msg/JointState', typestore=store)}
    if actions:
        conns['action'] = writer.add_connection('/jepa/action', 'jepa_interfaces/msg/ActionStamped', typestore=store)
    if poses:
        conns['ee'] = writer.add_connection('/sim/ee_pose', 'geometry_msgs/msg/PoseStamped', typestore=store)
        conns['cube'] = writer.add_connection('/sim/cube_pose', 'geometry_msgs/msg/PoseStamped', typestore=store)
    if description is not None:
        conns['description'] = writer.add_connection('/robot_description', 'std_msgs/msg/String', typestore=store)
        writer.write(conns['description'], int(round((t0 - 1.0) * 1e9)),
                     store.serialize_cdr(T['std_msgs/msg/String'](data=description), 'std_msgs/msg/String'))

    def put(name, t, msg, msgtype):
        data = store.serialize_cdr(msg, msgtype)
        if rclpy_bytes:
            from jepa_rosbag.endpoints import message_class
            from rclpy.serialization import deserialize_message, serialize_message
            data = serialize_message(deserialize_message(bytes(data), message_class(msgtype)))
        writer.write(conns[name], int(round(log_time(name, t) * 1e9)), data)

    def pose(t, xyz, name):
        return T['geometry_msgs/msg/PoseStamped'](header=header(stamp(name, t)), pose=T['geometry_msgs/msg/Pose'](
            position=T['geometry_msgs/msg/Point'](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
            orientation=T['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0)))

    names = [*finger_joints, *extra_joints, *arm_joints]      # another order than ours on purpose

    def joint_state(t, names, positions):
        return T['sensor_msgs/msg/JointState'](header=header(stamp('joints', t)), name=list(names),
                                               position=np.asarray(positions, dtype=np.float64),
                                               velocity=np.zeros(0), effort=np.zeros(0))
    for k, (q, fingers, ee, cube, action) in enumerate(steps or make_episode(n_ticks, seed)):
        t = t0 + k * DT
        pixels = render(ee, cube, encoding=encoding)
        put('image', t, T['sensor_msgs/msg/Image'](header=header(stamp('image', t)), height=CAMERA, width=CAMERA, encoding=encoding,
                                                   is_bigendian=0, step=CAMERA * 3, data=pixels.reshape(-1)),
            'sensor_msgs/msg/Image')
        if split_joint_states:
            put('joints', t - 0.001, joint_state(t - 0.001, finger_joints, fingers), 'sensor_msgs/msg/JointState')
            put('joints', t, joint_state(t, arm_joints, q), 'sensor_msgs/msg/JointState')
        else:
            put('joints', t, joint_state(t, names, np.r_[fingers, np.zeros(len(extra_joints)), q]),
                'sensor_msgs/msg/JointState')
        if poses:
            put('ee', t, pose(t, ee, 'ee'), 'geometry_msgs/msg/PoseStamped')
            put('cube', t, pose(t, cube, 'cube'), 'geometry_msgs/msg/PoseStamped')
        if actions:
            put('action', t + 0.002, T['jepa_interfaces/msg/ActionStamped'](
                header=header(stamp('action', t + 0.002)), space='ee_delta', data=action.astype(np.float32)),
                'jepa_interfaces/msg/ActionStamped')
    writer.close()
    return Path(path)


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('wm_bags')
    return {
        'train': write_bag(root / 'train', n_ticks=120, seed=1),
        'heldout': write_bag(root / 'heldout', n_ticks=60, seed=2),
        'derived': write_bag(root / 'derived', n_ticks=40, seed=3, actions=False, poses=False,
                             storage=StoragePlugin.SQLITE3, encoding='bgr8'),
        'root': root,
    }


def test_dataset_with_recorded_actions(bags, tmp_path):
    ticks = dataset.load_bag(bags['train'], cache_dir=tmp_path)
    assert len(ticks) == 120
    assert ticks.images.shape == (120, 64, 64, 3) and ticks.images.dtype == np.uint8
    episode = make_episode(120, 1)
    np.testing.assert_allclose(ticks.actions, np.array([s[4] for s in episode]), atol=1e-6)
    np.testing.assert_allclose(ticks.ee, np.array([s[2] for s in episode]), atol=1e-5)
    np.testing.assert_allclose(ticks.cube[:, :2], np.array([s[3][:2] for s in episode]), atol=1e-5)
    assert len(np.unique(ticks.segment)) == 1
    assert ticks.sources[0]['actions'] == 'recorded'
    assert len(ticks.windows(6)) == 115
    # The cache gives back the same arrays without decoding the bag.
    assert len(list(tmp_path.glob('bag-*'))) == 1
    again = dataset.load_bag(bags['train'], cache_dir=tmp_path)
    np.testing.assert_array_equal(again.images, ticks.images)
    assert again.sources == ticks.sources


def test_dataset_derives_actions_from_joint_motion(bags, tmp_path):
    ticks = dataset.load_bag(bags['derived'], cache_dir=tmp_path)
    episode = make_episode(40, 3)
    assert len(ticks) == 40 and ticks.sources[0]['actions'] == 'derived_from_joint_motion'
    commanded = np.array([s[4] for s in episode])[:-1]
    # The arm reaches each commanded ee step (IK residual of a few mm at most).
    np.testing.assert_allclose(ticks.actions[:-1, :3], commanded[:, :3], atol=4e-3)
    assert np.all(np.abs(ticks.actions[:, :3]) <= 0.03 + 1e-6)
    assert np.all(np.isnan(ticks.cube))        # no /sim/cube_pose: unknown, not made up
    np.testing.assert_allclose(ticks.ee, np.array([s[2] for s in episode]), atol=1e-5)   # FK fallback
    # bgr8 camera frames come out as RGB: the red end-effector disk is red.
    frame = ticks.images[0].reshape(-1, 3).astype(int)
    assert (frame[:, 0] - frame[:, 2] > 100).any()


def test_holdout_windows_share_no_tick(bags, tmp_path):
    ticks = dataset.load_bag(bags['train'], cache_dir=tmp_path)
    held = ticks.holdout_mask(0.2)
    train_starts, val_starts = ticks.windows(6, ~held), ticks.windows(6, held)
    train_ticks = set((train_starts[:, None] + np.arange(6)).ravel())
    val_ticks = set((val_starts[:, None] + np.arange(6)).ravel())
    assert train_ticks and val_ticks and not train_ticks & val_ticks


def test_reset_jump_cuts_segments(tmp_path):
    # Two episodes back to back on one clock, the second starting elsewhere (a reset between them).
    steps = make_episode(30, 4) + make_episode(30, 5, start=(0.4, 0.2, 0.4))
    ticks = dataset.decode_bag(write_bag(tmp_path / 'jump', steps=steps))
    assert len(ticks) == 60
    np.testing.assert_array_equal(ticks.segment, np.repeat([0, 1], 30))
    assert len(ticks.windows(6)) == 2 * 25


@pytest.mark.parametrize('problem', ['missing_topic', 'corrupt', 'encoding', 'not_a_bag'])
def test_bad_bags_give_clear_errors(tmp_path, problem):
    if problem == 'missing_topic':
        bag = write_bag(tmp_path / 'bag', n_ticks=5, image_topic='/camera/other')
        expected = ['/camera/image_raw', 'missing']
    elif problem == 'corrupt':
        bag = write_bag(tmp_path / 'bag', n_ticks=20)
        storage = next(bag.glob('*.mcap'))
        storage.write_bytes(storage.read_bytes()[:len(storage.read_bytes()) // 2])
        expected = ['truncated or corrupt']
    elif problem == 'encoding':
        bag = write_bag(tmp_path / 'bag', n_ticks=5, encoding='bgr8')
        # Rewrite the bag with a 16-bit depth encoding on the camera topic.
        shutil.rmtree(bag)
        store = jepa_typestore()
        T = store.types
        writer = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        conn = writer.add_connection('/camera/image_raw', 'sensor_msgs/msg/Image', typestore=store)
        joints = writer.add_connection('/joint_states', 'sensor_msgs/msg/JointState', typestore=store)
        for k in range(3):
            h = T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=k, nanosec=0), frame_id='')
            writer.write(conn, k, store.serialize_cdr(T['sensor_msgs/msg/Image'](
                header=h, height=4, width=4, encoding='16UC1', is_bigendian=0, step=8,
                data=np.zeros(32, np.uint8)), 'sensor_msgs/msg/Image'))
            writer.write(joints, k, store.serialize_cdr(T['sensor_msgs/msg/JointState'](
                header=h, name=[], position=np.zeros(0), velocity=np.zeros(0), effort=np.zeros(0)),
                'sensor_msgs/msg/JointState'))
        writer.close()
        expected = ['/camera/image_raw', '16UC1']
    else:
        bag = tmp_path / 'bag'
        bag.mkdir()
        (bag / 'notes.txt').write_text('hello')
        expected = ['not a rosbag2 bag']
    with pytest.raises(BagError) as err:
        dataset.load_bag(bag, cache_dir=tmp_path / 'cache')
    message = str(err.value)
    assert str(bag) in message
    for part in expected:
        assert part in message


WALL = 1.8e9   # a wall-clock time (2027), as a recorder without use_sim_time stamps what it receives


@pytest.mark.parametrize('actions', [False, True])
def test_sim_time_starting_at_zero_is_one_time_base(tmp_path, actions):
    """The simulator's first image and joint state are stamped 0.0 (sim time starts there), recorded at
    wall-clock time: the zero is a time, not "unset". It used to be replaced by its log time (1.8e9 s): the
    first tick was lost, and without /jepa/action the grid from 0.1 to 1.8e9 s did not fit in memory."""
    bag = write_bag(tmp_path / 'sim', n_ticks=30, seed=6, t0=0.0, actions=actions, log_time=lambda topic, t: WALL + t)
    ticks = dataset.decode_bag(bag)
    assert len(ticks) == 30 and len(np.unique(ticks.segment)) == 1
    assert ticks.stamps[0] == pytest.approx(0.002 if actions else 0.0)
    if actions:
        np.testing.assert_allclose(ticks.actions, np.array([s[4] for s in make_episode(30, 6)]), atol=1e-6)
    assert set(ticks.sources[0]['time_bases'].values()) == {dataset.HEADER_STAMPS}


@pytest.mark.parametrize('recorder', ['rclpy_subscriber', 'receive_time_only', 'header_stamp_only'])
def test_bags_of_other_recorders_train_like_ours(tmp_path, recorder):
    """rclpy_subscriber: rclpy's bytes, its receive times (wall clock, 1-3 ms after publication) and sim time
    stamps from 0; receive_time_only: no message stamped; header_stamp_only: one log time for all messages."""
    jitter = np.random.default_rng(0)
    kwargs = {
        'rclpy_subscriber': dict(t0=0.0, rclpy_bytes=True, log_time=lambda topic, t: WALL + t + jitter.uniform(1e-3, 3e-3)),
        'receive_time_only': dict(stamp=lambda topic, t: 0.0, log_time=lambda topic, t: WALL + t + jitter.uniform(0, 1e-3)),
        'header_stamp_only': dict(t0=0.0, log_time=lambda topic, t: WALL),
    }[recorder]
    ticks = dataset.decode_bag(write_bag(tmp_path / recorder, n_ticks=30, seed=7, **kwargs))
    episode = make_episode(30, 7)
    assert len(ticks) == 30 and len(np.unique(ticks.segment)) == 1
    np.testing.assert_allclose(ticks.actions, np.array([s[4] for s in episode]), atol=1e-6)
    np.testing.assert_allclose(ticks.cube[:, :2], np.array([s[3][:2] for s in episode]), atol=1e-5)
    base = dataset.RECEIVE_TIMES if recorder == 'receive_time_only' else dataset.HEADER_STAMPS
    assert set(ticks.sources[0]['time_bases'].values()) == {base}


def test_a_topic_mixing_clocks_is_refused_by_name(tmp_path):
    """Joint states from two publishers, one stamping sim time, one wall-clock time: refused before anything is
    sized from their stamps (it used to try a grid over 1.8e9 s)."""
    bag = write_bag(tmp_path / 'mixed', n_ticks=30, t0=0.0,
                    stamp=lambda topic, t: WALL + t if topic == 'joints' and t > 2.0 else t)
    with pytest.raises(BagError, match=r'mixed: the header stamps of /joint_states mix clocks: 21 in 0.0..2.0 s '
                                       r'and 9 in 1800000002.1..1800000002.9 s'):
        dataset.decode_bag(bag)


def test_topics_on_different_clocks_are_named(tmp_path):
    bag = write_bag(tmp_path / 'clocks', n_ticks=20, t0=0.0, log_time=lambda topic, t: WALL + t,
                    stamp=lambda topic, t: 0.0 if topic == 'joints' else t)
    with pytest.raises(BagError, match=r'/camera/image_raw \(header stamps 0.0..1.9 s\) and /joint_states '
                                       r'\(receive times 1800000000.0..1800000001.9 s\) .*different clocks'):
        dataset.decode_bag(bag)


def test_ticks_are_laid_only_where_there_are_samples(tmp_path):
    """Two episodes 10 days apart on one clock: two segments, and nothing allocated for the days between."""
    steps = make_episode(15, 8) + make_episode(15, 9)
    bag = write_bag(tmp_path / 'apart', steps=steps, stamp=lambda topic, t: t if t < 101.45 else t + 864_000,
                    log_time=lambda topic, t: t if t < 101.45 else t + 864_000)
    ticks = dataset.decode_bag(bag)
    assert len(ticks) == 30 and len(np.unique(ticks.segment)) == 2


def test_train_on_a_damaged_bag_is_a_clear_error(tmp_path, capsys):
    """4 KB overwritten in the middle of the bag: `jepa train` used to die with a raw rosbags traceback."""
    from test_rosbag_damage import overwrite_after_first_chunk
    bag = write_bag(tmp_path / 'damaged', n_ticks=10)
    overwrite_after_first_chunk(bag / 'damaged.mcap')
    assert train.main(['--bag', str(bag), '--cache', str(tmp_path / 'cache'), '--out', str(tmp_path / 'wm.pt'),
                       '--device', 'cpu', '--no-progress']) == 2
    err = capsys.readouterr().err
    assert f'jepa train: bag {bag}: storage file damaged.mcap is truncated or corrupt' in err and '--reindex' in err


def test_train_reduces_loss_checkpoints_and_resumes(bags, tmp_path, capsys):
    out = tmp_path / 'wm.pt'
    cache = tmp_path / 'cache'
    common = ['--bag', str(bags['train']), '--cache', str(cache), '--device', 'cpu', '--no-progress', '--threads', '1',
              '--set', 'latent_dim=16', '--set', 'encoder_channels=[8, 8, 16, 16]', '--set', 'predictor_hidden=64',
              '--set', 'batch_size=4', '--set', 'sequence_length=8', '--set', 'horizon=3', '--set', 'val_fraction=0.2']
    torch.manual_seed(0)
    ticks = dataset.load_bag(bags['train'], cache_dir=cache)
    assert train.main([*common, '--out', str(out), '--steps', '40']) == 0
    checkpoint = torch.load(out, weights_only=True)
    history = checkpoint['train_state']['history']
    assert history['step'][0] == 1
    assert np.mean(history['loss'][-2:]) < 0.8 * history['loss'][0]
    assert checkpoint['metrics']['steps'] == 40
    provenance = checkpoint['provenance']
    assert provenance['bags'][0]['path'] == str(bags['train'].resolve())
    assert 'metadata.yaml' in provenance['bags'][0]['sha256']
    assert provenance['commands'][0].startswith('jepa train --bag')
    assert out.with_suffix('.png').stat().st_size > 1000 and out.with_suffix('.json').is_file()
    model = load_checkpoint(out)
    assert model.latent_dim == 16 and model.model_id.startswith('wm.pt@')
    assert torch.all(model.latent_var > 0)
    with torch.no_grad():
        z = model.encode(ticks.images[:4])
    assert z.shape == (4, 16) and torch.isfinite(z).all()

    assert train.main([*common, '--out', str(out), '--steps', '5', '--resume', str(out)]) == 0
    resumed = torch.load(out, weights_only=True)
    assert resumed['metrics']['steps'] == 45 and len(resumed['provenance']['commands']) == 2

    assert train.main([*common, '--out', str(out), '--steps', '5', '--resume', str(out),
                       '--set', 'latent_dim=32']) == 2
    assert 'latent_dim' in capsys.readouterr().err


def test_training_records_its_images_statistics_and_perception_passes_the_frames_it_trained_on(bags, tmp_path):
    from jepa_perception.frame_check import FrameCheck
    out = tmp_path / 'wm.pt'
    assert train.main(['--bag', str(bags['train']), '--cache', str(tmp_path / 'cache'), '--out', str(out),
                       '--steps', '2', '--device', 'cpu', '--no-progress', '--threads', '1',
                       '--set', 'latent_dim=16', '--set', 'encoder_channels=[8, 8, 16, 16]',
                       '--set', 'predictor_hidden=64', '--set', 'batch_size=4', '--set', 'sequence_length=8',
                       '--set', 'horizon=3']) == 0
    metrics = torch.load(out, weights_only=True)['metrics']
    assert metrics['image_statistics']['statistics'] == ['brightness', 'contrast', 'roughness']
    check = FrameCheck()
    assert check.use_checkpoint(metrics, str(out)) == '' and check.reference.source == str(out)
    size = load_checkpoint(out).image_size
    # The camera frames of the training bag as perception gets them (80x80, resized to the encoder's input). The
    # toy camera draws only the hand's position, so a joint motion it does not show repeats a frame: those are the
    # frozen-camera rule's business (tests/test_perception_frame_check.py), so each picture is judged once here.
    frames = [render(ee, cube) for _, _, ee, cube, _ in make_episode(120, 1)]
    distinct = [rgb for i, rgb in enumerate(frames) if i == 0 or not np.array_equal(rgb, frames[i - 1])]
    assert len(distinct) > 60
    for rgb in distinct:
        verdict = check.check(rgb, resize_rgb(rgb, size))
        assert verdict, verdict.reason
    assert check.counts == {'size': 0, 'frozen': 0, 'statistics': 0}
    dim = (frames[0] * 0.3).astype(np.uint8)  # not what it trained on
    assert check.check(dim, resize_rgb(dim, size)).kind == 'statistics'


def test_training_and_the_runtime_share_one_device_choice():
    assert train.select_device is runtime.select_device


def test_eval_json_and_surprise_plot(bags, tmp_path):
    out = tmp_path / 'wm.pt'
    cache = tmp_path / 'cache'
    small = ['--set', 'latent_dim=16', '--set', 'encoder_channels=[8, 8, 16, 16]', '--set', 'predictor_hidden=64',
             '--set', 'batch_size=4', '--set', 'sequence_length=8', '--set', 'horizon=3']
    assert train.main(['--bag', str(bags['train']), '--cache', str(cache), '--out', str(out), '--steps', '10',
                       '--device', 'cpu', '--no-progress', '--threads', '1', *small]) == 0
    report = tmp_path / 'eval.json'
    assert eval_model.main(['--ckpt', str(out), '--bag', str(bags['heldout']), '--json', str(report),
                          '--cache', str(cache), '--baseline-steps', '10', '--no-progress', '--threads', '1']) == 0
    result = json.loads(report.read_text())
    horizons = result['horizons']
    assert horizons[:4] == [1, 2, 5, 10]
    for name in ('jepa', 'copy_last', 'generative'):
        values = result['normalized_error'][name]
        assert len(values) == len(horizons) and all(np.isfinite(values))
    assert result['normalized_error']['copy_last'][0] < result['normalized_error']['copy_last'][-1]
    probe = result['linear_probe_error_cm']
    assert np.isfinite(probe['ee']) and np.isfinite(probe['cube'])
    assert 'generative' in result['comparison']

    png = tmp_path / 'surprise.png'
    assert surprise.main(['--ckpt', str(out), '--bag', str(bags['heldout']), '--out', str(png),
                          '--cache', str(cache)]) == 0
    assert png.stat().st_size > 1000
    assert eval_model.main(['--ckpt', str(tmp_path / 'missing.pt'), '--bag', str(bags['heldout']),
                          '--json', str(report)]) == 2


# ---------------------------------------------------------------- another arm's bags (jepa train --arm)

UR5E_CAMERA = '/camera/camera/color/image_raw'     # arm preset ur5e's camera.image_topic, as the bag names it


def make_arm_episode(kinematics, n_ticks, seed, start=(0.45, 0.1, 0.35)):
    """make_episode on another arm's kinematics: from its home, the tool turned down above `start`, then smooth
    random ee_delta actions through its IK."""
    rng = np.random.default_rng(seed)
    q = kinematics.home.copy()
    for _ in range(60):
        q = kinematics.ik(q, np.array(start))
    fingers = kinematics.gripper_to_fingers(1.0)
    cube = np.array([0.45 + rng.uniform(-0.1, 0.1), rng.uniform(-0.15, 0.15), 0.02])
    action = np.zeros(4)
    steps = []
    for _ in range(n_ticks):
        action[:3] = np.clip(0.7 * action[:3] + rng.normal(0, 0.012, 3), -0.03, 0.03)
        action[3] = 1.0 if rng.random() > 0.15 else -1.0
        steps.append((q.copy(), fingers.copy(), kinematics.fk(q), cube.copy(), action.copy()))
        q, fingers = kinematics.action_to_joint_target(q, action)
    return steps


@pytest.fixture(scope='module')
def ur5e(tmp_path_factory):
    """A play bag of a UR5e with its driver's names: the preset's camera topic, the UR joints and the Robotiq knuckle
    (and its mimic twin, which the preset does not name), no /jepa/action and no privileged poses."""
    root = tmp_path_factory.mktemp('ur5e')
    urdf = write_ur5e_urdf(root / 'ur5e.urdf')
    # No workspace box: every commanded step is one the arm makes (the box would clip some).
    kinematics = ur5e_kinematics(urdf, workspace=((-2.0, 2.0),) * 3)
    steps = make_arm_episode(kinematics, 50, seed=11)
    arm = dict(arm_joints=UR5E_ARM, finger_joints=UR5E_GRIPPER, image_topic=UR5E_CAMERA, actions=False, poses=False)
    bag = write_bag(root / 'play', steps=steps, extra_joints=('robotiq_85_right_knuckle_joint',), **arm)
    return {'root': root, 'urdf': urdf, 'kinematics': kinematics, 'steps': steps, 'bag': bag, 'arm': arm,
            'layout': layout_from_preset('ur5e', urdf=str(urdf))}


def test_a_ur5e_bag_decodes_with_its_arm_preset_and_derives_its_actions(ur5e, tmp_path):
    layout = ur5e['layout']
    assert layout.image_topic == UR5E_CAMERA and layout.joints == (*UR5E_ARM, *UR5E_GRIPPER)
    ticks = dataset.load_bag(ur5e['bag'], cache_dir=tmp_path, layout=layout)
    steps = ur5e['steps']
    assert len(ticks) == 50 and len(np.unique(ticks.segment)) == 1
    assert ticks.proprio.shape == (50, 7)          # 6 arm joints + the knuckle, in the preset's order
    np.testing.assert_allclose(ticks.proprio[:, :6], np.array([s[0] for s in steps]), atol=1e-6)
    source = ticks.sources[0]
    assert source['actions'] == 'derived_from_joint_motion'
    assert source['arm']['arm'] == 'ur5e' and source['arm']['urdf_source'] == str(ur5e['urdf'])
    # The end-effector steps through the UR5e's forward kinematics are the commanded ones (IK residual of a few
    # mm), within the action bound; the gripper command is read from the knuckle's motion.
    commanded = np.array([s[4] for s in steps])[:-1]
    np.testing.assert_allclose(ticks.actions[:-1, :3], commanded[:, :3], atol=4e-3)
    assert np.all(np.abs(ticks.actions[:, :3]) <= 0.03 + 1e-6)
    np.testing.assert_array_equal(ticks.actions[:-1, 3], commanded[:, 3])
    assert 0 < (commanded[:, 3] < 0).sum() < len(commanded)
    np.testing.assert_allclose(ticks.ee, np.array([s[2] for s in steps]), atol=1e-5)
    assert np.all(np.isnan(ticks.cube))
    # Its own cache entry: the same bag read as the Panda's would be another (refused) decoding.
    assert len(list(tmp_path.glob('bag-*'))) == 1
    again = dataset.load_bag(ur5e['bag'], cache_dir=tmp_path, layout=layout)
    np.testing.assert_array_equal(again.actions, ticks.actions)


def test_joint_states_published_in_parts_are_merged(ur5e, tmp_path):
    """An arm driver and a gripper driver publishing on one joint_states topic: every sample has every joint."""
    bag = write_bag(tmp_path / 'split', steps=ur5e['steps'], split_joint_states=True, **ur5e['arm'])
    ticks = dataset.decode_bag(bag, layout=ur5e['layout'])
    whole = dataset.decode_bag(ur5e['bag'], layout=ur5e['layout'])
    assert len(ticks) == len(whole)
    np.testing.assert_allclose(ticks.proprio, whole.proprio)
    np.testing.assert_allclose(ticks.actions, whole.actions)


def test_a_preset_urdf_that_is_not_there_is_taken_from_the_bags_robot_description(ur5e, tmp_path):
    text = ur5e['urdf'].read_text()
    bag = write_bag(tmp_path / 'described', steps=ur5e['steps'], description=text, **ur5e['arm'])
    layout = layout_from_preset('ur5e', urdf=str(tmp_path / 'not_here.urdf'))
    ticks = dataset.decode_bag(bag, layout=layout)
    assert ticks.sources[0]['arm']['urdf_source'] == '/robot_description'
    np.testing.assert_allclose(ticks.actions, dataset.decode_bag(ur5e['bag'], layout=ur5e['layout']).actions)
    # Without a description the missing URDF is named, with the way out.
    with pytest.raises(BagError, match=r'URDF .*not_here.urdf of arm preset ur5e does not exist.*--urdf'):
        dataset.decode_bag(ur5e['bag'], layout=layout)


@pytest.mark.parametrize('mismatch', ['panda_bag_as_ur5e', 'ur5e_bag_as_panda', 'no_gripper_joint',
                                      'description_of_another_arm'])
def test_a_bag_that_does_not_match_the_arm_is_refused_naming_the_difference(ur5e, tmp_path, mismatch):
    if mismatch == 'panda_bag_as_ur5e':
        # The Panda's bag with the camera on the preset's topic: its joints are what differs.
        bag, layout = write_bag(tmp_path / 'bag', n_ticks=10, image_topic=UR5E_CAMERA), ur5e['layout']
        expected = [r'lacks the joint\(s\) \[.shoulder_pan_joint.', 'arm preset ur5e', 'joints are .*panda_joint1',
                    'another arm']
    elif mismatch == 'ur5e_bag_as_panda':
        # No --arm: the Panda's camera topic is missing, and the bag's camera topic is named.
        bag, layout = ur5e['bag'], BagLayout()
        expected = [r'/camera/image_raw missing', 'the simulated Panda', f"image topics are {UR5E_CAMERA}",
                    '--arm']
    elif mismatch == 'no_gripper_joint':
        steps = [(q, np.zeros(0), ee, cube, a) for q, _, ee, cube, a in ur5e['steps'][:10]]
        bag = write_bag(tmp_path / 'bag', steps=steps, **{**ur5e['arm'], 'finger_joints': ()})
        layout = ur5e['layout']
        expected = [r"\['robotiq_85_left_knuckle_joint'\]", 'elbow_joint']
    else:
        panda = Path(ArmKinematics().urdf_path).read_text()
        bag = write_bag(tmp_path / 'bag', steps=ur5e['steps'][:10], description=panda, **ur5e['arm'])
        layout = ur5e['layout']
        expected = ['/robot_description has no joint', 'shoulder_pan_joint', 'another arm']
    with pytest.raises(BagError) as error:
        dataset.decode_bag(bag, layout=layout)
    message = str(error.value)
    assert str(bag) in message
    for part in expected:
        assert re.search(part, message), (part, message)


def test_jepa_train_arm_trains_on_a_ur5e_bag_and_refuses_it_as_the_pandas(ur5e, tmp_path, capsys):
    out = tmp_path / 'wm.pt'
    common = ['--bag', str(ur5e['bag']), '--cache', str(tmp_path / 'cache'), '--device', 'cpu', '--no-progress',
              '--threads', '1', '--set', 'latent_dim=16', '--set', 'encoder_channels=[8, 8, 16, 16]',
              '--set', 'predictor_hidden=64', '--set', 'batch_size=4', '--set', 'sequence_length=8',
              '--set', 'horizon=3', '--steps', '3']
    assert train.main([*common, '--out', str(out), '--arm', 'ur5e', '--urdf', str(ur5e['urdf'])]) == 0
    err = capsys.readouterr().err
    assert 'of arm preset ur5e' in err and 'actions derived from the recorded joint motion' in err
    provenance = torch.load(out, weights_only=True)['provenance']
    assert provenance['arm']['arm'] == 'ur5e' and provenance['arm']['image_topic'] == UR5E_CAMERA
    assert provenance['bags'][0]['arm']['arm_joints'] == list(UR5E_ARM)
    assert provenance['commands'][0].endswith(f'--arm ur5e --urdf {ur5e["urdf"]}')

    # The same bag as the Panda's (no --arm), as another preset's, or with a preset that does not exist: refused.
    assert train.main([*common, '--out', str(tmp_path / 'panda.pt')]) == 2
    assert '/camera/image_raw missing' in capsys.readouterr().err
    assert train.main([*common, '--out', str(tmp_path / 'kinova.pt'), '--arm', 'kinova_gen3',
                       '--camera-topic', UR5E_CAMERA]) == 2
    err = capsys.readouterr().err
    assert 'arm preset kinova_gen3' in err and "'joint_1'" in err and 'shoulder_pan_joint' in err
    assert train.main([*common, '--out', str(tmp_path / 'x.pt'), '--arm', 'no_such_arm']) == 2
    assert "unknown arm preset 'no_such_arm'" in capsys.readouterr().err
    assert not (tmp_path / 'panda.pt').exists() and not (tmp_path / 'kinova.pt').exists()


# ---------------------------------------------------------------- eval-model, surprise, fit-readout, --resume: its arm

SMALL_MODEL = ['--set', 'latent_dim=16', '--set', 'encoder_channels=[8, 8, 16, 16]', '--set', 'predictor_hidden=64',
               '--set', 'batch_size=4', '--set', 'sequence_length=8', '--set', 'horizon=3']


@pytest.fixture(scope='module')
def ur5e_checkpoint(ur5e):
    """A few steps of training on the UR5e bag: a checkpoint whose provenance records arm preset ur5e."""
    out = ur5e['root'] / 'wm.pt'
    assert train.main(['--bag', str(ur5e['bag']), '--cache', str(ur5e['root'] / 'cache'), '--out', str(out),
                       '--device', 'cpu', '--no-progress', '--threads', '1', '--steps', '3', *SMALL_MODEL,
                       '--arm', 'ur5e', '--urdf', str(ur5e['urdf'])]) == 0
    return out


def test_layout_for_checkpoint_takes_the_checkpoints_arm_and_refuses_another(ur5e):
    from argparse import Namespace
    from jepa_world_model.bag_layout import layout_for_checkpoint

    def options(arm=None, urdf=None, camera_topic=None):
        return Namespace(arm=arm, urdf=urdf, camera_topic=camera_topic)
    recorded = {'arm': ur5e['layout'].to_dict()}
    # Without --arm: the recorded layout, said so; --urdf and --camera-topic replace what it names.
    layout, note = layout_for_checkpoint(options(), recorded, 'wm.pt')
    assert layout == ur5e['layout'] and 'arm preset ur5e' in note and 'wm.pt' in note
    layout, _ = layout_for_checkpoint(options(urdf='elsewhere.urdf', camera_topic='cam'), recorded, 'wm.pt')
    assert layout.same_arm(ur5e['layout']) and layout.urdf.endswith('/elsewhere.urdf') and layout.image_topic == '/cam'
    # --arm of the same arm: its preset, no note; of another arm: refused naming both and the --arm to pass.
    layout, note = layout_for_checkpoint(options('ur5e', str(ur5e['urdf'])), recorded, 'wm.pt')
    assert layout == ur5e['layout'] and note == ''
    with pytest.raises(ValueError, match=r'wm.pt was trained on bags of arm preset ur5e, not of arm preset panda: '
                                         r'pass --arm ur5e'):
        layout_for_checkpoint(options('panda'), recorded, 'wm.pt')
    # A checkpoint of the simulated Panda records no arm: --arm decodes other arms' bags for it (sim to real).
    assert layout_for_checkpoint(options('ur5e', str(ur5e['urdf'])), {}, 'wm.pt') == (ur5e['layout'], '')
    assert layout_for_checkpoint(options(), {}, 'wm.pt') == (BagLayout(), '')


def test_eval_surprise_and_resume_decode_the_bags_as_the_checkpoints_arm(ur5e, ur5e_checkpoint, tmp_path, capsys):
    ckpt, bag, cache = str(ur5e_checkpoint), str(ur5e['bag']), str(ur5e['root'] / 'cache')
    report = tmp_path / 'eval.json'
    evaluate = ['--ckpt', ckpt, '--bag', bag, '--json', str(report), '--cache', cache, '--horizons', '1,2',
                '--baseline-steps', '2', '--no-progress', '--threads', '1']
    assert eval_model.main([*evaluate, '--arm', 'ur5e', '--urdf', str(ur5e['urdf'])]) == 0
    result = json.loads(report.read_text())
    assert result['arm']['arm'] == 'ur5e' and all(np.isfinite(result['normalized_error']['jepa']))
    assert 'decoding the bags as' not in capsys.readouterr().err
    # No --arm: the checkpoint's arm, said so.
    report.unlink()
    assert eval_model.main(evaluate) == 0
    assert f'jepa eval-model: decoding the bags as arm preset ur5e, the arm {ckpt} was trained on' \
        in capsys.readouterr().err
    assert json.loads(report.read_text())['arm']['arm'] == 'ur5e'
    # Another arm's --arm: refused, naming both arms and the --arm to pass.
    assert eval_model.main([*evaluate, '--arm', 'panda']) == 2
    assert f'{ckpt} was trained on bags of arm preset ur5e, not of arm preset panda: pass --arm ur5e' \
        in capsys.readouterr().err

    png = tmp_path / 'surprise.png'
    assert surprise.main(['--ckpt', ckpt, '--bag', bag, '--out', str(png), '--cache', cache]) == 0
    assert png.stat().st_size > 1000 and 'decoding the bags as arm preset ur5e' in capsys.readouterr().err
    assert surprise.main(['--ckpt', ckpt, '--bag', bag, '--out', str(png), '--cache', cache, '--arm', 'kinova_gen3',
                          '--camera-topic', UR5E_CAMERA]) == 2
    assert 'arm preset ur5e, not of arm preset kinova_gen3: pass --arm ur5e' in capsys.readouterr().err

    resume = ['--bag', bag, '--cache', cache, '--out', str(tmp_path / 'resumed.pt'), '--resume', ckpt, '--device',
              'cpu', '--no-progress', '--threads', '1', '--steps', '1']
    assert train.main(resume) == 0
    assert 'decoding the bags as arm preset ur5e' in capsys.readouterr().err
    assert torch.load(tmp_path / 'resumed.pt', weights_only=True)['provenance']['arm']['arm'] == 'ur5e'
    assert train.main([*resume, '--arm', 'panda']) == 2
    assert 'not of arm preset panda: pass --arm ur5e' in capsys.readouterr().err


def test_fit_readout_reads_the_hand_with_the_arms_kinematics(ur5e, ur5e_checkpoint, tmp_path, capsys, monkeypatch):
    from jepa_world_model import fit_readout
    # The hand through the UR5e's kinematics: from the preset's URDF, or, where that file is absent, from the bag's
    # own /robot_description.
    hand = np.array([s[2] for s in ur5e['steps']])
    ticks = dataset.load_bag(ur5e['bag'], cache_dir=tmp_path, layout=ur5e['layout'])
    np.testing.assert_allclose(fit_readout.hand_positions(ticks, ur5e['layout']), hand, atol=1e-5)
    described = write_bag(tmp_path / 'described', steps=ur5e['steps'], description=ur5e['urdf'].read_text(),
                          **ur5e['arm'])
    absent = layout_from_preset('ur5e', urdf=str(tmp_path / 'not_here.urdf'))
    ticks = dataset.load_bags([described, ur5e['bag']], cache_dir=tmp_path, layout=ur5e['layout'])
    np.testing.assert_allclose(fit_readout.hand_positions(ticks, ur5e['layout']), np.r_[hand, hand], atol=1e-5)
    ticks = dataset.load_bag(described, cache_dir=tmp_path, layout=absent)
    np.testing.assert_allclose(fit_readout.hand_positions(ticks, absent), hand, atol=1e-5)

    # The command decodes the bag as the checkpoint's arm and fits on the UR5e's hand (the fit itself, minutes of
    # optimization, is the read-out's tests' business: here it stops at what it was given) and refuses another
    # arm's --arm.
    def fit(latents, hand, opening, segment, encoder):
        given.update(hand=hand, opening=opening)
        raise fit_readout.ReadoutError('stopped before fitting')
    given = {}
    monkeypatch.setattr(fit_readout, 'fit_cube_readout', fit)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    command = ['--bag', str(ur5e['bag']), '--checkpoint', str(ur5e_checkpoint), '--out', str(tmp_path / 'r.npz')]
    assert fit_readout.main(command) == 1
    err = capsys.readouterr().err
    assert 'decoding the bags as arm preset ur5e' in err and 'stopped before fitting' in err
    np.testing.assert_allclose(given['hand'], hand, atol=1e-5)
    np.testing.assert_allclose(given['opening'], [s[1].sum() for s in ur5e['steps']], atol=1e-6)
    assert fit_readout.main([*command, '--arm', 'panda']) == 1
    assert 'not of arm preset panda: pass --arm ur5e' in capsys.readouterr().err


def test_a_bag_cut_into_stretches_shorter_than_a_window_is_refused_naming_it_and_what_cut_it():
    from jepa_world_model.high_level import HighLevelConfig
    from jepa_world_model.train_high_level import check_windows
    config = HighLevelConfig(macro_steps=2, rollout_macros=3)              # 7 ticks per window
    sources = [{'path': 'long', 'ticks': 10, 'actions': 'derived_from_joint_motion'},
               {'path': 'commands', 'ticks': 9, 'actions': 'recorded'}]
    # The first bag: one stretch of 8 ticks and one of 2; the second: three of 3 ticks.
    segment = np.array([0] * 8 + [1] * 2 + [2] * 3 + [3] * 3 + [4] * 3)
    with pytest.raises(ValueError, match=r"bag commands: none of its 9 control ticks .* the 7 ticks a training window "
                                         r"needs .* 3 stretches, median 3 ticks .*/jepa/action"):
        check_windows(sources, segment, config)
    assert sources[0]['ticks_in_windows'] == 8
    assert check_windows(sources[:1], segment[:10], config) == {'long': '8 / 10'}


def test_train_high_level_learns_in_the_checkpoints_latent_space_and_arm(ur5e, ur5e_checkpoint, tmp_path, capsys,
                                                                         monkeypatch):
    from jepa_world_model import train_high_level
    from jepa_world_model.high_level import HighLevelModel
    from jepa_world_model.model import encoder_id, load_checkpoint
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    out = tmp_path / 'high.pt'
    # Two bags of one episode each: one of them is held out.
    second = write_bag(tmp_path / 'second', steps=make_arm_episode(ur5e['kinematics'], 50, seed=12), **ur5e['arm'])
    command = ['--bag', str(ur5e['bag']), '--bag', str(second), '--checkpoint', str(ur5e_checkpoint),
               '--set', 'macro_steps=2', '--set', 'rollout_macros=3', '--set', 'hidden=16', '--set', 'epochs=2']
    assert train_high_level.main([*command, '--out', str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary['episodes'] == {'train': 1, 'heldout': 1, 'train_repeated': 1} and summary['ticks'] == 100 \
        and summary['epochs'] == 2
    # 50 ticks per episode: 44 windows of 3 macro-actions of 2 steps each, less the held-out episode's.
    assert summary['train_windows'] == 44 and len(summary['heldout_error_per_macro']) == 3
    assert summary['ticks_in_windows'] == {str(ur5e['bag'].resolve()): '50 / 50', str(second.resolve()): '50 / 50'}
    # --weight: the second bag's episode counts three times in the library (15 sequences, one every 3 steps) and, if
    # it is the training episode, in training; held out, it counts once.
    assert train_high_level.main([*command, '--out', str(tmp_path / 'w.pt'), '--weight', f'{second}=3']) == 0
    weighted = json.loads(capsys.readouterr().out)
    assert weighted['library'] == summary['library'] + 2 * 15
    assert (weighted['episodes']['train_repeated'], weighted['train_windows']) in ((1, 44), (3, 3 * 44))
    assert HighLevelModel.load(tmp_path / 'w.pt').provenance['bag_weights'] == {str(second.resolve()): 3}
    third = write_bag(tmp_path / 'third', steps=make_arm_episode(ur5e['kinematics'], 10, seed=13), **ur5e['arm'])
    for item, message in ((f'{third}=2', 'is not among the --bag arguments'), (f'{tmp_path}/none=2', 'no such bag'),
                          (f'{second}=0', 'N a whole number >= 1'), (str(second), 'expected BAG=N')):
        assert train_high_level.main([*command, '--out', str(tmp_path / 'x.pt'), '--weight', item]) == 1
        assert message in capsys.readouterr().err
    high_level = HighLevelModel.load(out, encoder_id(load_checkpoint(ur5e_checkpoint)))
    assert high_level.macro_steps == 2 and high_level.latent_dim == 16
    assert high_level.provenance['world_model']['path'] == str(ur5e_checkpoint)
    assert [b['path'] for b in high_level.provenance['bags']] == [str(ur5e['bag']), str(second)]
    # The macro-actions are the bag's own actions (derived from the UR5e's joint motion): within its bound.
    assert high_level.library.abs().max() <= 1.0 + 1e-5
    # Another arm's --arm, an unknown setting: refused, naming what is wrong, nothing written.
    assert train_high_level.main([*command, '--out', str(tmp_path / 'x.pt'), '--arm', 'panda']) == 1
    assert 'not of arm preset panda: pass --arm ur5e' in capsys.readouterr().err
    assert train_high_level.main([*command, '--out', str(tmp_path / 'x.pt'), '--set', 'macro_step=2']) == 1
    assert "--set 'macro_step=2'" in capsys.readouterr().err
    # A bag none of whose stretches holds one training window (here: 50 ticks, 40 x 3 + 1 needed) would add nothing.
    assert train_high_level.main([*command, '--out', str(tmp_path / 'x.pt'), '--set', 'macro_steps=40']) == 1
    assert f'bag {ur5e["bag"].resolve()}: none of its 50 control ticks is in a continuous stretch of the 121 ticks' \
        in capsys.readouterr().err
    assert not (tmp_path / 'x.pt').exists()
