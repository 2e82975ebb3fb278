"""jepa_rosbag without DDS: real bag files written by BagRecorder, read back by our reader, by rosbags and by
independent readers (the mcap library, Python's sqlite3); splits, compression, corrupt and truncated bags,
reindex, disk full, and the replay schedule."""
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader

from jepa_rosbag.reader import BagError, BagReader, reindex
from jepa_rosbag.recorder import BagRecorder, RecorderError, RecordingWindow, SequenceGaps
from jepa_rosbag.replay import BagPlayer
from jepa_rosbag.typestore import jepa_typestore
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

STORE = jepa_typestore()
T = STORE.types
INFINITE = QosTime(9223372036, 854775807)
RELIABLE = Qos(QosHistory.UNKNOWN, 0, QosReliability.RELIABLE, QosDurability.VOLATILE, INFINITE, INFINITE,
               QosLiveliness.AUTOMATIC, INFINITE, False)
LATCHED = RELIABLE._replace(durability=QosDurability.TRANSIENT_LOCAL)
TOPICS = {'/camera/image_raw': 'sensor_msgs/msg/Image', '/joint_states': 'sensor_msgs/msg/JointState',
          '/jepa/latent': 'jepa_interfaces/msg/LatentState'}


def header(i: int):
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=i, nanosec=7), frame_id='base')


def serialized(topic: str, i: int, image_side: int = 4) -> bytes:
    """Message i of a topic, CDR-serialized, with content that identifies it."""
    msgtype = TOPICS[topic]
    if topic == '/camera/image_raw':
        pixels = np.full(image_side * image_side * 3, i % 256, dtype=np.uint8)
        msg = T[msgtype](header=header(i), height=image_side, width=image_side, encoding='rgb8', is_bigendian=0,
                         step=image_side * 3, data=pixels)
    elif topic == '/joint_states':
        msg = T[msgtype](header=header(i), name=['panda_joint1', 'panda_joint2'], position=np.array([i, -i], float),
                         velocity=np.zeros(2), effort=np.zeros(0))
    else:
        msg = T[msgtype](header=header(i), model_id='test', shape=np.array([3], np.uint32),
                         data=np.array([i, i + 0.5, -i], np.float32))
    return bytes(STORE.serialize_cdr(msg, msgtype))


def write_bag(path: Path, n: int = 20, storage: str = 'mcap', image_side: int = 4, **kwargs) -> dict:
    """n messages per topic at 100 Hz; returns topic -> [(timestamp, bytes)] as written."""
    recorder = BagRecorder(path, storage=storage, **kwargs)
    for topic, msgtype in TOPICS.items():
        recorder.add_topic(topic, msgtype, [LATCHED if topic == '/jepa/latent' else RELIABLE])
    written = {topic: [] for topic in TOPICS}
    for i in range(n):
        for k, topic in enumerate(TOPICS):
            stamp = 1_000_000_000 + i * 10_000_000 + k
            data = serialized(topic, i, image_side)
            recorder.write(topic, stamp, data)
            written[topic].append((stamp, data))
    recorder.close()
    return written


def files_of(path: Path) -> dict:
    """Every file under path with its content, to show that nothing was changed."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob('*')) if p.is_file()}


def read_raw(path: Path) -> dict:
    with BagReader(path) as bag:
        out = {topic: [] for topic in bag.topics}
        for m in bag.messages(raw=True):
            out[m.topic].append((m.timestamp_ns, bytes(m.message)))
    return out


@pytest.mark.parametrize('storage,compression', [('mcap', ''), ('mcap', 'zstd'), ('sqlite3', ''), ('sqlite3', 'zstd')])
def test_round_trip_is_byte_identical_and_deserializes(tmp_path, storage, compression):
    bag = tmp_path / 'bag'
    written = write_bag(bag, storage=storage, compression=compression)
    assert read_raw(bag) == written
    with BagReader(bag) as reader:
        assert {name: t.message_count for name, t in reader.topics.items()} == {t: 20 for t in TOPICS}
        assert reader.topics['/jepa/latent'].offered_qos[0].durability == QosDurability.TRANSIENT_LOCAL
        messages = list(reader.messages(['/jepa/latent', '/camera/image_raw']))
    assert [m.timestamp_ns for m in messages] == sorted(m.timestamp_ns for m in messages)
    latents = [m.message for m in messages if m.topic == '/jepa/latent']
    assert latents[5].model_id == 'test' and latents[5].data.tolist() == [5.0, 5.5, -5.0]
    image = next(m.message for m in messages if m.topic == '/camera/image_raw')
    assert image.encoding == 'rgb8' and image.data.shape == (48,)

    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert meta['version'] == 9 and meta['ros_distro'] == 'jazzy' and meta['storage_identifier'] == storage
    assert meta['message_count'] == 60
    latent_meta = next(t['topic_metadata'] for t in meta['topics_with_message_count']
                       if t['topic_metadata']['name'] == '/jepa/latent')
    assert latent_meta['offered_qos_profiles'][0]['durability'] == 'transient_local'
    assert latent_meta['type_description_hash'].startswith('RIHS01_')


def test_mcap_library_reads_the_same_bytes_and_our_type_definitions(tmp_path):
    bag = tmp_path / 'bag'
    written = write_bag(bag, compression='zstd')
    with open(bag / 'bag_0.mcap', 'rb') as stream:
        reader = make_reader(stream)
        summary = reader.get_summary()
        assert reader.get_header().profile == 'ros2'
        seen = {topic: [] for topic in TOPICS}
        for schema, channel, message in reader.iter_messages(log_time_order=True):
            assert channel.message_encoding == 'cdr' and schema.encoding == 'ros2msg'
            assert 'offered_qos_profiles' in channel.metadata
            seen[channel.topic].append((message.log_time, message.data))
    assert seen == written
    schemas = {s.name: s.data.decode() for s in summary.schemas.values()}
    assert schemas['jepa_interfaces/msg/LatentState'].startswith('std_msgs/Header header')
    assert 'float32[] data' in schemas['jepa_interfaces/msg/LatentState']
    assert summary.statistics.message_count == 60


def test_sqlite3_bag_read_by_plain_sqlite(tmp_path):
    bag = tmp_path / 'bag'
    written = write_bag(bag, storage='sqlite3')
    db = sqlite3.connect(bag / 'bag_0.db3')
    rows = db.execute('SELECT topics.name, messages.timestamp, messages.data FROM messages '
                      'JOIN topics ON topics.id = messages.topic_id ORDER BY messages.id').fetchall()
    qos = dict(db.execute('SELECT name, offered_qos_profiles FROM topics').fetchall())
    db.close()
    assert {topic: [(t, bytes(d)) for name, t, d in rows if name == topic] for topic in TOPICS} == written
    assert 'transient_local' in qos['/jepa/latent']


@pytest.mark.parametrize('split', [{'max_split_bytes': 1000}, {'max_split_duration_s': 0.05}])
def test_splits_are_complete_files_listed_in_metadata(tmp_path, split):
    bag = tmp_path / 'bag'
    written = write_bag(bag, **split)
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    files = meta['relative_file_paths']
    assert len(files) >= 4 and files == [f'bag_{i}.mcap' for i in range(len(files))]
    assert sorted(p.name for p in bag.iterdir()) == sorted(files + ['metadata.yaml'])
    total = 0
    for entry in meta['files']:
        with open(bag / entry['path'], 'rb') as stream:  # each split has its own summary and footer
            count = make_reader(stream).get_summary().statistics.message_count
        assert count == entry['message_count'] > 0
        total += count
    assert total == 60
    assert read_raw(bag) == written


def test_recorder_refuses_existing_unwritable_and_unknown(tmp_path):
    existing = tmp_path / 'exists'
    existing.mkdir()
    with pytest.raises(RecorderError, match='already exists'):
        BagRecorder(existing)
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a directory')
    with pytest.raises(RecorderError, match='cannot create bag directory'):
        BagRecorder(blocker / 'bag')
    with pytest.raises(RecorderError, match='unknown storage'):
        BagRecorder(tmp_path / 'x', storage='rosbag1')
    recorder = BagRecorder(tmp_path / 'bag')
    with pytest.raises(RecorderError, match='foo_msgs/msg/Bar is unknown'):
        recorder.add_topic('/foo', 'foo_msgs/msg/Bar')
    with pytest.raises(RecorderError, match='not added'):
        recorder.write('/foo', 1, b'\x00\x01\x00\x00')
    recorder.close()
    with BagReader(tmp_path / 'bag') as bag:  # an empty bag is still a valid bag
        assert bag.message_count == 0


DISK_FULL_SCRIPT = textwrap.dedent('''
    import resource, signal, sys
    sys.path.insert(0, {tests!r})
    from test_rosbag_core import serialized
    from jepa_rosbag.recorder import BagRecorder, RecorderError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # exceeding the limit then fails the write with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
    recorder = BagRecorder({bag!r}, max_split_duration_s=1.0)
    recorder.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
    try:
        for second, count in enumerate([2, 2, 40]):  # two small splits, then one too big for the "disk"
            for i in range(count):
                recorder.write('/camera/image_raw', second * 1_000_000_000 + i, serialized('/camera/image_raw', i, 64))
        recorder.close()
    except RecorderError as err:
        print('ERROR', err)
''')


def test_disk_full_keeps_closed_splits(tmp_path):
    """A file size limit makes the disk 'full' for one process: writing fails, closed splits stay readable."""
    bag = tmp_path / 'bag'
    script = DISK_FULL_SCRIPT.format(tests=str(Path(__file__).parent), bag=str(bag))
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=60)
    assert 'ERROR' in out.stdout, out.stdout + out.stderr
    assert 'disk full' in out.stdout and 'the 2 closed split(s)' in out.stdout, out.stdout
    with BagReader(bag) as reader:
        assert reader.message_count == 4
        assert len(list(reader.messages())) == 4


def test_missing_topic_and_unknown_type_are_clear_errors(tmp_path):
    bag = tmp_path / 'bag'
    write_bag(bag, n=3, storage='sqlite3')
    with BagReader(bag) as reader:
        with pytest.raises(BagError, match=r'has no topic /nope .*it has: /camera/image_raw'):
            list(reader.messages(['/nope']))
    # A bag from a stack with a type this installation does not know, and which carries no definition.
    db = sqlite3.connect(bag / 'bag_0.db3')
    db.execute("UPDATE topics SET type = 'other_msgs/msg/Thing' WHERE name = '/jepa/latent'")
    db.execute("DELETE FROM message_definitions")
    db.commit()
    db.close()
    meta_path = bag / 'metadata.yaml'
    meta_path.write_text(meta_path.read_text().replace('jepa_interfaces/msg/LatentState', 'other_msgs/msg/Thing'))
    with BagReader(bag) as reader:
        with pytest.raises(BagError, match=r'/jepa/latent has message type .other_msgs/msg/Thing.*raw=True'):
            list(reader.messages(['/jepa/latent']))
        assert len(list(reader.messages(['/jepa/latent'], raw=True))) == 3
        assert len(list(reader.messages(['/joint_states']))) == 3


def test_missing_metadata_is_reported_and_reindex_rebuilds_it(tmp_path):
    bag = tmp_path / 'bag'
    written = write_bag(bag, max_split_bytes=3000)
    original = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    (bag / 'metadata.yaml').unlink()
    before = files_of(bag)
    with pytest.raises(BagError, match=r'no metadata.yaml.*jepa record --reindex .*bag_reindexed'):
        BagReader(bag)
    report = reindex(bag)
    assert report.out == tmp_path / 'bag_reindexed' and not report.recovered and not report.unreadable
    assert files_of(bag) == before  # the damaged bag is left as it was
    rebuilt = yaml.safe_load((report.out / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    for key in ('relative_file_paths', 'message_count', 'starting_time', 'duration', 'files', 'version'):
        assert rebuilt[key] == original[key], key
    assert ({t['topic_metadata']['name']: t for t in rebuilt['topics_with_message_count']}
            == {t['topic_metadata']['name']: t for t in original['topics_with_message_count']})
    assert read_raw(report.out) == written
    with pytest.raises(BagError, match=r'bag_reindexed exists .*never overwritten'):
        reindex(bag)


def test_truncated_mcap_error_and_recovery(tmp_path):
    bag = tmp_path / 'bag'
    # ~400 KB of images: several 1 MiB-threshold chunks are not reached, so use bigger images.
    written = write_bag(bag, n=60, image_side=128)
    storage = bag / 'bag_0.mcap'
    data = storage.read_bytes()
    storage.write_bytes(data[:int(len(data) * 0.7)])  # what a SIGKILL or a full disk leaves
    with pytest.raises(BagError, match=r'bag_0.mcap is truncated or corrupt.*reindex'):
        BagReader(bag)
    report = reindex(bag)
    assert len(report.recovered) == 1 and report.recovered[0].startswith('bag_0.mcap (')
    assert storage.read_bytes() == data[:int(len(data) * 0.7)]  # nothing thrown away or changed
    recovered = read_raw(report.out)
    assert 0 < sum(map(len, recovered.values())) < 180
    for topic, messages in recovered.items():
        assert messages == written[topic][:len(messages)]  # a prefix, byte-identical


def test_open_split_left_by_a_killed_recorder_is_recovered(tmp_path):
    """The split being written lives in <bag>/<bag>_N/ until closed; reindex moves its readable part in."""
    bag = tmp_path / 'bag'
    recorder = BagRecorder(bag, max_split_bytes=1_500_000)
    recorder.add_topic('/camera/image_raw', 'sensor_msgs/msg/Image')
    images = [serialized('/camera/image_raw', i, image_side=256) for i in range(15)]  # 196 KB each
    for i, data in enumerate(images):
        recorder.write('/camera/image_raw', i * 1000, data)
    recorder._writer.storage.bio.flush()  # as far as the OS got before the kill
    # No close(): the process "died" here. Split 0 (images 0-7) is closed; split 1 has written one
    # 1 MiB chunk (images 8-13) and holds image 14 in memory.
    with BagReader(bag) as reader:
        assert reader.message_count == 8
    before = files_of(bag)
    report = reindex(bag)
    assert [note.split(' ')[0] for note in report.recovered] == ['bag_1/bag_1.mcap']
    assert files_of(bag) == before
    assert sorted(p.name for p in report.out.iterdir()) == ['bag_0.mcap', 'bag_1.mcap', 'metadata.yaml']
    assert [d for _, d in read_raw(report.out)['/camera/image_raw']] == images[:14]


def test_corrupt_chunk_is_a_bag_error(tmp_path):
    bag = tmp_path / 'bag'
    write_bag(bag, n=30, image_side=128, compression='zstd')
    storage = bag / 'bag_0.mcap'
    data = bytearray(storage.read_bytes())
    data[2000:2100] = bytes(100)  # zero a stretch inside the first compressed chunk
    storage.write_bytes(bytes(data))
    with pytest.raises(BagError, match='bag .*bag'):
        with BagReader(bag) as reader:
            list(reader.messages())


def test_sequence_gaps_count_missing_publication_numbers():
    gaps = SequenceGaps()
    for seq in [5, 6, 9, 10, 1, 2, 4]:  # 7, 8 lost; then a new publisher restarts at 1; 3 lost
        gaps.observe('/a', seq)
    gaps.observe('/b', None)
    assert gaps.gaps == {'/a': 3}


def test_recording_window_starts_with_the_first_message():
    window = RecordingWindow(2.0)
    assert [window.admit(t) for t in (5_000_000_000, 6_000_000_000, 6_999_999_999, 7_000_000_000)] == \
        [True, True, True, False]
    assert all(RecordingWindow(0.0).admit(t) for t in (1, 10**18))  # no duration: no limit


class FakeTime:
    def __init__(self):
        self.t = 100.0

    def now(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


def test_player_keeps_recorded_timing_scaled_by_rate_with_offset_remap_and_clock(tmp_path):
    bag = tmp_path / 'bag'
    write_bag(bag, n=20)  # 100 Hz, t = 1.00 .. 1.19 s
    clock = FakeTime()
    sent, clocks = [], []
    with BagReader(bag) as reader:
        player = BagPlayer(reader, topics=['/joint_states'], rate=2.0, start_offset_s=0.1,
                           remaps={'/joint_states': '/replayed'}, clock_hz=1000)
        assert player.output_topic('/joint_states') == '/replayed'
        count = player.play(lambda topic, data: sent.append((clock.now(), topic, data)),
                            lambda ns: clocks.append((clock.now(), ns)), now=clock.now, sleep=clock.sleep)
    assert count == len(sent) == 10  # the first 0.1 s skipped
    assert {topic for _, topic, _ in sent} == {'/joint_states'}
    times = np.array([t for t, _, _ in sent])
    np.testing.assert_allclose(np.diff(times), 0.005, atol=1e-6)  # 10 ms recorded, played at 2x
    bag_times = [ns for _, ns in clocks]
    assert bag_times == sorted(bag_times) and bag_times[0] >= 1_100_000_000 and bag_times[-1] <= 1_190_000_001
    for wall, ns in clocks:  # /clock follows bag time at the playback rate
        assert abs((ns - 1_100_000_001) / 1e9 - (wall - 100.0) * 2.0) < 2e-3


def test_player_loops_until_stopped(tmp_path):
    bag = tmp_path / 'bag'
    write_bag(bag, n=5)
    clock = FakeTime()
    sent = []
    with BagReader(bag) as reader:
        player = BagPlayer(reader, topics=['/jepa/latent'], loop=True)
        player.play(lambda topic, data: sent.append(data), lambda ns: None,
                    should_stop=lambda: len(sent) >= 12, now=clock.now, sleep=clock.sleep)
        with pytest.raises(BagError, match='no topic /nope'):
            BagPlayer(reader, topics=['/nope'])
        with pytest.raises(ValueError, match='rate'):
            BagPlayer(reader, rate=0)
    assert len(sent) == 12 and sent[:5] == sent[5:10]


def test_damaged_metadata_points_to_reindex_into_a_new_bag(tmp_path):
    bag = tmp_path / 'bag'
    written = write_bag(bag, n=5)
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: {version: 9}\n')
    with pytest.raises(BagError, match=r'metadata.yaml does not describe the bag.*--reindex'):
        BagReader(bag)
    report = reindex(bag, tmp_path / 'fixed')
    assert (bag / 'metadata.yaml').read_text() == 'rosbag2_bagfile_information: {version: 9}\n'
    assert read_raw(tmp_path / 'fixed') == written == read_raw(report.out)


def test_messages_serialized_by_rclpy_read_back_despite_trailing_bytes(tmp_path):
    """rclpy's serialize_message appends bytes to some messages (not DDS); tools writing bags with it work."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import JointState
    recorder = BagRecorder(tmp_path / 'bag')
    recorder.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
    recorder.write('/joint_states', 1, serialize_message(JointState(name=['a', 'b'], position=[1.0, 2.0])))
    recorder.write('/joint_states', 2, b'\x00\x01\x00\x00\x07')  # truncated: still an error
    recorder.close()
    with BagReader(tmp_path / 'bag') as reader:
        messages = reader.messages(['/joint_states'])
        assert next(messages).message.position.tolist() == [1.0, 2.0]
        with pytest.raises(BagError, match=r'/joint_states at 2 ns does not deserialize as sensor_msgs/msg/JointState'):
            next(messages)


def test_player_with_offset_past_the_end_plays_nothing_even_looping(tmp_path):
    bag = tmp_path / 'bag'
    write_bag(bag, n=5)
    clock = FakeTime()
    with BagReader(bag) as reader:
        player = BagPlayer(reader, start_offset_s=10.0, loop=True)
        assert player.play(lambda *_: None, lambda ns: None, now=clock.now, sleep=clock.sleep) == 0
