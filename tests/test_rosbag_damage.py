"""Damaged bags on real files written by BagRecorder: bytes overwritten in the middle, flipped bits, a summary that
disagrees with the data, truncation, a lone storage file. Reading gives a BagError naming the bag; `reindex`
copies what is readable into a new bag, byte for byte, and never changes the damaged one. A fuzz test holds
~100 randomly damaged copies of a small bag to those rules (bench/bag_fuzz.py runs bigger ones)."""
import collections
import random
import struct

import pytest

from jepa_rosbag.fuzz import DAMAGES, messages, trial
from jepa_rosbag.reader import BagError, BagReader, reindex
from jepa_rosbag.recorder import BagRecorder
from test_rosbag_core import files_of, read_raw, serialized, write_bag


def records(data: bytes) -> list[tuple[int, int, int]]:
    """(opcode, offset, length) of the top-level records of an intact mcap file."""
    out, pos = [], 8
    while pos < len(data) - 8:
        length, = struct.unpack_from('<Q', data, pos + 1)
        out.append((data[pos], pos, 9 + length))
        pos += 9 + length
    return out


def overwrite_after_first_chunk(storage):
    """4 KB of random bytes over the message indexes, metadata and summary start after an mcap's first chunk."""
    data = bytearray(storage.read_bytes())
    chunk_end = next(offset + length for opcode, offset, length in records(data) if opcode == 0x06)
    data[chunk_end:chunk_end + 4096] = random.Random(0).randbytes(4096)
    storage.write_bytes(bytes(data))


def test_overwritten_bytes_after_a_chunk_are_a_bag_error_and_reindex_recovers_everything(tmp_path):
    """Damage rosbags meets as a raw MemoryError or OverflowError is a BagError naming the bag."""
    bag = tmp_path / 'bag'
    written = write_bag(bag, n=20)
    overwrite_after_first_chunk(bag / 'bag_0.mcap')
    damaged = files_of(bag)
    with pytest.raises(BagError, match=r'bag .*bag: storage file bag_0.mcap is truncated or corrupt .*--reindex'):
        BagReader(bag)
    report = reindex(bag)
    assert read_raw(report.out) == written  # the chunk holds every message; only index and summary were hit
    assert report.recovered[0].startswith('bag_0.mcap (bytes ')
    assert files_of(bag) == damaged


@pytest.mark.parametrize('how', ['overwrite', 'flip'])
def test_damage_inside_a_chunk_is_detected_and_reindex_keeps_the_other_chunks(tmp_path, how):
    """Uncompressed chunks have no structure to break: only their checksum tells damaged pixels from real ones."""
    bag = tmp_path / 'bag'
    written = write_bag(bag, n=60, image_side=128)  # three 1 MiB chunks
    storage = bag / 'bag_0.mcap'
    data = bytearray(storage.read_bytes())
    chunks = [(offset, length) for opcode, offset, length in records(data) if opcode == 0x06]
    assert len(chunks) == 3
    middle = chunks[1][0] + chunks[1][1] // 2
    if how == 'overwrite':
        data[middle:middle + 4096] = random.Random(1).randbytes(4096)
    else:
        data[middle] ^= 0x10
    storage.write_bytes(bytes(data))
    damaged = files_of(bag)
    with BagReader(bag) as reader:
        with pytest.raises(BagError, match=r'bag .*bag: reading failed after \d+ messages .*checksum'):
            list(reader.messages())
    report = reindex(bag)
    assert f'chunk at byte {chunks[1][0]}' in report.recovered[0]
    recovered = read_raw(report.out)
    for topic, messages_ in written.items():
        # The first and last chunk, byte for byte; nothing of the damaged one.
        kept = set(recovered[topic])
        assert kept < set(messages_) and messages_[0] in kept and messages_[-1] in kept
    assert 0.5 * 180 < sum(map(len, recovered.values())) < 180
    assert files_of(bag) == damaged


def test_summary_that_disagrees_with_metadata_is_an_error_not_a_silent_loss(tmp_path):
    """One bit of a split's summary (its channel's QoS): rosbags then skipped the whole split without a word."""
    bag = tmp_path / 'bag'
    written = write_bag(bag, n=20, max_split_bytes=3000)
    storage = bag / 'bag_1.mcap'
    data = storage.read_bytes()
    at = data.rindex(b'depth: 0')  # the last copy of the channel: the summary's, which rosbags reads
    storage.write_bytes(data[:at] + b'depth: 1' + data[at + 8:])
    with BagReader(bag) as reader:
        with pytest.raises(BagError, match=r'messages read on .* where the bag lists 60: .*index is damaged'):
            list(reader.messages())
    report = reindex(bag)
    assert report.recovered[0].startswith('bag_1.mcap (two different definitions of channel')
    assert read_raw(report.out) == written  # the chunk's own copy of the channel, as recorded


def test_a_truncated_lone_storage_file_is_reindexed_into_a_new_bag(tmp_path):
    write_bag(tmp_path / 'bag', n=60, image_side=128)
    lone = tmp_path / 'run.mcap'
    data = (tmp_path / 'bag' / 'bag_0.mcap').read_bytes()
    lone.write_bytes(data[:int(len(data) * 0.8)])
    with pytest.raises(BagError, match=r'run.mcap is truncated or corrupt.*--reindex .*run_reindexed'):
        BagReader(lone)
    report = reindex(lone)
    assert report.out == tmp_path / 'run_reindexed' and lone.read_bytes() == data[:int(len(data) * 0.8)]
    with BagReader(report.out) as reader:
        assert 0 < reader.message_count < 180 and len(list(reader.messages())) == reader.message_count


def small_bag(path):
    """24 joint states in three split files: damage to one file leaves two to recover. No offered QoS: rosbags
    parses it with a slow YAML parser at every opening, which would be most of the fuzz test's time."""
    recorder = BagRecorder(path, max_split_bytes=1000)
    recorder.add_topic('/joint_states', 'sensor_msgs/msg/JointState')
    for i in range(24):
        recorder.write('/joint_states', 1_000_000_000 + i * 10_000_000, serialized('/joint_states', i))
    recorder.close()
    assert len(list(path.glob('*.mcap'))) == 3


def test_fuzz_randomly_damaged_copies(tmp_path):
    """Every copy: reading gives what was recorded or a BagError, reindex a readable new bag of recorded messages
    only (or a BagError), and the copy is not modified (fuzz.check raises on anything else)."""
    bag = tmp_path / 'bag'
    small_bag(bag)
    recorded = messages(bag)
    rng = random.Random(2026)
    outcomes = collections.Counter()
    for i in range(100):
        kind = DAMAGES[i % len(DAMAGES)]
        outcome = trial(bag, recorded, rng, kind, tmp_path)
        recovered = ('none' if outcome.recovered is None else
                     'all' if outcome.recovered == len(recorded) else 'part')
        outcomes[kind, outcome.read, recovered] += 1
    for kind in DAMAGES:  # each kind of damage is mostly caught, and reindex recovers from it
        assert sum(n for (k, read, _), n in outcomes.items() if k == kind and read == 'BagError') >= 15, outcomes
        assert sum(n for (k, _, got), n in outcomes.items() if k == kind and got != 'none') >= 15, outcomes
    assert outcomes['metadata', 'BagError', 'all'] >= 15, outcomes  # the storage files are intact
    assert sum(n for (k, _, got), n in outcomes.items() if k != 'metadata' and got == 'part') >= 25, outcomes


def test_record_cli_reindexes_into_a_new_bag_and_never_over_one(tmp_path, capsys):
    from jepa_rosbag import record
    bag = tmp_path / 'bag'
    written = write_bag(bag, n=5)
    (bag / 'metadata.yaml').unlink()
    assert record.main(['--reindex', str(bag), '--out', str(tmp_path / 'fixed')]) == 0
    assert f'reindexed {bag} into {tmp_path / "fixed"}: 1 files, 15 messages' in capsys.readouterr().out
    assert read_raw(tmp_path / 'fixed') == written and not (bag / 'metadata.yaml').exists()
    assert record.main(['--reindex', str(bag), '--out', str(tmp_path / 'fixed')]) == 1
    assert 'exists (bags are never overwritten' in capsys.readouterr().err


def test_replay_of_a_damaged_bag_is_a_clear_error(tmp_path, capsys):
    """`jepa replay` of a damaged bag exits 1 with the reason, not with rosbags' MemoryError/OverflowError."""
    from jepa_rosbag import replay
    bag = tmp_path / 'bag'
    write_bag(bag, n=20)
    overwrite_after_first_chunk(bag / 'bag_0.mcap')
    assert replay.main([str(bag)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'jepa replay: bag {bag}: storage file bag_0.mcap is truncated or corrupt') and '--reindex' in err


def test_a_storage_file_of_a_bag_is_reindexed_beside_the_bag_never_into_it(tmp_path):
    bag = tmp_path / 'bag'
    written = write_bag(bag, n=5)
    report = reindex(bag / 'bag_0.mcap')
    assert report.out == tmp_path / 'bag_0_reindexed' and read_raw(report.out) == written
    with pytest.raises(BagError, match='inside the damaged bag'):
        reindex(bag, bag / 'fixed')
    assert sorted(p.name for p in bag.iterdir()) == ['bag_0.mcap', 'metadata.yaml']
