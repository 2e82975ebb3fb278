"""recorder_node (node `recorder`): record the configured topics into a rosbag2 bag.

Subscriptions are raw (serialized CDR, never deserialized in Python); each topic is subscribed once it
appears in the graph, with its type from the graph and a QoS that matches every offering publisher. A
writer thread does the disk work. Ctrl-C closes the bag properly and prints per-topic counts and loss.

Topic names are relative by default (RecorderConfig.topics), so a recorder in a namespaced graph records that
graph. The bag names each topic without the recorder's namespace (/arm1/joint_states is recorded as
/joint_states): a bag of one arm reads like any other, whichever namespace it was recorded in.
"""
import collections
import functools
import sys
import time

from rclpy.node import Node
from rclpy.parameter import Parameter

from jepa_common.node import run_node
from jepa_common.parameters import declare_config

from .endpoints import message_class, qos_from_rclpy, subscription_qos
from .recorder import BagRecorder, RecorderConfig, RecorderError, RecordingQueue, RecordingSummary, \
    RecordingWindow, SequenceGaps, bag_topic


class RecorderNode(Node):

    def __init__(self, parameter_overrides: list[Parameter] | None = None, **node_options):
        super().__init__('recorder', parameter_overrides=parameter_overrides or [], **node_options)
        try:
            config = declare_config(self, RecorderConfig)
        except ValueError as err:
            raise RecorderError(str(err)) from None
        # Fully qualified topic (what is subscribed) -> its name in the bag.
        self.bag_names: dict[str, str] = {}
        for topic in config.topics:
            resolved = self.resolve_topic_name(topic)
            self.bag_names[resolved] = bag_topic(resolved, self.get_namespace())
        if len(set(self.bag_names.values())) != len(self.bag_names):
            raise RecorderError(f'{self.get_name()}: topics {sorted(self.bag_names)} would share names in the bag '
                                f'({sorted(self.bag_names.values())}): record the namespace\'s own topics or the '
                                f'global ones, not both')
        self.wanted = list(self.bag_names)
        self.queue_depth = config.queue_depth
        self.recorder = BagRecorder(time.strftime(config.output), storage=config.storage,
                                    compression=config.compression, max_split_bytes=config.max_bag_size,
                                    max_split_duration_s=config.max_bag_duration)
        self.queue = RecordingQueue(self.recorder, config.max_backlog_mb << 20, self._on_writer_error)
        self.gaps = SequenceGaps()
        self.window = RecordingWindow(config.duration)
        self._stopping = False
        self.multi_publisher: set[str] = set()  # fully qualified topics
        self.before_clock: collections.Counter = collections.Counter()  # by bag topic
        self.skipped: dict[str, str] = {}  # fully qualified topic -> why it is not recorded
        self._recorded_subscriptions = {}
        self._summary: RecordingSummary | None = None
        self.get_logger().info(f'recording into {self.recorder.path} ({config.storage}): {", ".join(self.wanted)}')
        self._discover()
        self.create_timer(config.discovery_period, self._discover)

    def _discover(self) -> None:
        types = dict(self.get_topic_names_and_types())
        for topic in self.wanted:
            if topic in self.skipped:
                continue
            if topic in self._recorded_subscriptions:
                if self.count_publishers(topic) > 1:
                    self.multi_publisher.add(topic)
                continue
            if topic not in types:
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue  # only subscribers so far: wait for a publisher to learn its QoS
            self._subscribe(topic, types[topic], [qos_from_rclpy(p.qos_profile) for p in publishers])

    def _subscribe(self, topic: str, msgtypes: list[str], offered) -> None:
        if len(msgtypes) != 1:
            self._skip(topic, f'it is published with several types ({", ".join(msgtypes)})')
            return
        try:
            cls = message_class(msgtypes[0])
        except (ImportError, AttributeError, ValueError):
            self._skip(topic, f'its message type {msgtypes[0]} is not installed here')
            return
        name = self.bag_names[topic]
        try:
            self.recorder.add_topic(name, msgtypes[0], offered)
        except RecorderError as err:
            self._skip(topic, str(err))
            return
        self._recorded_subscriptions[topic] = self.create_subscription(
            cls, topic, functools.partial(self._on_message, name),
            subscription_qos(offered, self.queue_depth), raw=True)
        self.get_logger().info(f'recording {topic} ({msgtypes[0]})' + (f' as {name}' if name != topic else ''))

    def _skip(self, topic: str, reason: str) -> None:
        self.skipped[topic] = reason
        self.get_logger().error(f'not recording {topic}: {reason}')

    def _on_message(self, topic: str, data: bytes, info: dict) -> None:
        """topic: the bag's name of the topic."""
        self.gaps.observe(topic, info.get('publication_sequence_number'))
        stamp = self.get_clock().now().nanoseconds
        if stamp == 0:
            # use_sim_time before the first /clock: time 0 would put these messages ages before the rest
            # of the bag (and make a replay wait that long), so they are counted, not recorded.
            self.before_clock[topic] += 1
            return
        opening = self.window.start_ns is None
        if not self.window.admit(stamp):
            self._stop()
            return
        if opening and self.window.duration_ns:
            # Stop on time even if no message comes after the window (its end is seen only with the next one).
            self.create_timer(self.window.duration_ns / 1e9, self._stop)
        self.queue.put(topic, stamp, data)

    def _on_writer_error(self, message: str) -> None:
        self.get_logger().error(f'recording stopped: {message}')

    def _stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.get_logger().info('recording duration reached')
            self.context.try_shutdown()

    def report(self, summary: RecordingSummary) -> str:
        lines = [f'bag {summary.path}: {sum(summary.counts.values())} messages, '
                 f'{summary.bytes_written / 1e6:.1f} MB in {len(summary.splits)} file(s)']
        width = max([len(t) for t in self.bag_names.values()] + [5])
        for resolved, topic in self.bag_names.items():
            if resolved in self.skipped:
                lines.append(f'  {topic:<{width}}  not recorded: {self.skipped[resolved]}')
            elif topic not in summary.counts:
                lines.append(f'  {topic:<{width}}  never published')
            else:
                if resolved in self.multi_publisher:
                    lost = 'unknown (several publishers)'
                else:
                    lost = str(self.gaps.gaps[topic])
                dropped, early = self.queue.dropped[topic], self.before_clock[topic]
                unsaved = self.recorder.unsaved[topic]
                lines.append(f'  {topic:<{width}}  {summary.counts[topic]:>7} recorded, lost before the recorder: '
                             f'{lost}' + (f', dropped by the recorder: {dropped}' if dropped else '')
                             + (f', in the failed split: {unsaved}' if unsaved else '')
                             + (f', not recorded before the first /clock: {early}' if early else ''))
        if self.recorder.error:
            lines.append(f'  ERROR: {self.recorder.error}')
        return '\n'.join(lines)

    def close(self) -> RecordingSummary:
        """Write what is queued, close the bag, print counts and loss. Called once spinning stops."""
        if self._summary is None:
            for subscription in self._recorded_subscriptions.values():
                self.destroy_subscription(subscription)
            self._summary = self.queue.close()
            # print, not the logger: the rclpy context may already be shut down by Ctrl-C.
            print(self.report(self._summary), flush=True)
        return self._summary


def main(args=None) -> int:
    try:
        return run_node(RecorderNode, args)
    except RecorderError as err:
        print(f'recorder: {err}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
