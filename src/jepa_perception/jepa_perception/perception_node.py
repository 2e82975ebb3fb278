"""`perception_node` (node `perception`): camera/image_raw -> jepa/latent, jepa/goal_image -> jepa/goal_latent.

Thin adapter around `ImageEncoder` and `FrameCheck`. The latent carries the image's stamp and the model id; the
goal latent is latched (transient local) and re-encoded whenever the model changes, since latents of different
checkpoints are not comparable. A new checkpoint is picked up from world_model/model_version or from a
`checkpoint` parameter update (the only parameter applied while the node runs; the others are read-only).

Subscribes to camera/image_raw, the camera_info beside it, jepa/goal_image, joint_states (the arm's joints at each
frame's stamp: the proprioception input of checkpoints that encode it, and the motion that tells a frozen camera
from a still scene) and world_model/model_version; publishes jepa/latent, jepa/goal_latent and /diagnostics.

Camera frames the agent must not learn from are refused (counted on /diagnostics, logged with what was wrong
at most every `refusal_log_period` per kind) and give no latent, so the actor goes without a state and the
safety gate holds the arm: a size other than the camera_info announces, statistics far outside the encoder's
training images, and a frozen camera (a frame identical to the previous one while the joint states show the arm
moved). Identical frames while the arm is still are a still scene and are encoded like any other frame.
"""
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from jepa_common.conversions import image_to_rgb, joint_positions, latent_to_msg, stamp_to_sec
from jepa_common.node import run_node
from jepa_common.parameters import apply_changes, declare_config
from jepa_common.qos import LATCHED, RELIABLE, SENSOR
from jepa_interfaces.msg import LatentState
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from jepa_perception.encoder import ImageEncoder, PerceptionConfig
from jepa_perception.frame_check import FrameCheck, FrameCheckConfig, JointHistory
from jepa_world_model.runtime import LatencyStats, limit_torch_threads


class PerceptionNode(Node):

    def __init__(self, **node_options):
        super().__init__('perception', **node_options)
        self.config = declare_config(self, PerceptionConfig)
        self.frame_check = FrameCheck(declare_config(self, FrameCheckConfig, prefix='frame_check.'))
        limit_torch_threads(self.config.torch_threads)

        self.encoder = None
        self.latency = LatencyStats()
        # The thread's own CPU time per frame beside the wall time: on shared cores the difference is the time
        # the frame waited for a core, not the encoder's cost.
        self.cpu_time = LatencyStats()
        self.errors = 0
        self._warned_sizes = set()
        self._logged_refusals: dict[str, float] = {}
        self._reported_refusals: dict[str, int] = {}
        self._goal_image = None
        self.joints = JointHistory()
        try:
            self.encoder = ImageEncoder(self.config.checkpoint, self.config.device)
            self._use_reference()
            size = self.encoder.image_size
            self.get_logger().info(f'loaded {self.encoder.checkpoint} (model {self.encoder.model_id}, '
                                   f'{size}x{size} input) on {self.encoder.device}')
        except Exception as e:  # the node stays up and waits for a usable checkpoint
            self.get_logger().error(f'cannot load checkpoint: {e}; images are dropped until a checkpoint loads')

        self.latent_pub = self.create_publisher(LatentState, 'jepa/latent', RELIABLE)
        self.goal_pub = self.create_publisher(LatentState, 'jepa/goal_latent', LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', RELIABLE)
        image_qos = QoSProfile(depth=self.config.image_queue_depth,
                               reliability=ReliabilityPolicy.RELIABLE if self.config.image_reliable
                               else ReliabilityPolicy.BEST_EFFORT)
        image_sub = self.create_subscription(Image, 'camera/image_raw', self.on_image, image_qos)
        # The camera_info beside the image topic, as image_transport pairs them (follows a remapped image topic).
        self.info_topic = image_sub.topic_name.rsplit('/', 1)[0] + '/camera_info'
        self.create_subscription(CameraInfo, self.info_topic, self.on_camera_info, image_qos)
        self.create_subscription(Image, 'jepa/goal_image', self.on_goal_image, LATCHED)
        self.create_subscription(JointState, 'joint_states', self.on_joint_state, SENSOR)
        if self.config.follow_model_version:
            self.create_subscription(String, 'world_model/model_version', self.on_model_version, LATCHED)
        self.add_on_set_parameters_callback(self.on_parameters)
        self.create_timer(self.config.diagnostics_period, self.publish_diagnostics)

    # ----- model (re)loading
    def reload(self, checkpoint: str) -> tuple[bool, str]:
        try:
            if self.encoder is None:
                self.encoder = ImageEncoder(checkpoint, self.config.device)
            elif not self.encoder.load(checkpoint):
                return True, f'{self.encoder.checkpoint} is already loaded'
            self._use_reference()
        except Exception as e:
            message = f'cannot load checkpoint {checkpoint!r}: {e}; keeping the current model'
            self.get_logger().error(message)
            return False, message
        self.get_logger().info(f'loaded {self.encoder.checkpoint} (model {self.encoder.model_id})')
        if self._goal_image is not None:
            self.on_goal_image(self._goal_image)
        return True, 'loaded'

    def _use_reference(self) -> None:
        problem = self.frame_check.use_checkpoint(self.encoder.metrics, self.encoder.checkpoint)
        if problem:
            self.get_logger().error(f'{problem}; deriving the image reference from the camera instead')

    def on_model_version(self, msg: String) -> None:
        if msg.data:
            self.reload(msg.data)  # a no-op when that file is already loaded unchanged

    def on_parameters(self, parameters) -> SetParametersResult:
        """Only `checkpoint` is live (rclpy refuses the read-only ones before this is called)."""
        self.config, answer = apply_changes(self.config, parameters, {'checkpoint': self.reload})
        return answer

    # ----- joint states
    def on_joint_state(self, msg: JointState) -> None:
        try:
            positions = joint_positions(msg, self.config.proprio_joints)
        except ValueError as e:
            self.get_logger().error(f'ignored joint state: {e} (arm_joints and finger_joints must name the arm\'s joints)',
                                    throttle_duration_sec=60.0)
            return
        self.joints.add(stamp_to_sec(msg.header.stamp), positions)

    # ----- images
    def on_camera_info(self, msg: CameraInfo) -> None:
        # 0 x 0: an uncalibrated camera that does not say its size.
        self.frame_check.expected_size = (msg.width, msg.height) if msg.width and msg.height else None

    def _encode(self, msg: Image, what: str, camera: bool = False):
        """Latent of one image message, or None after logging what was wrong with it. A camera frame goes
        through the frame check with the arm's joints at its stamp (a refused one gives None)."""
        if self.encoder is None:
            self.get_logger().error(f'no checkpoint loaded: dropping {what}', throttle_duration_sec=5.0)
            return None
        try:
            rgb = image_to_rgb(msg)
            if camera:
                stamp = stamp_to_sec(msg.header.stamp)
                joints = self.joints.at(stamp, self.config.joint_state_timeout)
                latent, verdict = self.frame_check.latent(self.encoder, rgb, joints, self.joints.settled(stamp))
            else:
                # A goal image was not taken now: the latest joints stand in for proprioception.
                joints = self.joints.latest()
                image, _ = self.encoder.prepare(rgb)
                latent = self.encoder.encode_batch(image[None], None if joints is None else joints[None])[0]
                verdict = None
        except (ValueError, RuntimeError) as e:  # RuntimeError: torch (device, memory)
            self.errors += 1
            self.get_logger().error(f'bad {what} (stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}): {e}')
            return None
        size = self.encoder.image_size
        if verdict is not None and not verdict:
            self._log_refusal(msg, verdict)
        elif rgb.shape[:2] != (size, size) and rgb.shape[:2] not in self._warned_sizes:
            self._warned_sizes.add(rgb.shape[:2])
            self.get_logger().warning(f'{what} is {rgb.shape[1]}x{rgb.shape[0]}, the encoder takes '
                                      f'{size}x{size}: resizing (warned once per size)')
        return latent

    def _log_refusal(self, msg: Image, verdict) -> None:
        now = time.monotonic()
        if now - self._logged_refusals.get(verdict.kind, -float('inf')) >= self.config.refusal_log_period:
            self._logged_refusals[verdict.kind] = now
            self.get_logger().warning(f'camera frame refused ({verdict.kind}, stamp {msg.header.stamp.sec}.'
                                      f'{msg.header.stamp.nanosec:09d}): {verdict.reason}; '
                                      f'refused so far: {self.frame_check.counts}')

    def on_image(self, msg: Image) -> None:
        start, cpu_start = time.perf_counter(), time.thread_time()
        latent = self._encode(msg, 'camera image', camera=True)
        if latent is None:
            return
        self.latent_pub.publish(latent_to_msg(latent, msg.header.stamp, self.encoder.model_id, msg.header.frame_id))
        # The CPU interval nests inside the wall interval, so a frame's CPU time never exceeds its latency.
        cpu = time.thread_time() - cpu_start
        self.latency.add(time.perf_counter() - start)
        self.cpu_time.add(cpu)

    def on_goal_image(self, msg: Image) -> None:
        if self.encoder is None:
            self._goal_image = msg  # encoded once a checkpoint loads
        latent = self._encode(msg, 'goal image')
        if latent is None:
            return
        self._goal_image = msg
        self.goal_pub.publish(latent_to_msg(latent, msg.header.stamp, self.encoder.model_id, msg.header.frame_id))
        self.get_logger().info(f'published goal latent (model {self.encoder.model_id})')

    def publish_diagnostics(self) -> None:
        p50, p95 = self.latency.percentiles()
        cpu_p50, cpu_p95 = self.cpu_time.percentiles()
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: encoder',
                                  hardware_id=str(self.encoder.device) if self.encoder else '')
        refused = {kind: count - self._reported_refusals.get(kind, 0) for kind, count in self.frame_check.counts.items()
                   if count > self._reported_refusals.get(kind, 0)}
        self._reported_refusals = dict(self.frame_check.counts)
        if self.encoder is None:
            status.level, status.message = DiagnosticStatus.ERROR, 'no checkpoint loaded'
        elif refused:
            status.level = DiagnosticStatus.WARN
            status.message = f'camera frames refused since the last report: {refused}'
        else:
            status.level, status.message = DiagnosticStatus.OK, f'p50 {p50:.1f} ms, p95 {p95:.1f} ms per frame'
        status.values = [KeyValue(key='latency_p50_ms', value=f'{p50:.2f}'),
                         KeyValue(key='latency_p95_ms', value=f'{p95:.2f}'),
                         KeyValue(key='cpu_p50_ms', value=f'{cpu_p50:.2f}'),
                         KeyValue(key='cpu_p95_ms', value=f'{cpu_p95:.2f}'),
                         KeyValue(key='frames', value=str(self.latency.count)),
                         KeyValue(key='bad_images', value=str(self.errors)),
                         *(KeyValue(key=f'refused_{kind}', value=str(count))
                           for kind, count in self.frame_check.counts.items()),
                         KeyValue(key='image_reference', value=self.frame_check.reference.source
                                  if self.frame_check.reference else 'not yet derived'),
                         KeyValue(key='model_id', value=self.encoder.model_id if self.encoder else '')]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)
        if self.latency.count:
            self.get_logger().info(f'{self.latency.count} frames, latency p50 {p50:.1f} ms, p95 {p95:.1f} ms '
                                   f'(CPU p50 {cpu_p50:.1f} ms, p95 {cpu_p95:.1f} ms)')


def main(args=None) -> int:
    return run_node(PerceptionNode, args)


if __name__ == '__main__':
    main()
