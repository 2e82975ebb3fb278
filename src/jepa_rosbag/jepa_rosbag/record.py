"""`jepa record`: record topics into a rosbag2 bag from the command line (the recorder node, configured by flags).

    jepa record --out bags/run1 [--topics joint_states camera/image_raw] [--storage mcap|sqlite3]
                [--duration 30] [--compression zstd] [--max-bag-size 500M] [--max-bag-duration 60]
                [--ros-args ...]
    jepa record --reindex bags/run1 [--out bags/run1_fixed]   # what is readable, into a new bag
"""
import argparse
import sys

from rclpy.parameter import Parameter

from jepa_common.node import run_node

from .reader import BagError, reindex
from .recorder import STORAGES, RecorderConfig, RecorderError
from .recorder_node import RecorderNode

_UNITS = {'': 1, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}


def byte_size(text: str) -> int:
    """'500M' -> 524288000; plain numbers are bytes."""
    text = text.strip().upper().removesuffix('B')
    unit = text[-1:] if text[-1:] in _UNITS else ''
    try:
        value = float(text[:len(text) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a size: {text!r} (examples: 1000000, 500K, 100M, 2G)') from None
    if value < 0:
        raise argparse.ArgumentTypeError('a size must be >= 0')
    return int(value * _UNITS[unit])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='jepa record', description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', '-o', help='bag directory to create (must not exist)')
    p.add_argument('--reindex', metavar='BAG', help='copy what is readable of a damaged BAG (a bag directory or '
                   'one .mcap/.db3 file) into a new bag: --out, default BAG_reindexed; BAG is not modified')
    # Flags left out fall back to the node's parameters (its defaults, or a --params-file after --ros-args).
    defaults = RecorderConfig()
    p.add_argument('--topics', nargs='+', metavar='T',
                   help=f'topics to record; relative names are under the namespace of --ros-args -r __ns:=NS, and '
                        f'the bag names them without it (default: {" ".join(defaults.topics)})')
    p.add_argument('--storage', '-s', choices=list(STORAGES), help=f'default: {defaults.storage}')
    p.add_argument('--duration', '-d', type=float,
                   help='record S seconds, from the first message received (default: until Ctrl-C)')
    p.add_argument('--compression', choices=['zstd'], help='zstd: mcap chunks / sqlite3 messages')
    p.add_argument('--max-bag-size', type=byte_size, help='split after this many bytes (e.g. 500M)')
    p.add_argument('--max-bag-duration', type=float, help='split after this many seconds')
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ros_args = argv[argv.index('--ros-args'):] if '--ros-args' in argv else []
    p = parser()
    args = p.parse_args(argv[:len(argv) - len(ros_args)])
    if args.reindex:
        try:
            print(reindex(args.reindex, args.out))
        except BagError as err:
            print(f'jepa record: {err}', file=sys.stderr)
            return 1
        return 0
    if not args.out:
        p.error('one of --out and --reindex is required')
    # The output is a strftime pattern for the node; a path given here is taken literally.
    overrides = [Parameter('output', value=args.out.replace('%', '%%'))]
    for name in ('topics', 'storage', 'duration', 'compression', 'max_bag_size', 'max_bag_duration'):
        value = getattr(args, name)
        if value is not None:
            overrides.append(Parameter(name, value=value))
    try:
        return run_node(lambda: RecorderNode(overrides), ['jepa-record', *ros_args])
    except RecorderError as err:
        print(f'jepa record: {err}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
