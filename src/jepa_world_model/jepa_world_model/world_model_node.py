"""`world_model_node` (node `world_model`): the world model online.

- jepa/latent + jepa/action -> jepa/prediction: the one-step prediction of the next latent, stamped with
  the stamp of the latent it predicts from.
- when that next latent arrives -> jepa/surprise: squared error and the same normalized by the embedding
  variance of the training data.
- world_model/rollout (jepa_interfaces/Rollout): batched open-loop rollouts of many action sequences.
- world_model/model_version (std_msgs/String, transient local): the checkpoint path after each (re)load.
  A new checkpoint is loaded by setting the `checkpoint` parameter (the only parameter applied while the node
  runs; the others are read-only), or world_model/reload (std_srvs/Trigger) re-reads the current one after it
  was rewritten in place (e.g. after a world-model correction).
- /diagnostics every `diagnostics_period`: prediction and surprise counts, recent normalized surprise,
  rollout latency.

The ROS-free core (`LoadedModel`, `OnlinePredictor`, the settings `WorldModelNodeConfig`) is in runtime.py.
"""
from __future__ import annotations

import collections
import time

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from jepa_common.conversions import latent_to_msg, msg_to_latent
from jepa_common.node import run_node
from jepa_common.parameters import apply_changes, declare_config
from jepa_common.qos import LATCHED, RELIABLE
from jepa_interfaces.msg import ActionStamped, LatentState, Surprise
from jepa_interfaces.srv import Rollout
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from std_msgs.msg import String
from std_srvs.srv import Trigger

from jepa_world_model.runtime import LatencyStats, LoadedModel, OnlinePredictor, WorldModelNodeConfig, \
    limit_torch_threads


def stamp_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def ns_stamp(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


ACTION_SPACE = 'ee_delta'


class WorldModelNode(Node):

    def __init__(self, **node_options):
        super().__init__('world_model', **node_options)
        self.config = declare_config(self, WorldModelNodeConfig)
        limit_torch_threads(self.config.torch_threads)
        self.loaded: LoadedModel | None = None
        self.predictor: OnlinePredictor | None = None
        self.rollout_latency = LatencyStats()
        self.counts = dict.fromkeys(('predictions', 'surprises', 'bad_inputs'), 0)
        self._recent_surprise = collections.deque(maxlen=100)

        self.prediction_pub = self.create_publisher(LatentState, 'jepa/prediction', RELIABLE)
        self.surprise_pub = self.create_publisher(Surprise, 'jepa/surprise', RELIABLE)
        self.version_pub = self.create_publisher(String, 'world_model/model_version', LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', RELIABLE)
        try:
            self.loaded = LoadedModel(self.config.checkpoint, self.config.device)
            self.predictor = self._make_predictor()
            self._announce()
        except Exception as e:  # stays up: a later parameter update can load a good checkpoint
            self.get_logger().error(f'cannot load checkpoint: {e}; waiting for a usable one')
        self.create_subscription(LatentState, 'jepa/latent', self.on_latent, RELIABLE)
        self.create_subscription(ActionStamped, 'jepa/action', self.on_action, RELIABLE)
        self.create_service(Rollout, 'world_model/rollout', self.on_rollout)
        self.create_service(Trigger, 'world_model/reload', self.on_reload)
        self.add_on_set_parameters_callback(self.on_parameters)
        self.create_timer(self.config.diagnostics_period, self.publish_diagnostics)

    # ----- loading
    def _make_predictor(self) -> OnlinePredictor:
        return OnlinePredictor(self.loaded, round(self.config.action_window * 1e9), round(self.config.max_gap * 1e9))

    def _announce(self) -> None:
        self.get_logger().info(f'loaded {self.loaded.checkpoint} (model {self.loaded.model_id}) '
                               f'on {self.loaded.device}')
        self.version_pub.publish(String(data=self.loaded.checkpoint))

    def load(self, checkpoint: str) -> tuple[bool, str]:
        try:
            if self.loaded is None:
                self.loaded = LoadedModel(checkpoint, self.config.device)
                self.predictor = self._make_predictor()
            elif not self.loaded.load(checkpoint):
                return True, f'{self.loaded.checkpoint} is already loaded'
        except Exception as e:
            message = f'cannot load checkpoint {checkpoint!r}: {e}; keeping the current model'
            self.get_logger().error(message)
            return False, message
        # Latents of the old model are not comparable with the new one's.
        self.predictor.reset()
        self._announce()
        return True, f'loaded {self.loaded.checkpoint} (model {self.loaded.model_id})'

    def on_parameters(self, parameters) -> SetParametersResult:
        """Only `checkpoint` is live (rclpy refuses the read-only ones before this is called)."""
        self.config, answer = apply_changes(self.config, parameters, {'checkpoint': self.load})
        return answer

    def on_reload(self, request, response):
        response.success, response.message = self.load(self.config.checkpoint)
        return response

    # ----- online prediction
    def _publish_prediction(self, prediction) -> None:
        latent, source_ns = prediction
        self.prediction_pub.publish(latent_to_msg(latent, ns_stamp(source_ns), self.loaded.model_id))
        self.counts['predictions'] += 1

    def on_latent(self, msg: LatentState) -> None:
        if self.predictor is None:
            self.get_logger().error('no checkpoint loaded: ignoring latents', throttle_duration_sec=5.0)
            return
        if msg.model_id != self.loaded.model_id:
            # Expected for a moment after a reload, until perception follows: throttled.
            self.get_logger().error(f'ignoring latent from model {msg.model_id!r}, expected {self.loaded.model_id!r}',
                                    throttle_duration_sec=5.0)
            return
        try:
            latent = msg_to_latent(msg)
            predictions, surprise = self.predictor.observe_latent(latent, stamp_ns(msg.header.stamp))
        except (ValueError, RuntimeError) as e:  # RuntimeError: torch (device, memory)
            self.counts['bad_inputs'] += 1
            self.get_logger().error(f'bad latent: {e}')
            return
        for prediction in predictions:
            self._publish_prediction(prediction)
        if surprise is not None:
            error, normalized, source = surprise
            out = Surprise(model_id=self.loaded.model_id, predicted_from=ns_stamp(source), error=error,
                           normalized_error=normalized)
            out.header.stamp = msg.header.stamp
            self.surprise_pub.publish(out)
            self.counts['surprises'] += 1
            self._recent_surprise.append(normalized)

    def on_action(self, msg: ActionStamped) -> None:
        if self.predictor is None:
            return
        try:
            if msg.space != ACTION_SPACE:
                raise ValueError(f'action space {msg.space!r}, the model takes {ACTION_SPACE!r}')
            prediction = self.predictor.observe_action(np.asarray(msg.data, dtype=np.float32),
                                                       stamp_ns(msg.header.stamp))
        except (ValueError, RuntimeError) as e:  # RuntimeError: torch (device, memory)
            self.counts['bad_inputs'] += 1
            self.get_logger().error(f'bad action: {e}')
            return
        if prediction is not None:
            self._publish_prediction(prediction)

    def on_rollout(self, request: Rollout.Request, response: Rollout.Response) -> Rollout.Response:
        start_time = time.perf_counter()
        try:
            if self.predictor is None:
                raise ValueError('no checkpoint loaded')
            # A start latent without model_id is taken as this model's (clients that only hold numbers).
            expected = self.loaded.model_id if request.start.model_id else None
            start = msg_to_latent(request.start, expected_model_id=expected)
            batch, horizon, action_dim = int(request.batch), int(request.horizon), int(request.action_dim)
            if batch * horizon * self.loaded.model.latent_dim > self.config.max_rollout_elements:
                raise ValueError(f'batch {batch} x horizon {horizon} is too large for one request')
            actions = np.asarray(request.actions, dtype=np.float32)
            if actions.size != batch * horizon * action_dim:
                raise ValueError(f'{actions.size} action values for batch {batch} x horizon {horizon} x '
                                 f'action_dim {action_dim} = {batch * horizon * action_dim}')
            predicted = self.predictor.rollout(start, actions.reshape(batch, horizon, action_dim))
        except (ValueError, RuntimeError) as e:  # RuntimeError: torch (device, memory)
            response.success, response.message = False, str(e)
            self.get_logger().error(f'rollout request rejected: {e}')
            return response
        response.success, response.message = True, ''
        response.predicted = latent_to_msg(predicted, request.start.header.stamp, self.loaded.model_id)
        self.rollout_latency.add(time.perf_counter() - start_time)
        return response

    def publish_diagnostics(self) -> None:
        p50, p95 = self.rollout_latency.percentiles()
        recent = float(np.mean(self._recent_surprise)) if self._recent_surprise else float('nan')
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: predictor',
                                  hardware_id=str(self.loaded.device) if self.loaded else '')
        if self.loaded is None:
            status.level, status.message = DiagnosticStatus.ERROR, 'no checkpoint loaded'
        else:
            status.level = DiagnosticStatus.OK
            status.message = f'normalized surprise {recent:.3f} (last {len(self._recent_surprise)})'
        status.values = [KeyValue(key=key, value=str(value)) for key, value in self.counts.items()]
        status.values += [KeyValue(key='unscored_latents', value=str(self.predictor.skipped if self.predictor else 0)),
                          KeyValue(key='normalized_surprise_recent', value=f'{recent:.4f}'),
                          KeyValue(key='rollouts', value=str(self.rollout_latency.count)),
                          KeyValue(key='rollout_latency_p50_ms', value=f'{p50:.2f}'),
                          KeyValue(key='rollout_latency_p95_ms', value=f'{p95:.2f}'),
                          KeyValue(key='model_id', value=self.loaded.model_id if self.loaded else ''),
                          KeyValue(key='checkpoint', value=self.loaded.checkpoint if self.loaded else '')]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)


def main(args=None) -> int:
    return run_node(WorldModelNode, args)


if __name__ == '__main__':
    main()
