"""jepa_rosbag over real DDS: the recorder node in its own process records what was published byte for byte;
`jepa replay` publishes it again byte for byte with /clock; a SIGKILLed recorder keeps its closed splits."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from rclpy.serialization import serialize_message
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState

from jepa_common.conversions import latent_to_msg, rgb_to_image, sec_to_stamp
from jepa_interfaces.msg import LatentState
from jepa_rosbag.reader import BagReader, reindex
from jepa_rosbag.recorder import BagRecorder
from rosharness import REPO, VENV_BIN, node_cmd

# Topics under a namespace of this run: a concurrent test run that happens to get the same domain id
# (the machine is shared) must not publish into these tests.
NS = f'/rosbag_test_{os.getpid()}'
CAMERA, JOINTS, LATENT = f'{NS}/camera/image_raw', f'{NS}/joint_states', f'{NS}/jepa/latent'
TOPICS = {CAMERA: Image, JOINTS: JointState, LATENT: LatentState}
QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def make_message(topic: str, i: int, image_side: int = 16):
    stamp = sec_to_stamp(100 + i * 0.01)
    if topic == CAMERA:
        return rgb_to_image(np.full((image_side, image_side, 3), i % 256, np.uint8), stamp, 'camera')
    if topic == JOINTS:
        msg = JointState(name=['panda_joint1', 'panda_joint2'], position=[0.1 * i, -0.1 * i])
        msg.header.stamp = stamp
        return msg
    return latent_to_msg(np.array([i, i + 0.5, -i], np.float32), stamp, model_id='test')


def raw_collectors(graph, topics: dict[str, type]) -> dict[str, list[bytes]]:
    received = {topic: [] for topic in topics}
    for topic, msg_type in topics.items():
        graph.node.create_subscription(msg_type, topic, received[topic].append, QOS, raw=True)
    return received


def bag_bytes(bag) -> dict[str, list[bytes]]:
    with BagReader(bag) as reader:
        out = {topic: [] for topic in reader.topics}
        for m in reader.messages(raw=True):
            out[m.topic].append(bytes(m.message))
    return out


def start_recorder(graph, bag, topics, **params):
    return graph.start('recorder_node', name='recorder', params_file=str(REPO / 'config/recorder.yaml'),
                       params={'output': str(bag), 'topics': list(topics), **params})


@pytest.mark.integration
def test_record_then_replay_round_trip_is_byte_identical(ros_graph, tmp_path):
    node = ros_graph.node
    publishers = {topic: node.create_publisher(cls, topic, QOS) for topic, cls in TOPICS.items()}
    wire = raw_collectors(ros_graph, TOPICS)
    bag = tmp_path / 'rec'
    recorder = start_recorder(ros_graph, bag, TOPICS)
    ros_graph.spin_until(lambda: all(p.get_subscription_count() >= 2 for p in publishers.values()), 30,
                         'the recorder subscribing to every topic')
    n = 30
    for i in range(n):
        for topic, publisher in publishers.items():
            publisher.publish(make_message(topic, i))
        ros_graph.spin_for(0.01)
    ros_graph.spin_until(lambda: all(len(w) == n for w in wire.values()), 10, 'the probe receiving everything')
    recorded_on_wire = {topic: list(w) for topic, w in wire.items()}
    ros_graph.spin_for(1.0)  # the recorder's own deliveries
    assert recorder.stop() == 0  # SIGINT: closes the bag
    ros_graph.processes.remove(recorder)  # its exit is expected from here on
    log = recorder.log_path.read_text()
    for topic in TOPICS:  # the end-of-recording report: counts and detected loss per topic
        assert re.search(rf'{re.escape(topic)}\s+{n} recorded, lost before the recorder: 0\n', log), log

    # The bag holds exactly the bytes DDS delivered, in order, for our reader and for the mcap library;
    # our types deserialize from it.
    assert bag_bytes(bag) == recorded_on_wire
    with open(bag / 'rec_0.mcap', 'rb') as stream:
        by_mcap = {topic: [] for topic in TOPICS}
        for schema, channel, message in make_reader(stream).iter_messages(log_time_order=True):
            by_mcap[channel.topic].append(message.data)
    assert by_mcap == recorded_on_wire
    with BagReader(bag) as reader:
        latents = [m.message for m in reader.messages([LATENT])]
        assert reader.topics[JOINTS].offered_qos[0].reliability.name == 'RELIABLE'
        start_ns, end_ns = reader.start_ns, reader.end_ns
    assert latents[7].model_id == 'test' and latents[7].data.tolist() == [7.0, 7.5, -7.0]
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['version'] == 9 and meta['ros_distro'] == 'jazzy' and meta['message_count'] == 3 * n

    # Replay over DDS, one topic remapped: the same bytes arrive, and /clock runs in bag time.
    replayed_joints = f'{NS}/replayed/joint_states'
    for publisher in publishers.values():
        node.destroy_publisher(publisher)
    replayed = raw_collectors(ros_graph, {replayed_joints: JointState, LATENT: LatentState})
    replayed[CAMERA] = wire[CAMERA]
    wire[CAMERA].clear()
    clock = []
    node.create_subscription(Clock, '/clock', clock.append, QOS)
    replay = ros_graph.run([sys.executable, '-m', 'jepa_rosbag.replay', str(bag), '--rate', '2',
                            '--remap', f'{JOINTS}:={replayed_joints}', '--wait-for-subscribers', '20'],
                           'replay')
    # Not spin_until: the replay process is expected to exit when done.
    end = time.monotonic() + 40
    while time.monotonic() < end and not (all(len(r) >= n for r in replayed.values()) and replay.proc.poll() is not None):
        ros_graph.spin_for(0.05)
    assert replay.proc.poll() == 0, replay.output()
    ros_graph.spin_for(0.3)
    assert replayed[CAMERA] == recorded_on_wire[CAMERA]
    assert replayed[replayed_joints] == recorded_on_wire[JOINTS]
    assert replayed[LATENT] == recorded_on_wire[LATENT]
    clock_ns = [c.clock.sec * 1_000_000_000 + c.clock.nanosec for c in clock]
    assert len(clock_ns) >= 5 and clock_ns == sorted(clock_ns)
    assert start_ns <= clock_ns[0] and clock_ns[-1] < end_ns


@pytest.mark.integration
def test_sigkill_loses_at_most_the_open_split(ros_graph, tmp_path):
    node = ros_graph.node
    topics = {CAMERA: Image, JOINTS: JointState}
    publishers = {topic: node.create_publisher(cls, topic, QOS) for topic, cls in topics.items()}
    wire = raw_collectors(ros_graph, topics)
    bag = tmp_path / 'killed'
    # (A SIGKILLed process leaves its Fast DDS shared-memory files in /dev/shm; Fast DDS reclaims stale ones.)
    recorder = start_recorder(ros_graph, bag, topics, max_bag_size=40_000)
    ros_graph.spin_until(lambda: all(p.get_subscription_count() >= 2 for p in publishers.values()), 30,
                         'the recorder subscribing')

    def closed_files() -> int:
        try:
            meta = yaml.safe_load((bag / 'metadata.yaml').read_text())
        except (OSError, yaml.YAMLError):
            return 0
        return len(meta['rosbag2_bagfile_information']['relative_file_paths'])

    i = 0
    end = time.monotonic() + 30
    while closed_files() < 3 and time.monotonic() < end:  # 12 KB images: a split every ~4 images
        for topic, publisher in publishers.items():
            publisher.publish(make_message(topic, i, image_side=64))
        i += 1
        ros_graph.spin_for(0.02)
    assert closed_files() >= 3, recorder.output()
    recorder.proc.send_signal(signal.SIGKILL)
    recorder.proc.wait(10)
    ros_graph.processes.remove(recorder)
    ros_graph.spin_for(0.2)

    def assert_prefix_of_wire(recorded: dict) -> int:
        for topic, messages in recorded.items():
            assert messages == wire[topic][:len(messages)], topic
        return sum(map(len, recorded.values()))

    survived = assert_prefix_of_wire(bag_bytes(bag))  # the closed splits, readable as they are
    assert survived > 0
    (bag / 'metadata.yaml').unlink()  # as if the kill had come before the first split closed
    report = reindex(bag)  # into a new bag beside it
    assert len(report.files) >= 3  # the open split may have had nothing on disk yet
    assert assert_prefix_of_wire(bag_bytes(report.out)) >= survived


@pytest.mark.integration
def test_record_cli_refuses_an_existing_bag(tmp_path):
    (tmp_path / 'taken').mkdir()
    out = subprocess.run([sys.executable, '-m', 'jepa_rosbag.record', '--out', str(tmp_path / 'taken'),
                          '--duration', '1'], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 1
    assert 'already exists' in out.stderr and str(tmp_path / 'taken') in out.stderr


@pytest.mark.integration
def test_record_cli_sqlite3_zstd_duration_and_latched_topic(ros_graph, tmp_path):
    """`jepa record` flags: sqlite3 + zstd, records --duration seconds of data (counted from the first message,
    here 1.5 s after the recorder started: that time does not count) and stops by itself; a transient-local
    topic's last message, published before the recorder subscribed, is recorded with its QoS."""
    node = ros_graph.node
    goal = f'{NS}/jepa/goal_latent'
    bag = tmp_path / 'cli'
    record = ros_graph.run([sys.executable, '-m', 'jepa_rosbag.record', '--out', str(bag), '--storage', 'sqlite3',
                            '--compression', 'zstd', '--duration', '5', '--topics', goal, JOINTS], 'record')
    ros_graph.processes.remove(record)  # it is meant to exit by itself
    ros_graph.spin_until(lambda: 'recording into' in record.output(), 30, 'the recorder starting')
    ros_graph.spin_for(1.5)
    latched = node.create_publisher(LatentState, goal, QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    latched.publish(make_message(LATENT, 42))
    joints = node.create_publisher(JointState, JOINTS, QOS)
    end = time.monotonic() + 40
    i = 0
    while record.proc.poll() is None and time.monotonic() < end:
        joints.publish(make_message(JOINTS, i))
        i += 1
        ros_graph.spin_for(0.02)
    assert record.proc.poll() == 0, record.output()
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['storage_identifier'] == 'sqlite3' and meta['compression_mode'] == 'message'
    assert meta['relative_file_paths'] == ['cli_0.db3']
    with BagReader(bag) as reader:
        assert reader.topics[goal].offered_qos[0].durability.name == 'TRANSIENT_LOCAL'
        goals = [m.message for m in reader.messages([goal])]
        positions = [m.message.position.tolist() for m in reader.messages([JOINTS])]
        span_s = (reader.end_ns - 1 - reader.start_ns) / 1e9
    assert len(goals) == 1 and goals[0].data.tolist() == [42.0, 42.5, -42.0]
    assert 4.9 <= span_s < 5.0, span_s  # joint states every ~20 ms for the whole 5 s
    assert len(positions) > 10
    np.testing.assert_allclose(np.diff([p[0] for p in positions]), 0.1)  # consecutive: nothing lost in between


@pytest.mark.integration
def test_disk_full_while_recording_keeps_closed_splits_and_the_node_alive(ros_graph, tmp_path):
    """A file size limit (ulimit -f) stands in for a full disk: the split being written fails, the node logs
    it, stays up and counts what it could not record; the closed splits stay readable."""
    node = ros_graph.node
    publishers = {topic: node.create_publisher(cls, topic, QOS) for topic, cls in
                  {CAMERA: Image, JOINTS: JointState}.items()}
    bag = tmp_path / 'full'
    cmd = node_cmd(str(VENV_BIN / 'recorder_node'), node_name='recorder', params={
        'output': str(bag), 'topics': [CAMERA, JOINTS], 'max_bag_duration': 1.0})
    # Fast DDS' shared-memory segments are files too: they fail (logged) and it falls back to UDP.
    recorder = ros_graph.run(['/bin/bash', '-c', 'ulimit -f 300 && exec "$0" "$@"', *cmd], 'recorder')
    ros_graph.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in publishers.values()), 30,
                         'the recorder subscribing')
    start = time.monotonic()
    i = 0
    # Joint states alone for 2.5 s (small splits), then 1.2 MB/s of images: more than a split file may hold.
    while 'recording stopped' not in recorder.output() and time.monotonic() - start < 20:
        publishers[JOINTS].publish(make_message(JOINTS, i))
        if time.monotonic() - start > 2.5:
            publishers[CAMERA].publish(make_message(CAMERA, i, image_side=64))
        i += 1
        ros_graph.spin_for(0.01)
    assert 'recording stopped' in recorder.output() and 'file size limit reached' in recorder.output()
    ros_graph.spin_for(1.0)
    assert recorder.alive()
    assert recorder.stop() == 0
    ros_graph.processes.remove(recorder)
    report = recorder.log_path.read_text()
    assert 'ERROR' in report and 'dropped by the recorder' in report and 'in the failed split' in report, report
    with BagReader(bag) as reader:
        counts = {name: t.message_count for name, t in reader.topics.items()}
        assert len(list(reader.messages())) == sum(counts.values())
    assert counts[JOINTS] > 0
    # The report's recorded counts are what the closed splits hold.
    assert re.search(rf'{re.escape(JOINTS)}\s+{counts[JOINTS]} recorded', report), report
    assert re.search(rf'{re.escape(CAMERA)}\s+{counts.get(CAMERA, 0)} recorded', report), report


@pytest.mark.integration
def test_replay_waits_for_discovery_by_default_and_publishes_into_its_namespace(ros_graph, tmp_path):
    """Without options, a replay started next to a running subscriber delivers every message, the first ones
    included (published before discovery had matched the two, they would reach nobody); bag topics are published
    relative to the replay's namespace."""
    bag, n = tmp_path / 'joints', 40
    recorder = BagRecorder(bag)
    recorder.add_topic(JOINTS, 'sensor_msgs/msg/JointState')
    written = [serialize_message(make_message(JOINTS, i)) for i in range(n)]
    for i, data in enumerate(written):
        recorder.write(JOINTS, 1_000_000_000 + i * 10_000_000, data)
    recorder.close()
    namespace = f'{NS}_replay'
    received = raw_collectors(ros_graph, {namespace + JOINTS: JointState})[namespace + JOINTS]
    ros_graph.spin_for(0.5)
    replay = ros_graph.run([sys.executable, '-m', 'jepa_rosbag.replay', str(bag), '--rate', '2',
                            '--ros-args', '-r', f'__ns:={namespace}'], 'replay')
    end = time.monotonic() + 40
    while time.monotonic() < end and not (len(received) >= n and replay.proc.poll() is not None):
        ros_graph.spin_for(0.05)
    assert replay.proc.poll() == 0, replay.output()
    ros_graph.spin_for(0.3)
    assert [bytes(m) for m in received] == written, f'{len(received)} of {n} arrived'
