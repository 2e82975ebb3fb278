"""Read rosbag2 bags (mcap or sqlite3, from this stack or any other) for offline learning.

    with BagReader('bags/run1') as bag:
        print(bag.topics)                       # name -> BagTopic(msgtype, message_count, offered_qos)
        for m in bag.messages(['/camera/image_raw', '/joint_states']):
            m.topic, m.msgtype, m.timestamp_ns, m.message   # in time order, deserialized

Messages are rosbags dataclasses (numeric arrays are numpy arrays); `raw=True` yields the CDR bytes instead.
Every failure is a BagError whose message names the bag, and the file or topic and what is wrong with it.
A bag without metadata.yaml (a recorder killed before closing, a copied storage file) is repaired with
`reindex(bag)` or `jepa record --reindex BAG`.
"""
import logging
import shutil
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import zstandard
from mcap.exceptions import McapError
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import MessageDefinitionFormat, Qos
from rosbags.rosbag2 import ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore

from .bagmeta import SplitFile, TopicEntry, write_metadata
from .typestore import jepa_typestore

try:
    from compression.zstd import ZstdError
except ImportError:  # Python < 3.14, as rosbags does
    from backports.zstd import ZstdError

_log = logging.getLogger(__name__)

STORAGE_SUFFIXES = {'.mcap': 'mcap', '.db3': 'sqlite3'}
TRUNCATED_SUFFIX = '.truncated'
# What a damaged storage file can raise from rosbags or the mcap library while being read (lz4 raises
# RuntimeError; rosbags decompresses zstd with backports.zstd, the mcap library with zstandard).
_READ_ERRORS = (ReaderError, AnyReaderError, McapError, SerdeError, TypesysError, OSError, EOFError,
                struct.error, ValueError, KeyError, IndexError, AssertionError, RuntimeError,
                ZstdError, zstandard.ZstdError)


class BagError(Exception):
    """A bag cannot be opened or read; the message names the bag and what is wrong."""


class BagTopic(NamedTuple):
    name: str
    msgtype: str
    message_count: int
    offered_qos: list[Qos]


class BagMessage(NamedTuple):
    topic: str
    msgtype: str
    timestamp_ns: int
    message: object  # a rosbags message dataclass, or the CDR bytes when read with raw=True


def reindex_hint(bag: Path) -> str:
    return f'rebuild it with `jepa record --reindex {bag}` (or jepa_rosbag.reader.reindex({str(bag)!r}))'


def storage_files(bag: Path) -> list[Path]:
    """Storage files of a bag directory: its own, then the open splits a killed recorder left in subfolders."""
    top = sorted(p for p in bag.iterdir() if p.is_file() and p.suffix in STORAGE_SUFFIXES)
    nested = sorted(p for d in bag.iterdir() if d.is_dir() for p in d.iterdir()
                    if p.is_file() and p.suffix in STORAGE_SUFFIXES)
    return top + nested


def _check_storage_file(path: Path) -> str | None:
    """Why the storage file cannot be opened, or None when it can."""
    reader = McapReader(path) if path.suffix == '.mcap' else Sqlite3Reader(path)
    try:
        reader.open()
    except _READ_ERRORS as err:
        return f'{type(err).__name__}: {err}'
    reader.close()
    return None


class BagReader:
    """An open rosbag2 bag: a directory with metadata.yaml, or a single .mcap/.db3 file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._check_layout()
        self._reader = AnyReader([self.path], default_typestore=jepa_typestore())
        try:
            self._reader.open()
        except _READ_ERRORS as err:
            raise BagError(self._describe_open_failure(err)) from None
        # Bags written without embedded definitions (older sqlite3 bags) still deserialize with the types
        # this installation knows; definitions the bag carries take precedence.
        known = jepa_typestore().fielddefs
        missing = {name: fields for name, fields in known.items() if name not in self._reader.typestore.fielddefs}
        self._reader.typestore.register(missing)

    def _check_layout(self) -> None:
        if not self.path.exists():
            raise BagError(f'bag {self.path} does not exist')
        if self.path.is_file():
            if self.path.suffix not in STORAGE_SUFFIXES:
                raise BagError(f'bag {self.path} is neither a bag directory nor a .mcap/.db3 storage file')
            return
        if not (self.path / 'metadata.yaml').exists():
            if storage_files(self.path):
                raise BagError(f'bag {self.path} has no metadata.yaml (was the recorder killed?); '
                               f'{reindex_hint(self.path)}')
            raise BagError(f'{self.path} is not a rosbag2 bag: no metadata.yaml and no .mcap/.db3 files')

    def _describe_open_failure(self, err: Exception) -> str:
        # Files in subfolders are splits still being written (or abandoned): not what failed to open.
        files = [f for f in storage_files(self.path) if f.parent == self.path] if self.path.is_dir() else [self.path]
        for file in files:
            problem = _check_storage_file(file)
            if problem:
                return (f'bag {self.path}: storage file {file.name} is truncated or corrupt ({problem}); '
                        f'recover its readable messages: {reindex_hint(self.path)}')
        if self.path.is_dir():  # the storage files are fine, so metadata.yaml is what is wrong
            return (f'bag {self.path}: metadata.yaml does not describe the bag ({type(err).__name__}: {err}); '
                    f'{reindex_hint(self.path)}')
        return f'bag {self.path} cannot be opened: {type(err).__name__}: {err}'

    # -- what the bag holds ---------------------------------------------------------------------------

    @property
    def topics(self) -> dict[str, BagTopic]:
        topics = {}
        for name, info in self._reader.topics.items():
            qos = [q for c in info.connections for q in getattr(c.ext, 'offered_qos_profiles', [])]
            topics[name] = BagTopic(name, info.msgtype or '', info.msgcount, qos)
        return topics

    @property
    def message_count(self) -> int:
        return self._reader.message_count

    @property
    def start_ns(self) -> int:
        return self._reader.start_time

    @property
    def end_ns(self) -> int:
        """Just after the last message (rosbags' convention: end - start is the duration)."""
        return self._reader.end_time

    @property
    def duration_ns(self) -> int:
        return self._reader.duration if self.message_count else 0

    def knows_type(self, msgtype: str) -> bool:
        return msgtype in self._reader.typestore.fielddefs

    # -- messages ---------------------------------------------------------------------------------------

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None, raw: bool = False) -> Iterator[BagMessage]:
        """Messages of the chosen topics (all when None) in time order, within [start_ns, stop_ns)."""
        available = self._reader.topics
        if topics is None:
            chosen = list(available)
        else:
            chosen = list(topics)
            missing = [t for t in chosen if t not in available]
            if missing:
                raise BagError(f'bag {self.path} has no topic {", ".join(missing)} '
                               f'(it has: {", ".join(sorted(available)) or "no topics"})')
        if not raw:
            for topic in chosen:
                msgtype = available[topic].msgtype
                if not msgtype or not self.knows_type(msgtype):
                    raise BagError(f'bag {self.path}: topic {topic} has message type {msgtype!r}, which the bag '
                                   'does not define and this installation does not know; read it with raw=True')
        connections = [c for t in chosen for c in available[t].connections]
        if not connections:
            return
        count = 0
        stream = self._reader.messages(connections, start=start_ns, stop=stop_ns)
        while True:
            try:
                connection, timestamp, data = next(stream)
            except StopIteration:
                return
            except _READ_ERRORS as err:
                raise BagError(f'bag {self.path}: reading failed after {count} messages '
                               f'({type(err).__name__}: {err}); the file may be truncated or corrupt: '
                               f'{reindex_hint(self.path)}') from None
            count += 1
            message = data if raw else self.deserialize(data, connection.msgtype, connection.topic, timestamp)
            yield BagMessage(connection.topic, connection.msgtype, timestamp, message)

    def deserialize(self, data: bytes, msgtype: str, topic: str = '?', timestamp_ns: int = 0) -> object:
        store = self._reader.typestore
        try:
            try:
                return store.deserialize_cdr(data, msgtype)
            except SerdeError as err:
                if 'size mismatch' not in str(err):
                    raise
                # A complete message followed by extra bytes: rclpy's serialize_message (Jazzy) appends some
                # to e.g. a JointState with empty sequences, so bags written with it carry them. DDS does not.
                return _deserialize_ignoring_trailing_bytes(store, data, msgtype)
        except _READ_ERRORS as err:
            raise BagError(f'bag {self.path}: message on {topic} at {timestamp_ns} ns does not deserialize '
                           f'as {msgtype} ({type(err).__name__}: {err})') from None

    def close(self) -> None:
        if self._reader.stack:
            self._reader.close()

    def __enter__(self) -> 'BagReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _deserialize_ignoring_trailing_bytes(store, data: bytes, msgtype: str) -> object:
    msgdef = store.get_msgdef(msgtype)
    parse = msgdef.deserialize_cdr_le if data[1] else msgdef.deserialize_cdr_be
    return parse(data[4:], 0, msgdef.cls, store)[0]


def read_messages(path: str | Path, topics: Iterable[str] | None = None, **kwargs) -> Iterator[BagMessage]:
    """Iterate a bag's messages without holding on to the reader."""
    with BagReader(path) as bag:
        yield from bag.messages(topics, **kwargs)


# -- reindex ------------------------------------------------------------------------------------------


@dataclass
class ReindexReport:
    bag: Path
    files: list[SplitFile]
    recovered: list[str]  # files rebuilt from a truncated original (kept as <name>.truncated)
    unreadable: list[str]  # files nothing could be recovered from (left untouched)

    def __str__(self) -> str:
        lines = [f'reindexed {self.bag}: {len(self.files)} files, '
                 f'{sum(f.message_count for f in self.files)} messages']
        lines += [f'  recovered the readable part of truncated {name}' for name in self.recovered]
        lines += [f'  could not read {name} (left untouched)' for name in self.unreadable]
        return '\n'.join(lines)


class _FileIndex(NamedTuple):
    split: SplitFile
    topics: list[TopicEntry]
    zstd_messages: bool  # sqlite3 with rosbag2's per-message compression


ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'


def _index_storage_file(path: Path, bag: Path) -> _FileIndex:
    reader = McapReader(path) if path.suffix == '.mcap' else Sqlite3Reader(path)
    reader.open()
    try:
        meta = reader.metadata
        topics = [TopicEntry(c.topic, c.msgtype, c.digest or _definition_hash(c), list(c.ext.offered_qos_profiles),
                             c.msgcount) for c in reader.connections]
        count = sum(t.message_count for t in topics)
        end = meta.end_time - 1 if count else 0
        split = SplitFile(str(path.relative_to(bag)), meta.start_time if count else 0, end, count)
        zstd_messages = False
        if path.suffix == '.db3' and count:
            _, _, data = next(iter(reader.messages(reader.connections)))
            zstd_messages = bytes(data[:4]) == ZSTD_MAGIC
        return _FileIndex(split, topics, zstd_messages)
    finally:
        reader.close()


def _type_hash(msgtype: str, msgdef: str) -> str:
    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg(msgdef, msgtype))
    return store.hash_rihs01(msgtype)


def _definition_hash(connection) -> str:
    """The type hash from the definition a storage file embeds (mcap channels do not carry the hash)."""
    if connection.msgdef.format != MessageDefinitionFormat.MSG:
        return ''
    return _type_hash(connection.msgtype, connection.msgdef.data)


def _recover_mcap(src: Path, dst: Path) -> int:
    """Copy every complete message of a (possibly footer-less) mcap into a new, complete mcap at dst.

    Reads with the mcap library's sequential reader, which needs no summary or footer; stops at the
    first damaged or missing record. Returns the number of messages recovered."""
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    staging = dst.parent / f'.reindex-{dst.stem}'
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    count = 0
    try:
        writer = Writer(staging / dst.stem, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        connections = {}
        with open(src, 'rb') as stream:
            try:
                for record in StreamReader(stream).records:
                    if isinstance(record, Schema):
                        schemas[record.id] = record
                    elif isinstance(record, Channel):
                        channels[record.id] = record
                    elif isinstance(record, Message) and record.channel_id in channels:
                        if record.channel_id not in connections:
                            channel = channels[record.channel_id]
                            schema = schemas[channel.schema_id]
                            msgdef = schema.data.decode()
                            connections[record.channel_id] = writer.add_connection(
                                channel.topic, schema.name, msgdef=msgdef,
                                rihs01=channel.metadata.get('topic_type_hash') or _type_hash(schema.name, msgdef),
                                serialization_format=channel.message_encoding,
                                offered_qos_profiles=parse_qos(channel.metadata.get('offered_qos_profiles', '')))
                        writer.write(connections[record.channel_id], record.log_time, record.data)
                        count += 1
            except _READ_ERRORS as err:
                _log.info('%s: stopped reading at a damaged or missing record (%s)', src, err)
        writer.close()
        (staging / dst.stem / f'{dst.stem}.mcap').replace(dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return count


def reindex(bag: str | Path) -> ReindexReport:
    """Rebuild a bag's metadata.yaml from its storage files.

    Truncated mcap files (no footer: the split a killed recorder was writing) are rebuilt from their
    readable messages into a complete file; the original is kept beside it as <name>.mcap.truncated.
    An existing metadata.yaml is kept as metadata.yaml.bak."""
    bag = Path(bag)
    if not bag.is_dir():
        raise BagError(f'cannot reindex {bag}: not a bag directory')
    files = storage_files(bag)
    if not files:
        raise BagError(f'cannot reindex {bag}: it holds no .mcap or .db3 files')
    storage_ids = {STORAGE_SUFFIXES[f.suffix] for f in files}
    if len(storage_ids) > 1:
        raise BagError(f'cannot reindex {bag}: it mixes mcap and sqlite3 files')
    indexed: list[_FileIndex] = []
    recovered, unreadable = [], []
    for file in files:
        problem = _check_storage_file(file)
        if problem is None:
            if file.parent != bag:  # rosbag2 looks for storage files in the bag directory only
                target = bag / file.name
                if target.exists():
                    raise BagError(f'cannot reindex {bag}: both {file.relative_to(bag)} and {file.name} exist')
                file = file.replace(target)
            indexed.append(_index_storage_file(file, bag))
            continue
        if file.suffix != '.mcap':
            unreadable.append(f'{file.relative_to(bag)} ({problem})')
            continue
        original = bag / f'{file.name}{TRUNCATED_SUFFIX}'
        file = file.replace(original)
        try:
            recovered_count = _recover_mcap(original, bag / original.stem)
        except (WriterError, *_READ_ERRORS) as err:
            unreadable.append(f'{original.relative_to(bag)} ({type(err).__name__}: {err})')
            continue
        if not recovered_count:
            (bag / original.stem).unlink()
            unreadable.append(f'{original.relative_to(bag)} (no complete message reached the disk)')
            continue
        recovered.append(original.stem)
        indexed.append(_index_storage_file(bag / original.stem, bag))
    for folder in {f.parent for f in files if f.parent != bag}:
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
    topics: dict[tuple[str, str], TopicEntry] = {}
    for index in indexed:
        for t in index.topics:
            entry = topics.setdefault((t.name, t.msgtype), TopicEntry(t.name, t.msgtype, t.type_hash, t.offered_qos))
            entry.message_count += t.message_count
    metadata = bag / 'metadata.yaml'
    if metadata.exists():
        shutil.copy2(metadata, bag / 'metadata.yaml.bak')
    splits = sorted((i.split for i in indexed), key=lambda s: (s.start_ns, s.path))
    # mcap compresses inside its chunks, which needs no metadata; sqlite3 compresses message by message.
    compressed = any(i.zstd_messages for i in indexed)
    write_metadata(bag, storage_ids.pop(), splits, list(topics.values()),
                   compression_format='zstd' if compressed else '', compression_mode='message' if compressed else '')
    return ReindexReport(bag, splits, recovered, unreadable)
