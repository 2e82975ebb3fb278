"""`world_model_node` (node `world_model`): the world model online.

- /jepa/latent + /jepa/action -> /jepa/prediction: the one-step prediction of the next latent, stamped with
  the stamp of the latent it predicts from.
- when that next latent arrives -> /jepa/surprise: squared error and the same normalized by the embedding
  variance of the training data.
- /world_model/rollout (jepa_interfaces/Rollout): batched open-loop rollouts of many action sequences.
- /world_model/model_version (std_msgs/String, transient local): the checkpoint path after each (re)load.
  A new checkpoint is loaded by setting the `checkpoint` parameter, or `/world_model/reload` (std_srvs/Trigger)
  re-reads the current one after it was rewritten in place (e.g. after a world-model correction).
- /diagnostics every `diagnostics_period`: prediction and surprise counts, recent normalized surprise,
  rollout latency.

The ROS-free core (`LoadedModel`, `OnlinePredictor`) is plain torch; the perception node loads its model
with `LoadedModel` too.
"""
from __future__ import annotations

import collections
import os
import time

import numpy as np
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from jepa_common.conversions import latent_to_msg, msg_to_latent
from jepa_common.node import run_node
from jepa_interfaces.msg import ActionStamped, LatentState, Surprise
from jepa_interfaces.srv import Rollout
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

from jepa_world_model.model import WorldModel, default_checkpoint_path, model_from_checkpoint, read_checkpoint


def select_device(name: str) -> torch.device:
    """'auto' picks the GPU when there is one; 'cuda' without a GPU is an error, not a silent fallback."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name != 'cpu' and not (name == 'cuda' or name.startswith('cuda:')):
        raise ValueError(f'device must be auto, cpu or cuda, got {name!r}')
    if name.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'device {name!r} requested but torch sees no CUDA GPU')
    return torch.device(name)


def limit_torch_threads(threads: int) -> None:
    """Intra-op threads of this process (0 = torch's default, one per core). Every learned node is its own
    process: with one thread each they share the cores instead of spinning against each other (measured on
    2 busy cores: encoding one frame 0.9 ms p50 with 1 thread, 22 ms with 2)."""
    if threads > 0:
        torch.set_num_threads(threads)


def resolve_checkpoint(path: str) -> str:
    """'' means the shipped default checkpoint."""
    return str(default_checkpoint_path()) if not path else os.path.abspath(os.path.expanduser(path))


class LatencyStats:
    """Rolling per-frame latency (seconds in, milliseconds out) over the last `window` frames."""

    def __init__(self, window: int = 500):
        self._samples = collections.deque(maxlen=window)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._samples.append(seconds * 1e3)
        self.count += 1

    def percentiles(self) -> tuple[float, float]:
        if not self._samples:
            return float('nan'), float('nan')
        p50, p95 = np.percentile(np.fromiter(self._samples, dtype=float), [50, 95])
        return float(p50), float(p95)


class LoadedModel:
    """The currently loaded checkpoint. `load` swaps in a new model only once it loaded completely, so a
    failed reload (missing file, mismatched checkpoint) leaves the previous model in service."""

    def __init__(self, checkpoint: str = '', device: str = 'auto'):
        self.device = select_device(device)
        self.model: WorldModel | None = None
        self.metrics: dict = {}  # what the checkpoint records about its training (held-out errors, ...)
        self.checkpoint = ''
        self._signature = None
        self.load(checkpoint)

    def load(self, checkpoint: str) -> bool:
        """Load checkpoint ('' = shipped default); False when that file is already loaded, unchanged."""
        path = resolve_checkpoint(checkpoint)
        stat = os.stat(path) if os.path.isfile(path) else None
        signature = (path, stat.st_mtime_ns, stat.st_size) if stat else None
        if signature is not None and signature == self._signature:
            return False
        checkpoint, model_id = read_checkpoint(path)  # raises CheckpointError naming what is wrong
        model = model_from_checkpoint(checkpoint, path, model_id, self.device)
        self.model, self.metrics, self.checkpoint, self._signature = model, checkpoint['metrics'], path, signature
        return True

    @property
    def model_id(self) -> str:
        return self.model.model_id


def _finite_vector(values, dim: int, what: str) -> np.ndarray:
    """values as a flat float32 vector of the model's size; ValueError naming what is wrong otherwise."""
    vector = np.asarray(values, dtype=np.float32).reshape(-1)
    if vector.size != dim:
        raise ValueError(f'{what} has {vector.size} values, the model uses {dim}')
    if not np.all(np.isfinite(vector)):
        raise ValueError(f'{what} contains NaN or inf')
    return vector


class OnlinePredictor:
    """Pairs each latent with the action executed from it, predicts the next latent, and scores that
    prediction when the next latent arrives. Stamps are integer nanoseconds (exact, so outputs carry the
    very stamp of their source).

    The action taken from the state at stamp t is the one stamped within [t, t + action_window): the actor
    stamps its action when it issues it, after the state arrived, and it may reach this node before or
    after the latent does. When no action comes for a state, the last executed action is assumed to have
    continued.

    Only a new observation is scored. A latent identical to the previous one is perception repeating a frozen
    camera frame's latent, and a latent more than max_gap after the one predicted from follows frames perception
    refused (or a dropped stream): either way an unknown number of actions passed unseen, so neither is scored
    against a one-step prediction, and a repeated one is not predicted from (`skipped` counts both).
    """

    def __init__(self, loaded: LoadedModel, action_window_ns: int = 100_000_000, max_gap_ns: int = 500_000_000):
        self.loaded = loaded
        self.action_window_ns = int(action_window_ns)
        self.max_gap_ns = int(max_gap_ns)
        self.skipped = 0
        self.reset()

    def reset(self) -> None:
        self._actions: collections.deque = collections.deque(maxlen=32)  # (stamp_ns, action)
        self._pending: tuple[np.ndarray, int] | None = None  # latest latent not yet predicted from
        self._prediction: tuple[torch.Tensor, int] | None = None  # prediction for the next latent, source stamp
        self._last_stamp: int | None = None
        self._last_latent: np.ndarray | None = None

    def _check_latent(self, latent: np.ndarray) -> np.ndarray:
        return _finite_vector(latent, self.loaded.model.latent_dim, 'latent')

    def check_action(self, action: np.ndarray) -> np.ndarray:
        return _finite_vector(action, self.loaded.model.action_dim, 'action')

    def _action_from(self, stamp_ns: int) -> np.ndarray | None:
        for action_stamp, action in reversed(self._actions):
            if stamp_ns <= action_stamp < stamp_ns + self.action_window_ns:
                return action
        return None

    def _last_action_before(self, stamp_ns: int) -> np.ndarray | None:
        for action_stamp, action in reversed(self._actions):
            if action_stamp < stamp_ns:
                return action
        return None

    @torch.inference_mode()
    def _predict(self, latent: np.ndarray, stamp_ns: int, action: np.ndarray) -> tuple[np.ndarray, int]:
        device = self.loaded.device
        z = torch.from_numpy(latent).to(device)[None]
        predicted = self.loaded.model.predict(z, torch.from_numpy(action).to(device)[None])[0]
        if not torch.all(torch.isfinite(predicted)):
            raise ValueError('the model predicted NaN or inf')
        self._prediction = (predicted, stamp_ns)
        self._pending = None
        return predicted.cpu().numpy(), stamp_ns

    @torch.inference_mode()
    def observe_latent(self, latent: np.ndarray, stamp_ns: int) -> tuple[list, tuple | None]:
        """A new latent arrived. Returns (predictions made now: [(latent, source stamp)],
        surprise: (error, normalized error, source stamp) or None)."""
        latent = self._check_latent(latent)
        if self._last_stamp is not None and stamp_ns <= self._last_stamp:
            # Time went backwards (a replay restarted, a sim reset its clock): start over.
            actions = list(self._actions)
            self.reset()
            self._actions.extend(a for a in actions if a[0] >= stamp_ns)
        self._last_stamp = stamp_ns
        repeated = self._last_latent is not None and np.array_equal(latent, self._last_latent)
        self._last_latent = latent
        if repeated:
            self.skipped += 1
            self._pending = self._prediction = None
            return [], None
        predictions = []
        if self._pending is not None:
            action = self._last_action_before(stamp_ns)
            if action is not None:
                predictions.append(self._predict(*self._pending, action))
        surprise = None
        if self._prediction is not None:
            predicted, source = self._prediction
            self._prediction = None
            if stamp_ns - source > self.max_gap_ns:
                self.skipped += 1
            else:
                actual = torch.from_numpy(latent).to(self.loaded.device)
                surprise = (float((predicted - actual).pow(2).mean()),
                            float(self.loaded.model.normalized_error(predicted, actual)), source)
        self._pending = (latent, stamp_ns)
        action = self._action_from(stamp_ns)
        if action is not None:
            predictions.append(self._predict(latent, stamp_ns, action))
        return predictions, surprise

    def observe_action(self, action: np.ndarray, stamp_ns: int) -> tuple[np.ndarray, int] | None:
        """An executed action: returns the prediction (latent, source stamp) it completes, if any."""
        action = self.check_action(action)
        self._actions.append((stamp_ns, action))
        if self._pending is not None and self._pending[1] <= stamp_ns < self._pending[1] + self.action_window_ns:
            return self._predict(*self._pending, action)
        return None

    @torch.inference_mode()
    def rollout(self, start: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """start (D,) and actions (B, T, A) -> predicted latents (B, T, D)."""
        start = self._check_latent(start)
        model = self.loaded.model
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[2] != model.action_dim or actions.shape[0] < 1 or actions.shape[1] < 1:
            raise ValueError(f'actions must be (batch >= 1, horizon >= 1, {model.action_dim}), got {actions.shape}')
        if not np.all(np.isfinite(actions)):
            raise ValueError('actions contain NaN or inf')
        device = self.loaded.device
        z0 = torch.from_numpy(start).to(device)[None].expand(actions.shape[0], -1)
        predicted = model.rollout(z0, torch.from_numpy(actions).to(device))
        if not torch.all(torch.isfinite(predicted)):
            raise ValueError('the rollout diverged to NaN or inf')
        return predicted.float().cpu().numpy()


# ---------------------------------------------------------------- ROS node

def stamp_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def ns_stamp(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
ACTION_SPACE = 'ee_delta'


class WorldModelNode(Node):

    def __init__(self):
        super().__init__('world_model')
        self.declare_parameter('checkpoint', '')
        self.declare_parameter('device', 'auto')
        self.declare_parameter('action_window', 0.1)  # s after a latent within which its action is stamped
        # s: a latent further after the one a prediction came from is not scored (frames refused between them).
        self.declare_parameter('max_gap', 0.5)
        self.declare_parameter('max_rollout_elements', 4_000_000)  # batch*horizon*latent_dim per request
        limit_torch_threads(self.declare_parameter('torch_threads', 1).value)
        self.loaded: LoadedModel | None = None
        self.predictor: OnlinePredictor | None = None
        self.rollout_latency = LatencyStats()
        self.counts = dict.fromkeys(('predictions', 'surprises', 'bad_inputs'), 0)
        self._recent_surprise = collections.deque(maxlen=100)

        self.prediction_pub = self.create_publisher(LatentState, '/jepa/prediction', 10)
        self.surprise_pub = self.create_publisher(Surprise, '/jepa/surprise', 10)
        self.version_pub = self.create_publisher(String, '/world_model/model_version', LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        try:
            self.loaded = LoadedModel(self.get_parameter('checkpoint').value, self.get_parameter('device').value)
            self.predictor = self._make_predictor()
            self._announce()
        except Exception as e:  # stays up: a later parameter update can load a good checkpoint
            self.get_logger().error(f'cannot load checkpoint: {e}; waiting for a usable one')
        self.create_subscription(LatentState, '/jepa/latent', self.on_latent, 10)
        self.create_subscription(ActionStamped, '/jepa/action', self.on_action, 10)
        self.create_service(Rollout, '/world_model/rollout', self.on_rollout)
        self.create_service(Trigger, '/world_model/reload', self.on_reload)
        self.add_on_set_parameters_callback(self.on_parameters)
        self.create_timer(self.declare_parameter('diagnostics_period', 2.0).value, self.publish_diagnostics)

    # ----- loading
    def _make_predictor(self) -> OnlinePredictor:
        return OnlinePredictor(self.loaded, int(self.get_parameter('action_window').value * 1e9),
                               int(self.get_parameter('max_gap').value * 1e9))

    def _announce(self) -> None:
        self.get_logger().info(f'loaded {self.loaded.checkpoint} (model {self.loaded.model_id}) '
                               f'on {self.loaded.device}')
        self.version_pub.publish(String(data=self.loaded.checkpoint))

    def load(self, checkpoint: str) -> tuple[bool, str]:
        try:
            if self.loaded is None:
                self.loaded = LoadedModel(checkpoint, self.get_parameter('device').value)
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

    def on_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == 'checkpoint':
                ok, message = self.load(param.value)
                return SetParametersResult(successful=ok, reason=message)
        return SetParametersResult(successful=True)

    def on_reload(self, request, response):
        response.success, response.message = self.load(self.get_parameter('checkpoint').value)
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
            if batch * horizon * self.loaded.model.latent_dim > self.get_parameter('max_rollout_elements').value:
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
        status = DiagnosticStatus(name='world_model: predictor',
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
