"""`jepa collect`: a short real collection (sim_node + safety_node + recorder_node as processes, real DDS,
real PyBullet) writes a valid rosbag2 mcap bag with every topic, read back here with rosbags."""
import subprocess

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader

from jepa_rosbag.recorder import BagRecorder
from jepa_rosbag.typestore import jepa_typestore
from jepa_bringup.collect import RECORDED_TOPICS, _incomplete_bag, bag_topic, collection_graph, main
from jepa_sim.perturbation import named_perturbation
from rosharness import REPO, VENV_BIN, ros_env


def test_existing_output_is_refused(tmp_path, capsys):
    assert main(['--minutes', '1', '--out', str(tmp_path)]) == 2
    assert 'already exists' in capsys.readouterr().err


def test_a_missing_sim_camera_file_is_refused(tmp_path, capsys):
    assert main(['--minutes', '1', '--out', str(tmp_path / 'play'), '--sim-camera', str(tmp_path / 'nope.yaml')]) == 2
    assert 'nope.yaml' in capsys.readouterr().err and not (tmp_path / 'play').exists()


def test_a_share_outside_zero_to_one_is_refused(tmp_path, capsys):
    assert main(['--minutes', '1', '--out', str(tmp_path / 'play'), '--retreat-fraction', '1.5']) == 2
    assert '--retreat-fraction 1.5' in capsys.readouterr().err and not (tmp_path / 'play').exists()


def test_a_perturbation_reaches_the_sim_node_and_only_it():
    nominal = {spec.name: dict(spec.parameters) for spec in collection_graph(4.0, 3, '')}
    moved = {spec.name: dict(spec.parameters) for spec in
             collection_graph(4.0, 3, '', named_perturbation(['camera_moved', 'sluggish_arm']))}
    assert nominal['sim']['perturb_camera_shift'] == [0.0, 0.0, 0.0] and nominal['sim']['perturb_arm_tracking'] == 1.0
    assert moved['sim']['perturb_camera_shift'] == [0.03, 0.0, 0.0] and moved['sim']['perturb_arm_tracking'] == 0.65
    assert {name: p for name, p in moved.items() if name != 'sim'} == \
        {name: p for name, p in nominal.items() if name != 'sim'}


def test_a_bag_the_recorder_did_not_close_or_left_empty_fails_the_collection_by_name(tmp_path):
    bag = BagRecorder(tmp_path / 'play')
    bag.add_topic('/jepa/action', 'jepa_interfaces/msg/ActionStamped')
    killed = _incomplete_bag(bag.path, -9)  # the recorder was killed before it closed the bag
    assert f'did not close bag {bag.path} (killed by SIGKILL)' in killed and '--reindex' in killed
    bag.close()  # nothing was written: no storage file
    assert f'bag {bag.path} holds no message' in _incomplete_bag(bag.path, 0)
    assert 'does not exist' in _incomplete_bag(tmp_path / 'never_made', 0)


@pytest.mark.integration
def test_short_collection_writes_a_valid_mcap_bag_with_all_topics(tmp_path):
    bag = tmp_path / 'play'
    # Play data seen from another (calibrated) camera: its params file reaches the sim node.
    camera = tmp_path / 'sim_camera.yaml'
    camera.write_text(yaml.safe_dump({'sim': {'ros__parameters': {'camera_width': 80, 'camera_height': 60}}}))
    # 7 sim seconds in episodes of 3-4 s: the seeded reset between episodes runs too. No --domain-id: the
    # collector picks a domain where it hears no other node.
    result = subprocess.run(
        [str(VENV_BIN / 'jepa'), 'collect', '--minutes', str(7 / 60), '--out', str(bag), '--seed', '3',
         '--episode-seconds', '3', '4', '--no-progress', '--sim-camera', str(camera)],
        env=ros_env(0), cwd=REPO, capture_output=True, text=True, timeout=150)
    output = result.stdout + result.stderr
    log = (tmp_path / 'play.nodes.log').read_text(errors='replace') if (tmp_path / 'play.nodes.log').exists() else ''
    assert result.returncode == 0, f'{output}\n--- nodes\n{log[-3000:]}'
    assert 'sim/wall ratio' in output and 'episodes' in output and 'x action' in output
    assert 'WARNING' not in output  # no other graph in our domain

    metadata = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert metadata['version'] == 9 and metadata['storage_identifier'] == 'mcap'
    assert metadata['relative_file_paths'] and all(f.endswith('.mcap') for f in metadata['relative_file_paths'])
    assert all((bag / f).is_file() for f in metadata['relative_file_paths'])

    with AnyReader([bag], default_typestore=jepa_typestore()) as reader:
        counts = {c.topic: 0 for c in reader.connections}
        actions, image_stamps, ee = [], set(), []
        for connection, _, raw in reader.messages():
            counts[connection.topic] += 1
            if connection.topic in ('/jepa/action', '/camera/image_raw', '/sim/ee_pose'):
                msg = reader.deserialize(raw, connection.msgtype)
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                if connection.topic == '/jepa/action':
                    assert msg.space == 'ee_delta'
                    actions.append((stamp, np.asarray(msg.data)))
                elif connection.topic == '/camera/image_raw':
                    assert msg.encoding == 'rgb8' and msg.data.size == msg.height * msg.step
                    assert (msg.width, msg.height) == (80, 60)
                    image_stamps.add(stamp)
                else:
                    ee.append([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
    # The recorder subscribes the relative names; the bag names them absolute, as datasets read them.
    recorded = {bag_topic(t) for t in RECORDED_TOPICS}
    assert recorded <= set(counts), f'missing topics: {recorded - set(counts)}'
    assert all(counts[t] > 0 for t in recorded), counts
    # ~10 Hz control for 7 sim seconds, every action within the ee_delta bounds...
    assert 50 <= len(actions) <= 80, len(actions)
    values = np.array([a for _, a in actions])
    assert values.shape[1] == 4 and np.abs(values[:, :3]).max() <= 0.03 + 1e-6 and np.abs(values[:, 3]).max() <= 1
    # ...stamped like the camera frame it was chosen from.
    on_frames = sum(stamp in image_stamps for stamp, _ in actions)
    assert on_frames >= 0.8 * len(actions), f'only {on_frames} of {len(actions)} actions share a frame stamp'
    # The arm moved (babbling), and the sim was reset for each episode (start + at least one more).
    assert np.linalg.norm(np.diff(np.array(ee), axis=0), axis=1).sum() > 0.1
    assert log.count('reset with seed') >= 2
