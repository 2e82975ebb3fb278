"""Read rosbag2 bags (mcap or sqlite3, from this stack or any other) for offline learning.

    with BagReader('bags/run1') as bag:
        print(bag.topics)                       # name -> BagTopic(msgtype, message_count, offered_qos)
        for m in bag.messages(['/camera/image_raw', '/joint_states']):
            m.topic, m.msgtype, m.timestamp_ns, m.message   # in time order, deserialized

Messages are rosbags dataclasses (numeric arrays are numpy arrays); `raw=True` yields the CDR bytes instead.
Every failure is a BagError whose message names the bag, and the file or topic and what is wrong with it.
What is readable of a damaged bag (no or a wrong metadata.yaml, a truncated split, overwritten or flipped
bytes) is copied into a new bag by `reindex(bag)` or `jepa record --reindex BAG`; the damaged bag is kept as is.
"""
import mmap
import os
import re
import shutil
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import apsw
import zstandard
from mcap.exceptions import McapError
from mcap.records import Channel, Chunk, Message, Schema
from mcap.stream_reader import StreamReader, breakup_chunk
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import MessageDefinitionFormat, Qos
from rosbags.rosbag2 import ReaderError, StoragePlugin, Writer, WriterError
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import McapReader
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore

from .bagmeta import SplitFile, TopicEntry, write_metadata
from .recorder import BagWriter
from .typestore import jepa_typestore

try:
    from compression.zstd import ZstdError
except ImportError:  # Python < 3.14, as rosbags does
    from backports.zstd import ZstdError

STORAGE_SUFFIXES = {'.mcap': 'mcap', '.db3': 'sqlite3'}
REINDEXED_SUFFIX = '_reindexed'
# What a damaged storage file can raise from rosbags or the mcap library while being read (lz4 raises
# RuntimeError; rosbags decompresses zstd with backports.zstd, the mcap library with zstandard, and reads
# sqlite3 with apsw; a damaged length field makes rosbags read or allocate that much: OverflowError,
# MemoryError).
_READ_ERRORS = (ReaderError, AnyReaderError, McapError, SerdeError, TypesysError, OSError, EOFError, apsw.Error,
                struct.error, ValueError, KeyError, IndexError, AssertionError, RuntimeError, TypeError,
                AttributeError, ArithmeticError, MemoryError, ZstdError, zstandard.ZstdError)


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
    return (f'`jepa record --reindex {bag}` (or jepa_rosbag.reader.reindex({str(bag)!r})) copies what is '
            f'readable into a new bag {reindexed_path(bag)}, leaving this one as it is')


def reindexed_path(bag: Path) -> Path:
    """Where `reindex` writes the new bag by default: beside the damaged one (beside its bag directory for a
    storage file of one: a folder of storage files inside a bag reads as an open split of it)."""
    bag = bag if bag.name else bag.resolve()  # '.' has no name
    if bag.suffix not in STORAGE_SUFFIXES:
        return bag.with_name(f'{bag.name}{REINDEXED_SUFFIX}')
    in_bag = (bag.parent / 'metadata.yaml').exists()
    return (bag.parent.parent if in_bag else bag.parent) / f'{bag.stem}{REINDEXED_SUFFIX}'


def storage_files(bag: Path) -> list[Path]:
    """Storage files of a bag directory: its own, then the open splits a killed recorder left in subfolders."""
    top = sorted(p for p in bag.iterdir() if p.is_file() and p.suffix in STORAGE_SUFFIXES)
    nested = sorted(p for d in bag.iterdir() if d.is_dir() for p in d.iterdir()
                    if p.is_file() and p.suffix in STORAGE_SUFFIXES)
    return top + nested


def _storage_problem(path: Path, read_messages: bool = False, expected: int | None = None) -> str | None:
    """Why the storage file cannot be opened (or, with read_messages, read to its last message, `expected`
    messages if given), or None."""
    reader = McapReader(path) if path.suffix == '.mcap' else Sqlite3Reader(path)
    try:
        reader.open()
        try:
            count = sum(1 for _ in reader.messages(reader.connections)) if read_messages else None
        finally:
            reader.close()
    except _READ_ERRORS as err:
        return f'{type(err).__name__}: {err}'
    if expected is not None and count != expected:
        return f'its index leads to {count} of its {expected} messages'
    return None


class BagReader:
    """An open rosbag2 bag: a directory with metadata.yaml, or a single .mcap/.db3 file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._check_layout()
        try:
            self._reader = AnyReader([self.path], default_typestore=jepa_typestore())
            self._reader.open()
        except _READ_ERRORS as err:
            raise BagError(self._describe_open_failure(err)) from None
        # Bags written without embedded definitions (older sqlite3 bags) still deserialize with the types
        # this installation knows; definitions the bag carries take precedence. Only when a type is missing:
        # registering all of Jazzy's types costs a tenth of a second.
        store = self._reader.typestore
        if any(c.msgtype not in store.fielddefs for c in self._reader.connections):
            known = jepa_typestore().fielddefs
            store.register({name: fields for name, fields in known.items() if name not in store.fielddefs})

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
            problem = _storage_problem(file)
            if problem:
                return (f'bag {self.path}: storage file {file.name} is truncated or corrupt ({problem}); '
                        f'{reindex_hint(self.path)}')
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
        # rosbags passes over a storage file or chunk whose index no longer matches metadata.yaml without a word:
        # a read of the whole bag has to deliver as many messages as the bag lists.
        whole = (start_ns is None or start_ns <= self.start_ns) and (stop_ns is None or stop_ns >= self.end_ns)
        expected = sum(c.msgcount for c in connections) if whole else None
        count = 0
        stream = self._reader.messages(connections, start=start_ns, stop=stop_ns)
        while True:
            try:
                connection, timestamp, data = next(stream)
            except StopIteration:
                if expected is not None and count != expected:
                    raise BagError(f'bag {self.path}: {count} messages read on {", ".join(chosen)} where the bag '
                                   f'lists {expected}: a storage file\'s index is damaged or metadata.yaml does not '
                                   f'describe the bag; {reindex_hint(self.path)}') from None
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
    bag: Path  # the damaged bag, left as it was
    out: Path  # the new bag
    files: list[SplitFile]
    recovered: list[str]  # files rebuilt from their intact records, each with what was skipped
    unreadable: list[str]  # files nothing could be recovered from (not in the new bag)

    def __str__(self) -> str:
        lines = [f'reindexed {self.bag} into {self.out}: {len(self.files)} files, '
                 f'{sum(f.message_count for f in self.files)} messages']
        lines += [f'  recovered the readable part of {note}' for note in self.recovered]
        lines += [f'  could not read {note}' for note in self.unreadable]
        return '\n'.join(lines)


class _FileIndex(NamedTuple):
    split: SplitFile
    topics: list[TopicEntry]
    zstd_messages: bool  # sqlite3 with rosbag2's per-message compression


ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'
MCAP_MAGIC = b'\x89MCAP0\r\n'
# The start of a chunk record, to find the next one after damaged bytes: opcode 0x06, record length, message
# start and end time, uncompressed size (lengths below 2**40), CRC, compression "", "zstd" or "lz4".
_CHUNK_HEADER = re.compile(rb'\x06.{5}\x00{3}.{16}.{5}\x00{3}.{4}(?:\x00{4}|\x04\x00{3}zstd|\x03\x00{3}lz4)',
                           re.DOTALL)


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


class _MappedStream:
    """A memory-mapped file as a stream for the mcap library's record parsers: a damaged length field makes
    them read to the end of the file at most, never allocate what the field says."""

    def __init__(self, view: mmap.mmap, pos: int):
        self.view, self.pos = view, pos

    def read(self, size: int) -> bytes:
        data = self.view[self.pos:self.pos + size]
        self.pos += len(data)
        return data


def _next_chunk(view: mmap.mmap, start: int) -> int | None:
    """Offset of the first complete, self-consistent chunk record at or after start."""
    for match in _CHUNK_HEADER.finditer(view, start):
        pos = match.start()
        length, = struct.unpack_from('<Q', view, pos + 1)
        compression_length, = struct.unpack_from('<I', view, pos + 37)
        data_at = pos + 41 + compression_length
        if data_at + 8 <= len(view) and pos + 9 + length <= len(view):
            data_length, = struct.unpack_from('<Q', view, data_at)
            if length == 40 + compression_length + data_length:
                return pos
    return None


def _chunk_records(chunk: Chunk, offset: int, damage: list[str]) -> list:
    """The records of an intact chunk, or none when its content is damaged: a damaged chunk does not tell
    which of its messages are intact (without a CRC even the damage may go unseen)."""
    try:
        return breakup_chunk(chunk, validate_crc=True)
    except _READ_ERRORS as err:
        damage.append(f'chunk at byte {offset} ({type(err).__name__}: {err})')
        return []


def _mcap_records(path: Path, damage: list[str]) -> Iterator:
    """The trustworthy records of a possibly damaged mcap file in file order, chunks broken up.

    Records are read in sequence; from a damaged one the reading resumes at the next intact chunk record, and
    each skipped stretch (or damaged chunk) is described in `damage`. After a skipped stretch only chunks are
    trusted: a record that parses out of damaged bytes is no evidence of a message."""
    with open(path, 'rb') as stream:
        size = os.fstat(stream.fileno()).st_size
        if not size:
            damage.append('the file is empty')
            return
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as view:
            in_sequence = view[:len(MCAP_MAGIC)] == MCAP_MAGIC
            pos = len(MCAP_MAGIC) if in_sequence else _next_chunk(view, 0)
            if not in_sequence:
                damage.append(f'bytes 0..{pos if pos is not None else size} (no mcap magic)')
            while pos is not None:
                records = _MappedStream(view, pos)
                try:
                    for record in StreamReader(records, skip_magic=True, emit_chunks=True,
                                               record_size_limit=size).records:
                        if isinstance(record, Chunk):
                            yield from _chunk_records(record, pos, damage)
                        elif isinstance(record, (Schema, Channel)) or (in_sequence and isinstance(record, Message)):
                            yield record
                        pos = records.pos
                    return  # the footer
                except _READ_ERRORS as err:
                    resume = _next_chunk(view, pos + 1)
                    damage.append(f'bytes {pos}..{resume if resume is not None else size} '
                                  f'({type(err).__name__}: {err or "the file ends"})')
                    pos, in_sequence = resume, False


class _McapScan(NamedTuple):
    schemas: dict[int, Schema]
    channels: dict[int, Channel]
    messages: int
    damage: list[str]  # what is damaged; empty when every record is intact and consistent


def _scan_mcap(path: Path) -> _McapScan:
    """One pass over an mcap file's trustworthy records: its schemas and channels, wherever they survived (in
    the chunks, or in the summary at the end; the first copy wins, chunks being checksummed), its intact
    messages, and what is damaged, including a summary that disagrees with the chunks."""
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    damage: list[str] = []
    count = 0
    for record in _mcap_records(path, damage):
        if isinstance(record, Message):
            count += 1
            continue
        table = schemas if isinstance(record, Schema) else channels
        if table.setdefault(record.id, record) != record:
            damage.append(f'two different definitions of {type(record).__name__.lower()} {record.id}')
    return _McapScan(schemas, channels, count, damage)


def _add_connection(writer: Writer, channel: Channel | None, schemas: dict[int, Schema]):
    """The writer's connection for a recovered channel; None when its definition was lost or is damaged."""
    schema = schemas.get(channel.schema_id) if channel else None
    if schema is None:
        return None
    try:
        msgdef = schema.data.decode()
        return writer.add_connection(
            channel.topic, schema.name, msgdef=msgdef,
            rihs01=channel.metadata.get('topic_type_hash') or _type_hash(schema.name, msgdef),
            serialization_format=channel.message_encoding,
            offered_qos_profiles=parse_qos(channel.metadata.get('offered_qos_profiles', '')))
    except (WriterError, *_READ_ERRORS):
        return None


def _recover_mcap(src: Path, dst: Path, scan: _McapScan) -> int:
    """Copy every intact message of a damaged mcap (scanned by _scan_mcap) into a new, complete mcap at dst;
    returns how many (messages of channels without a usable definition are counted in scan.damage)."""
    staging = dst.parent / f'.reindex-{dst.stem}'
    count = undefined = 0
    try:
        writer = BagWriter(staging, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        connections = {}
        for record in _mcap_records(src, []):
            if not isinstance(record, Message):
                continue
            if record.channel_id not in connections:
                connections[record.channel_id] = _add_connection(writer, scan.channels.get(record.channel_id),
                                                                 scan.schemas)
            if connections[record.channel_id] is None:
                undefined += 1
                continue
            writer.write(connections[record.channel_id], record.log_time, record.data)
            count += 1
        writer.close()
        (staging / f'{staging.name}.mcap').replace(dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if undefined:
        scan.damage.append(f'{undefined} messages of channels whose definition was lost or is damaged')
    return count


def _link_or_copy(src: Path, dst: Path) -> None:
    """dst as another name of src where the file system allows (no second copy of a large file), else a copy.
    Storage files are never written once closed, so the bags cannot change each other."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_readable(file: Path, target: Path) -> tuple[str, int] | None:
    """Put what is readable of a storage file at target: the file itself (linked) if it reads to its last
    message, else, for mcap, a new file of its intact messages. None when the file is intact, else what is
    wrong with it and how many messages the new file holds (0: nothing is at target)."""
    if file.suffix == '.mcap':
        # The scan checks every chunk; rosbags then has to reach all the messages through the file's index.
        scan = _scan_mcap(file)
        problem = '; '.join(scan.damage) or _storage_problem(file, read_messages=True, expected=scan.messages)
    else:
        problem = _storage_problem(file, read_messages=True)
    if not problem:
        _link_or_copy(file, target)
        return None
    if file.suffix != '.mcap':
        return problem, 0
    count = _recover_mcap(file, target, scan)
    if not count:
        target.unlink()
    return '; '.join(scan.damage) or problem, count


def reindex(bag: str | Path, out: str | Path | None = None) -> ReindexReport:
    """Write a new bag at `out` (default: <bag>_reindexed beside it) from everything readable in `bag`.

    `bag` is a bag directory (its metadata.yaml, if any, is not trusted) or a single storage file. Storage
    files that read to their last message are linked (or copied) into the new bag as they are, open splits
    left in subfolders by a killed recorder included; damaged mcap files (truncated, overwritten, flipped
    bytes) are rebuilt from their intact chunks. Nothing in `bag` is modified."""
    bag = Path(bag)
    if bag.is_dir():
        files = storage_files(bag)
    elif bag.is_file() and bag.suffix in STORAGE_SUFFIXES:
        files = [bag]
    else:
        raise BagError(f'cannot reindex {bag}: neither a bag directory nor a .mcap/.db3 storage file')
    if not files:
        raise BagError(f'cannot reindex {bag}: it holds no .mcap or .db3 files')
    storage_ids = {STORAGE_SUFFIXES[f.suffix] for f in files}
    if len(storage_ids) > 1:
        raise BagError(f'cannot reindex {bag}: it mixes mcap and sqlite3 files')
    out = Path(out) if out is not None else reindexed_path(bag)
    if bag.is_dir() and out.resolve().is_relative_to(bag.resolve()):
        raise BagError(f'cannot reindex {bag} into {out}: that is inside the damaged bag, which is never modified')
    if out.exists():
        raise BagError(f'cannot reindex {bag} into {out}: {out} exists (bags are never overwritten; '
                       'choose another with --out)')
    names = [f.name for f in files]
    if len(set(names)) < len(names):
        raise BagError(f'cannot reindex {bag}: two of its storage files have the same name '
                       f'({", ".join(str(f.relative_to(bag)) for f in files if names.count(f.name) > 1)})')
    # Built under a hidden name and renamed when complete: an interrupted reindex leaves no half bag at `out`.
    staging = out.with_name(f'.{out.name}.partial')
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        indexed: list[_FileIndex] = []
        recovered, unreadable = [], []
        for file in files:
            name = str(file.relative_to(bag)) if file != bag else file.name
            damaged = _copy_readable(file, staging / file.name)
            if damaged and not damaged[1]:
                unreadable.append(f'{name} ({damaged[0]}; nothing readable)')
                continue
            if damaged:
                recovered.append(f'{name} ({damaged[0]}): {damaged[1]} messages')
            try:
                indexed.append(_index_storage_file(staging / file.name, staging))
            except _READ_ERRORS as err:
                (staging / file.name).unlink()
                unreadable.append(f'{name} ({type(err).__name__}: {err})')
        if not indexed:
            raise BagError(f'cannot reindex {bag}: nothing in it is readable ({"; ".join(unreadable)})')
        topics: dict[tuple[str, str], TopicEntry] = {}
        for index in indexed:
            for t in index.topics:
                entry = topics.setdefault((t.name, t.msgtype),
                                          TopicEntry(t.name, t.msgtype, t.type_hash, t.offered_qos))
                entry.message_count += t.message_count
        splits = sorted((i.split for i in indexed), key=lambda s: (s.start_ns, s.path))
        # mcap compresses inside its chunks, which needs no metadata; sqlite3 compresses message by message.
        compressed = any(i.zstd_messages for i in indexed)
        write_metadata(staging, storage_ids.pop(), splits, list(topics.values()),
                       compression_format='zstd' if compressed else '',
                       compression_mode='message' if compressed else '')
        staging.rename(out)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, (OSError, WriterError)):
            raise BagError(f'cannot reindex {bag} into {out}: {type(err).__name__}: {err}') from None
        raise
    return ReindexReport(bag, out, splits, recovered, unreadable)
