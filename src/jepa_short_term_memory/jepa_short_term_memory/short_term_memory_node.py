"""`short_term_memory_node` (node `short_term_memory`): remembers the agent's recent transitions.

Subscribes jepa/latent, jepa/action, jepa/cost, jepa/prediction, jepa/goal_latent; keeps at most `capacity`
transitions (none across frames perception refused: it publishes no latent for them, and the gap ends the
episode, memory.TransitionAssembler); short_term_memory/save (SaveEpisodes) writes them to a new
rosbag2 bag, which is how the critic and the world model get them (`jepa train-critic --bag`).

It also keeps the last `play_seconds` of raw play: camera/image_raw, joint_states and jepa/action, serialized as
received (never deserialized); short_term_memory/save_play (SavePlay) writes them (those received since the
request's `since`) to a new play bag, each topic named as a recorder in this namespace names it: the play perception
is re-calibrated on (the configurator's hand-reading check, `jepa adjust-encoder`).
"""
import functools
import os

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from jepa_common.conversions import msg_to_latent, stamp_to_sec
from jepa_common.node import run_node
from jepa_common.parameters import declare, declare_config
from jepa_common.qos import LATCHED, RELIABLE, SENSOR
from jepa_interfaces.msg import ActionStamped, CostTerms, LatentState
from jepa_interfaces.srv import SaveEpisodes, SavePlay
from jepa_rosbag.recorder import bag_topic
from jepa_short_term_memory.bags import BagError, cost_terms_of, write_memory, write_play
from jepa_short_term_memory.memory import TOPICS, MemoryConfig, PlayRing, ShortTermMemory, TransitionAssembler

# The raw play kept for re-calibrating perception: topic (relative, remappable) -> (message class, QoS).
PLAY_TOPICS = {'camera/image_raw': (Image, SENSOR), 'joint_states': (JointState, SENSOR),
               TOPICS['action']: (ActionStamped, RELIABLE)}


class ShortTermMemoryNode(Node):
    def __init__(self):
        super().__init__('short_term_memory')
        config = declare_config(self, MemoryConfig)
        diagnostics_period = declare(self, 'diagnostics_period', 5.0, 's between /diagnostics reports',
                                     (0.01, 3600.0))
        self.memory = ShortTermMemory(config.capacity)
        self.assembler = TransitionAssembler(max_gap=config.max_gap)
        self.play = PlayRing(config.play_seconds)
        self.play_types: dict[str, str] = {}  # bag topic -> message type
        self.model_id = ''
        self.errors = 0
        # Messages heard per stream: a memory that hears latents but no costs records transitions nobody can
        # learn from, and says so in its diagnostics.
        self.heard = dict.fromkeys(('latents', 'goals', 'predictions', 'actions', 'costs'), 0)
        self.create_subscription(LatentState, TOPICS['latent'], self.on_latent, 10)
        self.create_subscription(LatentState, TOPICS['goal'], self.on_goal, LATCHED)
        self.create_subscription(LatentState, TOPICS['prediction'], self.on_prediction, 10)
        self.create_subscription(ActionStamped, TOPICS['action'], self.on_action, 10)
        self.create_subscription(CostTerms, TOPICS['cost'], self.on_cost, 10)
        self.create_service(SaveEpisodes, 'short_term_memory/save', self.on_save)
        if config.play_seconds:
            for topic, (cls, qos) in PLAY_TOPICS.items():
                name = bag_topic(self.resolve_topic_name(topic), self.get_namespace())
                self.play_types[name] = f'{cls.__module__.split(".")[0]}/msg/{cls.__name__}'
                self.create_subscription(cls, topic, functools.partial(self.on_play, name), qos, raw=True)
        self.create_service(SavePlay, 'short_term_memory/save_play', self.on_save_play)
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(diagnostics_period, self.publish_diagnostics)
        self.get_logger().info(f'remembering up to {config.capacity} transitions')

    def _guarded(self, what: str, stream: str, handler) -> None:
        try:
            handler()
            self.heard[stream] += 1
        except ValueError as exc:
            self.errors += 1
            self.get_logger().error(f'ignored {what}: {exc}', throttle_duration_sec=2.0)

    def on_latent(self, msg: LatentState) -> None:
        def handle():
            self.model_id = msg.model_id
            self.memory.add(self.assembler.latent(stamp_to_sec(msg.header.stamp), msg_to_latent(msg).reshape(-1),
                                                  msg.model_id))
        self._guarded('latent', 'latents', handle)

    def on_goal(self, msg: LatentState) -> None:
        self._guarded('goal latent', 'goals', lambda: self.memory.add(self.assembler.goal(msg_to_latent(msg).reshape(-1))))

    def on_prediction(self, msg: LatentState) -> None:
        self._guarded('prediction', 'predictions', lambda: self.assembler.prediction(stamp_to_sec(msg.header.stamp),
                                                                      msg_to_latent(msg).reshape(-1)))

    def on_action(self, msg: ActionStamped) -> None:
        def handle():
            data = np.asarray(msg.data, dtype=np.float32)
            if data.shape != (4,) or not np.all(np.isfinite(data)):
                raise ValueError(f'expected 4 finite ee_delta values, got {data.tolist()}')
            self.assembler.action(stamp_to_sec(msg.header.stamp), data)
        self._guarded('action', 'actions', handle)

    def on_cost(self, msg: CostTerms) -> None:
        def handle():
            terms = cost_terms_of(msg)
            if not np.all(np.isfinite(terms)):
                raise ValueError('cost terms contain NaN or inf')
            self.assembler.cost(stamp_to_sec(msg.header.stamp), terms)
        self._guarded('cost', 'costs', handle)

    def on_play(self, topic: str, data: bytes) -> None:
        stamp = self.get_clock().now().nanoseconds
        if stamp:  # use_sim_time before the first /clock: not yet on the play's time line
            self.play.add(topic, stamp, data)

    def on_save_play(self, request: SavePlay.Request, response: SavePlay.Response) -> SavePlay.Response:
        path = os.path.abspath(os.path.expanduser(request.path)) if request.path else ''
        since = stamp_to_sec(request.since)
        messages = self.play.since(int(round(since * 1e9)))
        counts = PlayRing.counts(messages)
        missing = [t for t in self.play_types if t not in counts]
        if not path:
            response.success, response.message = False, 'no path given'
        elif not self.play_types:
            response.success, response.message = False, 'play_seconds is 0: no play is kept'
        elif missing:
            response.success, response.message = False, (
                f'no play to save: nothing heard on {", ".join(missing)} in the last {self.play.span_ns / 1e9:g} s'
                + (f' since {since:.3f} s' if since else ''))
        else:
            try:
                response.messages = write_play(path, messages, self.play_types)
                response.seconds = PlayRing.span(messages)
                response.success = True
                response.message = f'wrote {response.messages} messages ({response.seconds:.1f} s of play) to {path}'
                self.get_logger().info(response.message)
            except BagError as exc:
                response.success, response.message = False, str(exc)
        if not response.success:
            self.get_logger().error(f'save_play: {response.message}')
        return response

    def on_save(self, request: SaveEpisodes.Request, response: SaveEpisodes.Response) -> SaveEpisodes.Response:
        path = os.path.abspath(os.path.expanduser(request.path)) if request.path else ''
        if not path:
            response.success, response.message = False, 'no path given'
            return response
        if not len(self.memory):
            response.success, response.message = False, 'short-term memory is empty: nothing to save'
            return response
        try:
            response.transitions = write_memory(path, self.memory, self.model_id)
        except BagError as exc:
            response.success, response.message = False, str(exc)
            self.get_logger().error(f'save failed: {exc}')
            return response
        response.success = True
        response.message = (f'wrote {response.transitions} transitions ({len(self.memory.episodes())} episodes) '
                            f'to {path}')
        self.get_logger().info(response.message)
        return response

    def publish_diagnostics(self) -> None:
        silent = [name for name in ('goals', 'costs') if self.heard['latents'] and not self.heard[name]]
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: memory', hardware_id='agent',
                                  level=DiagnosticStatus.WARN if silent else DiagnosticStatus.OK,
                                  message=f'{len(self.memory)} transitions' + (
                                      f'; latents but no {" and no ".join(silent)} heard' if silent else ''))
        status.values = [KeyValue(key=k, value=str(v)) for k, v in (
            ('transitions', len(self.memory)), ('capacity', self.memory.capacity), ('dropped', self.memory.dropped),
            ('episode', self.assembler.episode), *self.heard.items(),
            ('play_seconds', f'{self.play.seconds:.1f}'), ('play_megabytes', f'{self.play.bytes / 1e6:.1f}'),
            ('bad_messages', self.errors))]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics.publish(msg)


def main(args=None) -> int:
    return run_node(ShortTermMemoryNode, args)
