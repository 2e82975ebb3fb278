"""`jepa replay BAG`: publish a bag's messages into the graph with their recorded timing, and /clock.

    jepa replay bags/run1 [--rate 2] [--loop] [--start-offset 5] [--topics /joint_states ...]
                [--remap /camera/image_raw:=camera2/image_raw] [--wait-for-subscribers 5] [--no-wait]
                [--ros-args ...]

Messages are published as the recorded serialized bytes (never deserialized). /clock carries bag time,
so nodes with use_sim_time run in bag time; a loop starts bag time over (nodes see time jump back).
A bag topic is published under its name made relative (/joint_states as joint_states), so
`--ros-args -r __ns:=/arm1` replays into the graph of namespace arm1 (/clock stays global: a namespaced graph
listens on /arm1/clock, so add `-r /clock:=/arm1/clock`).

Before playing, the replay waits (at most --discovery-timeout seconds) until every subscriber the graph already
has on a replayed topic has matched its publisher. A subscriber learns of a new publisher only through DDS
discovery, which takes a moment after the replay starts; without the wait the bag's first messages reach
nobody, a share of the bag that grows with --rate. --no-wait plays at once.
"""
import argparse
import sys
import time
from collections.abc import Callable

import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rosbags.interfaces import QosDurability
from rosgraph_msgs.msg import Clock

from jepa_common.qos import RELIABLE

from .endpoints import message_class, publisher_qos
from .reader import BagError, BagReader

CLOCK_TOPIC = '/clock'
VOLATILE_DEPTH = 100  # publisher history for ordinary topics
LATCHED_DEPTH = 1  # a latched (transient local) topic hands late joiners its last value, as its publisher did
ACK_TIMEOUT_S = 2.0  # at the end, how long to wait for reliable subscribers to acknowledge everything
# Before playing: at most this long for the graph's subscribers to match the replay's publishers, and how long
# the graph must stay unchanged (no subscriber appearing) before the replay trusts it knows them all: a process
# that just started on a busy machine can take over a second to hear of the participants already running.
DISCOVERY_TIMEOUT_S = 4.0
DISCOVERY_SETTLE_S = 2.0


class BagPlayer:
    """ROS-free playback loop: when to publish which recorded message, and what bag time it is.

    publish(recorded_topic, data) and publish_clock(bag_time_ns) are supplied by the caller (a ROS node, or a
    test); the caller publishes each recorded topic under output_topic(recorded_topic): its remap, else its name
    made relative (so a replay in a namespace publishes into that namespace)."""

    def __init__(self, bag: BagReader, topics: list[str] | None = None, rate: float = 1.0,
                 start_offset_s: float = 0.0, loop: bool = False, remaps: dict[str, str] | None = None,
                 clock_hz: float = 100.0):
        if not rate > 0:
            raise ValueError(f'rate must be > 0, got {rate}')
        if start_offset_s < 0:
            raise ValueError(f'start offset must be >= 0, got {start_offset_s}')
        self.bag = bag
        available = bag.topics
        if topics:
            missing = [t for t in topics if t not in available]
            if missing:
                raise BagError(f'bag {bag.path} has no topic {", ".join(missing)} '
                               f'(it has: {", ".join(sorted(available))})')
        # Replay publishes its own /clock in bag time; a recorded one would contradict it.
        self.topics = [t for t in (topics or sorted(available)) if t != CLOCK_TOPIC]
        self.rate = rate
        self.start_ns = bag.start_ns + int(start_offset_s * 1e9)
        self.loop = loop
        self.remaps = dict(remaps or {})
        self.clock_period_s = 1.0 / clock_hz if clock_hz > 0 else float('inf')
        self.published = 0

    def output_topic(self, topic: str) -> str:
        return self.remaps.get(topic, topic.removeprefix('/'))

    def play(self, publish: Callable[[str, bytes], None], publish_clock: Callable[[int], None],
             should_stop: Callable[[], bool] = lambda: False, now: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> int:
        """Play once (or until stopped when looping); returns the number of messages published."""
        while True:
            wall_start = now()
            last_clock = -float('inf')
            published_before = self.published
            for message in self.bag.messages(self.topics, start_ns=self.start_ns, raw=True):
                due = wall_start + (message.timestamp_ns - self.start_ns) / 1e9 / self.rate
                while (remaining := due - now()) > 0:
                    if should_stop():
                        return self.published
                    if now() - last_clock >= self.clock_period_s:
                        publish_clock(self.start_ns + int((now() - wall_start) * self.rate * 1e9))
                        last_clock = now()
                    sleep(min(remaining, self.clock_period_s, 0.1))
                if should_stop():
                    return self.published
                if now() - last_clock >= self.clock_period_s:
                    publish_clock(message.timestamp_ns)
                    last_clock = now()
                publish(message.topic, message.message)
                self.published += 1
            # A pass with nothing to play (start offset past the end) would make a loop spin idle.
            if not self.loop or should_stop() or self.published == published_before:
                return self.published


def parse_remaps(items: list[str]) -> dict[str, str]:
    remaps = {}
    for item in items:
        source, sep, target = item.partition(':=')
        if not sep or not source or not target:
            raise argparse.ArgumentTypeError(f'a remap is FROM:=TO, got {item!r}')
        remaps[source] = target
    return remaps


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='jepa replay', description=__doc__.split('\n')[0],
                                epilog=__doc__.split('\n\n', 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('bag', help='bag directory (or a single .mcap/.db3 file)')
    p.add_argument('--rate', '-r', type=float, default=1.0, help='playback speed factor (default 1)')
    p.add_argument('--loop', '-l', action='store_true', help='start over at the end, until Ctrl-C')
    p.add_argument('--start-offset', type=float, default=0.0, metavar='S', help='skip the first S seconds')
    p.add_argument('--topics', nargs='+', metavar='T', help='play only these topics (default: all)')
    p.add_argument('--remap', action='append', default=[], metavar='A:=B',
                   help='publish bag topic A as B (repeatable; a relative B is under the replay\'s namespace)')
    p.add_argument('--clock-hz', type=float, default=100.0, help='/clock publishing rate (0: only with messages)')
    p.add_argument('--discovery-timeout', type=float, default=DISCOVERY_TIMEOUT_S, metavar='S',
                   help='before playing, wait up to S seconds until every subscriber the graph has on a replayed '
                        'topic has matched the replay (default %(default)s): discovery takes a moment, and '
                        'messages published before it reach nobody')
    p.add_argument('--wait-for-subscribers', type=float, default=0.0, metavar='S',
                   help='before playing, also wait up to S seconds until every topic has a subscriber (for '
                        'subscribers that start after the replay)')
    p.add_argument('--no-wait', action='store_true',
                   help='play at once, without waiting for discovery or subscribers (the first messages may be lost)')
    return p


def _make_publishers(node: Node, bag: BagReader, player: BagPlayer) -> dict:
    publishers = {}
    topics = bag.topics
    for topic in player.topics:
        info = topics[topic]
        try:
            cls = message_class(info.msgtype)
        except (ImportError, AttributeError, ValueError):
            node.get_logger().error(f'not replaying {topic}: its message type {info.msgtype!r} is not installed here')
            continue
        latched = bool(info.offered_qos) and all(q.durability == QosDurability.TRANSIENT_LOCAL
                                                 for q in info.offered_qos)
        qos = publisher_qos(info.offered_qos, LATCHED_DEPTH if latched else VOLATILE_DEPTH)
        publishers[topic] = node.create_publisher(cls, player.output_topic(topic), qos)
    return publishers


def _wait_for_subscribers(publishers: dict, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(p.get_subscription_count() == 0 for p in publishers.values()):
        time.sleep(0.05)


def wait_for_discovery(publishers: dict, known_subscribers: Callable[[str], int], timeout: float,
                       settle: float = DISCOVERY_SETTLE_S, now: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep,
                       other_nodes: Callable[[], int] | None = None) -> list[str]:
    """Wait until every subscriber the graph shows on each publisher's topic (known_subscribers(topic)) has
    matched that publisher (publisher.get_subscription_count()), and the graph has not changed for `settle`
    seconds (a replay that just started learns the graph over a moment); at most `timeout` seconds. Returns
    the topics still waiting for a match when the time was up (e.g. a subscriber with incompatible QoS).
    other_nodes: how many other nodes the graph shows; while none is known, discovery has not begun to answer
    and the graph is not trusted however long it stays unchanged (a replay alone waits the whole timeout)."""
    start = now()
    changed, last = start, None
    while True:
        known = {topic: known_subscribers(topic) for topic in publishers}
        if known != last:
            changed, last = now(), known
        waiting = [topic for topic, publisher in publishers.items()
                   if publisher.get_subscription_count() < known[topic]]
        heard = other_nodes is None or other_nodes() > 0
        if not waiting and heard and now() - changed >= settle:
            return []
        if now() - start >= timeout:
            return waiting
        sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ros_args = argv[argv.index('--ros-args'):] if '--ros-args' in argv else []
    p = parser()
    args = p.parse_args(argv[:len(argv) - len(ros_args)])
    try:
        remaps = parse_remaps(args.remap)
        bag = BagReader(args.bag)
        player = BagPlayer(bag, args.topics, args.rate, args.start_offset, args.loop, remaps, args.clock_hz)
    except (BagError, ValueError, argparse.ArgumentTypeError) as err:
        print(f'jepa replay: {err}', file=sys.stderr)
        return 1
    rclpy.init(args=['jepa-replay', *ros_args])
    node = Node('replay')
    try:
        publishers = _make_publishers(node, bag, player)
        if not publishers:
            print(f'jepa replay: nothing to play from {args.bag}', file=sys.stderr)
            return 1
        clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, RELIABLE)
        if not args.no_wait:
            by_name = {publisher.topic_name: publisher for publisher in publishers.values()}
            unmatched = wait_for_discovery(by_name, node.count_subscribers, args.discovery_timeout,
                                           other_nodes=lambda: len(node.get_node_names()) - 1)
            if unmatched:
                node.get_logger().warning(f'subscribers of {", ".join(unmatched)} did not match within '
                                          f'{args.discovery_timeout} s (incompatible QoS?); playing anyway')
            _wait_for_subscribers(publishers, args.wait_for_subscribers)
        node.get_logger().info(f'replaying {bag.path} ({bag.duration_ns / 1e9:.1f} s, x{args.rate}): '
                               f'{", ".join(publishers)}')

        def publish(topic: str, data: bytes) -> None:
            publishers[topic].publish(data)

        def publish_clock(bag_time_ns: int) -> None:
            clock = Clock()
            clock.clock.sec, clock.clock.nanosec = divmod(bag_time_ns, 1_000_000_000)
            clock_pub.publish(clock)

        player.topics = [t for t in player.topics if t in publishers]
        count = player.play(publish, publish_clock, should_stop=lambda: not node.context.ok())
        # Reliable subscribers may still need retransmissions of the last messages: let them arrive
        # before this process (and its DDS writers) goes away.
        for publisher in publishers.values():
            publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
        print(f'replayed {count} messages from {bag.path}', flush=True)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        print(f'replay stopped after {player.published} messages', flush=True)
        return 0
    except BagError as err:
        print(f'jepa replay: {err}', file=sys.stderr)
        return 1
    finally:
        bag.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
