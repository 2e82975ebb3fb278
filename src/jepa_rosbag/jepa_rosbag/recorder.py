"""ROS-free recording core: serialized messages in, a rosbag2 bag (metadata version 9) out.

    recorder = BagRecorder('bags/run1', storage='mcap', max_split_bytes=100 << 20)
    recorder.add_topic('/joint_states', 'sensor_msgs/msg/JointState', offered_qos)
    recorder.write('/joint_states', timestamp_ns, cdr_bytes)
    recorder.close()

A bag is a directory of split files <bag>_<i>.mcap (or .db3). Each split is written by rosbags' Writer
into its own folder <bag>/<bag>_<i>/ and moved into the bag directory once closed and complete; after
every split metadata.yaml is rewritten (atomically) to list the closed splits. So a SIGKILL loses at
most the open split, which `reindex` recovers as far as it reached the disk.
"""
import collections
import errno
import os
import shutil
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from rosbags.interfaces import Qos
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.typesys.store import Typestore

from jepa_common.settings import setting

from .bagmeta import SplitFile, TopicEntry, write_metadata
from .typestore import jepa_typestore

STORAGES = {'mcap': (StoragePlugin.MCAP, '.mcap'), 'sqlite3': (StoragePlugin.SQLITE3, '.db3')}
# zstd inside mcap chunks keeps the file readable by any mcap reader (Foxglove, `ros2 bag`); sqlite3 has
# no chunks, so messages are compressed one by one (rosbag2's "message" compression mode).
COMPRESSION_MODES = {'mcap': CompressionMode.STORAGE, 'sqlite3': CompressionMode.MESSAGE}


# What the graph's recorder records by default: camera, joint states, commands, the agent's latents, plan and cost,
# and the privileged poses datasets probe with. Relative names: under the recorder's namespace.
DEFAULT_TOPICS = [
    'camera/image_raw', 'camera/camera_info', 'joint_states',
    'jepa/joint_trajectory', 'arm_controller/joint_trajectory', 'jepa/action',
    'jepa/latent', 'jepa/goal_latent', 'jepa/prediction', 'jepa/plan', 'jepa/cost', 'jepa/surprise',
    'sim/ee_pose', 'sim/cube_pose',
]


def bag_topic(topic: str, namespace: str) -> str:
    """The name a bag records a fully qualified topic under: without the recording node's namespace (a bag of one
    arm reads like any other, whichever namespace it was recorded in)."""
    if namespace not in ('', '/') and topic.startswith(namespace + '/'):
        return topic[len(namespace):]
    return topic


@dataclass
class RecorderConfig:
    """recorder_node's settings (its parameters, all read-only: a recording is configured once, at start)."""
    output: str = setting('bags/recording_%Y%m%d_%H%M%S', 'bag directory to create, a time.strftime pattern '
                          'relative to the working directory; it must not exist')
    topics: list[str] = setting(list(DEFAULT_TOPICS), 'topics to record; relative names are under the node\'s '
                                'namespace, and the bag names them without it')
    storage: str = setting('mcap', 'storage format: mcap or sqlite3')
    compression: str = setting('', "'' or zstd (mcap: compressed chunks; sqlite3: per message)")
    max_bag_size: int = setting(0, 'bytes per split file; 0 = no size splitting', (0, 2**62))
    max_bag_duration: float = setting(0.0, 'seconds per split file; 0 = no duration splitting', (0.0, 1e9))
    duration: float = setting(0.0, 'stop after this many seconds of data, from the first message recorded; 0 = '
                              'until stopped', (0.0, 1e9))
    queue_depth: int = setting(1000, 'DDS history of each subscription', (1, 1_000_000))
    max_backlog_mb: int = setting(512, 'unwritten data (MB) held for the writer thread before messages are '
                                  'dropped (and counted as loss)', (1, 1 << 20))
    discovery_period: float = setting(0.5, 'seconds between looks at the graph for topics not yet subscribed',
                                      (0.01, 60.0))

    def __post_init__(self):
        if not self.output:
            raise ValueError('output must name the bag directory to create')
        if not self.topics or not all(self.topics):
            raise ValueError(f'topics must name at least one topic, got {list(self.topics)}')
        if self.storage not in STORAGES:
            raise ValueError(f'storage must be one of {", ".join(STORAGES)}, got {self.storage!r}')
        if self.compression not in ('', 'none', 'zstd'):
            raise ValueError(f"compression must be '' or zstd, got {self.compression!r}")
        for name in ('max_bag_size', 'max_bag_duration', 'duration'):
            if not 0 <= getattr(self, name) < float('inf'):
                raise ValueError(f'{name} must be >= 0 (0 = no limit), got {getattr(self, name)}')
        for name in ('queue_depth', 'max_backlog_mb', 'discovery_period'):
            if not 0 < getattr(self, name) < float('inf'):
                raise ValueError(f'{name} must be positive, got {getattr(self, name)}')


# Where a chunk record keeps the CRC of its uncompressed records: after opcode (1), record length (8),
# message start and end time (8 + 8) and uncompressed size (8).
CHUNK_CRC_OFFSET = 33


class _ChecksummedMcapWriter(McapWriter):
    """rosbags' mcap writer, plus the CRC of each chunk's records (rosbags writes 0, "none"): damage inside a
    chunk is then detected by every reader (rosbags, the mcap library, Foxglove) instead of read as data."""

    def close_chunk(self) -> None:
        with self.chunk.bio.getbuffer() as records:
            crc = zlib.crc32(records)
        start = self.bio.tell()
        super().close_chunk()
        end = self.bio.tell()
        self.bio.seek(start + CHUNK_CRC_OFFSET)
        self.bio.write(struct.pack('<I', crc))
        self.bio.seek(end)


class BagWriter(Writer):
    """rosbags' Writer with checksummed mcap chunks: what the recorder and `reindex` write storage files with."""
    STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _ChecksummedMcapWriter}


class RecorderError(Exception):
    """The bag cannot be created or written; the message names the path and the problem."""


def _os_problem(err: OSError) -> str:
    name = errno.errorcode.get(err.errno, '') if err.errno else ''
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f'disk full or file size limit reached ({name})'
    return f'{err.strerror or err} ({name})' if name else str(err)


@dataclass
class RecordingSummary:
    path: Path
    counts: dict[str, int]  # topic -> messages written
    bytes_written: int
    splits: list[SplitFile]


class BagRecorder:
    """Writes serialized (CDR) messages into a new rosbag2 bag directory, split by size and/or duration."""

    def __init__(self, path: str | Path, storage: str = 'mcap', compression: str = '',
                 max_split_bytes: int = 0, max_split_duration_s: float = 0.0,
                 typestore: Typestore | None = None, custom_data: dict[str, str] | None = None):
        if storage not in STORAGES:
            raise RecorderError(f'unknown storage {storage!r} (choose from {", ".join(STORAGES)})')
        if compression not in ('', 'none', 'zstd'):
            raise RecorderError(f'unknown compression {compression!r} (choose "zstd" or none)')
        if max_split_bytes < 0 or max_split_duration_s < 0:
            raise RecorderError('split size and duration must be >= 0 (0 = do not split)')
        self.path = Path(path)
        self.storage = storage
        self.compression = CompressionMode.NONE if compression in ('', 'none') else COMPRESSION_MODES[storage]
        self.max_split_bytes = int(max_split_bytes)
        self.max_split_duration_ns = int(max_split_duration_s * 1e9)
        self.typestore = typestore or jepa_typestore()
        self.custom_data = custom_data
        if self.path.exists():
            raise RecorderError(f'{self.path} already exists; bags are never overwritten, choose another path')
        try:
            self.path.mkdir(parents=True)
        except OSError as err:
            raise RecorderError(f'cannot create bag directory {self.path}: {_os_problem(err)}') from None
        if not os.access(self.path, os.W_OK):
            raise RecorderError(f'bag directory {self.path} is not writable')
        self.topics: dict[str, TopicEntry] = {}
        self.splits: list[SplitFile] = []
        self.bytes_written = 0
        self.error: str | None = None
        # Messages written into a split that could not be completed (a truncated file `reindex` may recover).
        self.unsaved: collections.Counter = collections.Counter()
        self._msgdefs: dict[str, str] = {}
        self._writer: Writer | None = None
        self._connections = {}
        self._split_counts: dict[str, int] = {}
        self._split_bytes = 0
        self._split_start_ns = self._split_end_ns = 0
        self._closed = False
        self._write_metadata()

    # -- topics -----------------------------------------------------------------------------------------

    def add_topic(self, topic: str, msgtype: str, offered_qos: list[Qos] | tuple = ()) -> None:
        known = self.topics.get(topic)
        if known is not None:
            if known.msgtype != msgtype:
                raise RecorderError(f'topic {topic} is already recorded as {known.msgtype}, not {msgtype}')
            return
        if msgtype not in self.typestore.fielddefs:
            raise RecorderError(f'cannot record {topic}: message type {msgtype} is unknown to the bag type store '
                                '(neither a ROS 2 Jazzy standard type nor jepa_interfaces)')
        if msgtype not in self._msgdefs:
            self._msgdefs[msgtype] = self.typestore.generate_msgdef(msgtype, ros_version=2)[0]
        entry = TopicEntry(topic, msgtype, self.typestore.hash_rihs01(msgtype), list(offered_qos))
        self.topics[topic] = entry
        if self._writer is not None:
            self._add_connection(entry)

    def _add_connection(self, entry: TopicEntry) -> None:
        self._connections[entry.name] = self._writer.add_connection(
            entry.name, entry.msgtype, msgdef=self._msgdefs[entry.msgtype], rihs01=entry.type_hash,
            offered_qos_profiles=entry.offered_qos)
        self._split_counts[entry.name] = 0

    # -- writing ----------------------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        return {name: t.message_count + self._split_counts.get(name, 0) for name, t in self.topics.items()}

    def write(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        if self.error:
            raise RecorderError(f'bag {self.path}: not recording any more after an earlier error: {self.error}')
        if self._closed:
            raise RecorderError(f'bag {self.path} is closed')
        if topic not in self.topics:
            raise RecorderError(f'bag {self.path}: topic {topic} was not added before writing')
        if self._writer is not None and self._split_due(timestamp_ns):
            self._close_split()
        if self._writer is None:
            self._open_split(timestamp_ns)
        try:
            self._writer.write(self._connections[topic], timestamp_ns, data)
        except OSError as err:
            self._fail(f'writing split {self._split_name()} failed: {_os_problem(err)}')
        self._split_counts[topic] += 1
        self._split_bytes += len(data)
        self.bytes_written += len(data)
        self._split_start_ns = min(self._split_start_ns, timestamp_ns)
        self._split_end_ns = max(self._split_end_ns, timestamp_ns)

    def _split_due(self, timestamp_ns: int) -> bool:
        if not any(self._split_counts.values()):
            return False
        if self.max_split_bytes and self._split_bytes >= self.max_split_bytes:
            return True
        return bool(self.max_split_duration_ns) and timestamp_ns - self._split_start_ns >= self.max_split_duration_ns

    def _split_name(self) -> str:
        return f'{self.path.name}_{len(self.splits)}'

    def _open_split(self, timestamp_ns: int) -> None:
        writer = BagWriter(self.path / self._split_name(), version=9, storage_plugin=STORAGES[self.storage][0])
        writer.set_compression(self.compression, CompressionFormat.ZSTD)
        try:
            writer.open()
        except (OSError, WriterError) as err:
            problem = _os_problem(err) if isinstance(err, OSError) else str(err)
            self._fail(f'cannot start split {self._split_name()}: {problem}')
        self._writer = writer
        self._connections = {}
        self._split_counts = {}
        self._split_bytes = 0
        self._split_start_ns = self._split_end_ns = timestamp_ns
        for entry in self.topics.values():
            self._add_connection(entry)

    def _close_split(self) -> None:
        writer, self._writer = self._writer, None
        name = self._split_name()
        try:
            writer.close()
            filename = name + STORAGES[self.storage][1]
            (self.path / name / filename).replace(self.path / filename)
        except OSError as err:
            self._fail(f'closing split {name} failed: {_os_problem(err)}', writer)
        shutil.rmtree(self.path / name, ignore_errors=True)
        for topic, count in self._split_counts.items():
            self.topics[topic].message_count += count
        self.splits.append(SplitFile(filename, self._split_start_ns, self._split_end_ns,
                                     sum(self._split_counts.values())))
        self._split_counts = {}
        self._write_metadata()

    def _write_metadata(self) -> None:
        try:
            write_metadata(self.path, self.storage, self.splits, list(self.topics.values()),
                           compression_format='zstd' if self.compression == CompressionMode.MESSAGE else '',
                           compression_mode='message' if self.compression == CompressionMode.MESSAGE else '',
                           custom_data=self.custom_data)
        except OSError as err:
            self._fail(f'writing metadata.yaml failed: {_os_problem(err)}')

    def _fail(self, problem: str, writer: Writer | None = None) -> None:
        """Stop recording, keeping what is on disk: the closed splits stay listed in metadata.yaml."""
        writer = writer or self._writer
        self._writer = None
        if writer is not None:
            writer.abort()
        self.unsaved.update(self._split_counts)
        self._split_counts = {}
        self.bytes_written -= self._split_bytes
        self._split_bytes = 0
        self.error = problem
        raise RecorderError(f'bag {self.path}: {problem}; the {len(self.splits)} closed split(s) listed in '
                            f'metadata.yaml are intact (recover the rest with `jepa record --reindex {self.path}`)')

    def close(self) -> RecordingSummary:
        """Close the open split and write the final metadata.yaml. Safe to call twice or after an error."""
        if not self._closed:
            self._closed = True
            if self._writer is not None:
                self._close_split()
        return RecordingSummary(self.path, self.counts, self.bytes_written, list(self.splits))


class RecordingQueue:
    """Hands messages from subscription callbacks to a writer thread, so a slow disk never stalls the executor.

    The backlog is bounded in bytes; what does not fit is dropped and counted per topic (that is loss the
    recorder itself caused, reported as such)."""

    def __init__(self, recorder: BagRecorder, max_backlog_bytes: int, on_error=None):
        self.recorder = recorder
        self.max_backlog_bytes = max_backlog_bytes
        self.dropped: collections.Counter = collections.Counter()
        self.max_backlog_seen = 0
        self._on_error = on_error
        self._items: collections.deque = collections.deque()
        self._backlog = 0
        self._lock = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name='bag-writer', daemon=True)
        self._thread.start()

    def put(self, topic: str, timestamp_ns: int, data: bytes) -> bool:
        with self._lock:
            if self.recorder.error or self._closing or self._backlog + len(data) > self.max_backlog_bytes:
                self.dropped[topic] += 1
                return False
            self._items.append((topic, timestamp_ns, data))
            self._backlog += len(data)
            self.max_backlog_seen = max(self.max_backlog_seen, self._backlog)
            self._lock.notify()
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._items and not self._closing:
                    self._lock.wait()
                if not self._items:
                    break
                batch, self._items = self._items, collections.deque()
            for topic, timestamp_ns, data in batch:
                if not self.recorder.error:
                    try:
                        self.recorder.write(topic, timestamp_ns, data)
                    except RecorderError as err:
                        self._report(err)
                with self._lock:
                    self._backlog -= len(data)
                    if self.recorder.error:
                        self.dropped[topic] += 1
        # Closing here too: a storage file belongs to the thread that opened it (sqlite3 insists).
        try:
            self.recorder.close()
        except RecorderError as err:
            self._report(err)

    def _report(self, err: RecorderError) -> None:
        if self._on_error:
            self._on_error(str(err))

    def close(self) -> RecordingSummary:
        """Write everything queued, then close the bag."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        self._thread.join()
        return RecordingSummary(self.recorder.path, self.recorder.counts, self.recorder.bytes_written,
                                list(self.recorder.splits))


class RecordingWindow:
    """`duration`: the bag covers that much time from its first recorded message, not from start-up (finding the
    topics and subscribing to them takes a good part of a second or more). 0: no limit."""

    def __init__(self, duration_s: float):
        self.duration_ns = int(duration_s * 1e9)
        self.start_ns: int | None = None

    def admit(self, stamp_ns: int) -> bool:
        """Whether a message received at stamp_ns belongs in the bag (the first one opens the window)."""
        if not self.duration_ns:
            return True
        if self.start_ns is None:
            self.start_ns = stamp_ns
        return stamp_ns - self.start_ns < self.duration_ns


class SequenceGaps:
    """Messages lost between a publisher and the recorder, from DDS publication sequence numbers.

    Exact for a topic with one publisher. rclpy does not say which publisher sent a message, so with
    several publishers their interleaved numbers are meaningless: the node reports those as unknown."""

    def __init__(self):
        self.gaps: collections.Counter = collections.Counter()
        self._last: dict[str, int] = {}

    def observe(self, topic: str, sequence: int | None) -> None:
        if sequence is None:
            return
        last = self._last.get(topic)
        if last is not None and sequence > last + 1:
            self.gaps[topic] += sequence - last - 1
        self._last[topic] = sequence
