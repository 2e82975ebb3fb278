"""Damage bags the ways storage fails, and check what the reader and `reindex` make of them.

    recorded = messages(bag)
    for i in range(100):
        outcome = trial(bag, recorded, rng, DAMAGES[i % 4], work_dir)   # FuzzError if a rule below is broken
        outcome.what, outcome.read, outcome.recovered   # 'overwrite 4096 B of bag_1.mcap at 2311', ...

The rules: reading a damaged bag either returns exactly what was recorded or raises a BagError (never another
exception); `reindex` either raises a BagError (nothing readable) or writes a new bag that reads to its end and
holds only messages that were recorded, byte for byte; the damaged bag is never modified. sqlite3 files carry no
checksums, so bytes flipped inside a message there cannot be told from data: for them ("checksummed=False")
such reads are counted as 'altered' instead of breaking the rules. Used by the tests (a small bag) and
bench/bag_fuzz.py (bigger bags, more copies).
"""
import random
import shutil
from pathlib import Path
from typing import NamedTuple

from .reader import STORAGE_SUFFIXES, BagError, BagReader, reindex, reindexed_path

DAMAGES = ('overwrite', 'flip', 'truncate', 'metadata')
OVERWRITE_BYTES = 4096


class FuzzError(AssertionError):
    """A damaged bag broke one of the rules (the message says which bag, damage and rule)."""


class Outcome(NamedTuple):
    what: str  # the damage
    read: str  # 'complete' (the damage did not touch what is read), 'BagError', or 'altered' (unchecksummed)
    recovered: int | None  # recorded messages in the reindexed bag; None when reindex found nothing readable


def messages(bag: Path) -> set[tuple[str, int, bytes]]:
    """Every message of a bag as (topic, timestamp, CDR bytes)."""
    with BagReader(bag) as reader:
        return {(m.topic, m.timestamp_ns, bytes(m.message)) for m in reader.messages(raw=True)}


def _snapshot(bag: Path) -> dict[str, bytes]:
    return {str(p.relative_to(bag)): p.read_bytes() for p in sorted(bag.rglob('*')) if p.is_file()}


def damage(bag: Path, rng: random.Random, kind: str | None = None) -> str:
    """Damage one file of a bag directory in place (a random kind of DAMAGES unless given); says what was done."""
    kind = kind or rng.choice(DAMAGES)
    if kind == 'metadata':
        target = bag / 'metadata.yaml'
        kind = rng.choice(('delete', 'truncate', 'overwrite', 'flip'))
        if kind == 'delete':
            target.unlink()
            return 'delete metadata.yaml'
    else:
        target = rng.choice(sorted(p for p in bag.iterdir() if p.suffix in STORAGE_SUFFIXES))
    data = bytearray(target.read_bytes())
    if kind == 'overwrite':
        at = rng.randrange(len(data))
        size = min(OVERWRITE_BYTES, len(data) - at)
        data[at:at + size] = rng.randbytes(size)
        what = f'overwrite {size} B of {target.name} at {at}'
    elif kind == 'flip':
        bits = sorted(rng.randrange(len(data) * 8) for _ in range(rng.randint(1, 8)))
        for bit in bits:
            data[bit // 8] ^= 1 << bit % 8
        what = f'flip bits {bits} of {target.name}'
    else:
        data = data[:rng.randrange(len(data))]
        what = f'truncate {target.name} to {len(data)} B'
    target.write_bytes(bytes(data))
    return what


def check(bag: Path, recorded: set[tuple[str, int, bytes]], what: str, checksummed: bool = True) -> Outcome:
    """Read a damaged bag and reindex it; FuzzError if a rule is broken. Exceptions other than BagError propagate
    (each is a broken rule too: the caller counts or shows them)."""
    before = _snapshot(bag)
    try:
        read = 'complete' if messages(bag) == recorded else 'altered'
    except BagError:
        read = 'BagError'
    if read == 'altered' and checksummed:
        raise FuzzError(f'{bag} ({what}): read without an error, but not what was recorded')
    try:
        report = reindex(bag)
    except BagError:
        recovered = None
    else:
        try:
            found = messages(report.out)
        except BagError as err:
            raise FuzzError(f'{bag} ({what}): the reindexed bag {report.out} does not read: {err}') from None
        if checksummed and not found <= recorded:
            raise FuzzError(f'{bag} ({what}): the reindexed bag holds {len(found - recorded)} messages that were '
                            'not recorded')
        recovered = len(found & recorded)
    if _snapshot(bag) != before:
        raise FuzzError(f'{bag} ({what}): reading or reindexing modified the damaged bag')
    return Outcome(what, read, recovered)


def trial(bag: Path, recorded: set[tuple[str, int, bytes]], rng: random.Random, kind: str | None, work_dir: Path,
          checksummed: bool = True) -> Outcome:
    """Damage a copy of bag (made in work_dir) and check it; the copy and its reindexed bag are removed after."""
    copy = Path(work_dir) / f'{bag.name}_damaged'
    shutil.copytree(bag, copy)
    try:
        return check(copy, recorded, damage(copy, rng, kind), checksummed)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        shutil.rmtree(reindexed_path(copy), ignore_errors=True)
