"""`perception_node` (node `perception`): /camera/image_raw -> /jepa/latent, /jepa/goal_image -> /jepa/goal_latent.

Thin adapter around `ImageEncoder`. The latent carries the image's stamp and the model id; the goal latent
is latched (transient local) and re-encoded whenever the model changes, since latents of different
checkpoints are not comparable. A new checkpoint is picked up from /world_model/model_version or from a
`checkpoint` parameter update.
"""
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from jepa_common.conversions import image_to_rgb, joint_positions, latent_to_msg
from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_FINGER_JOINTS
from jepa_common.node import run_node
from jepa_interfaces.msg import LatentState
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from jepa_perception.encoder import ImageEncoder
from jepa_world_model.world_model_node import LatencyStats, limit_torch_threads

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class PerceptionNode(Node):

    def __init__(self):
        super().__init__('perception')
        self.declare_parameter('checkpoint', '')
        self.declare_parameter('device', 'auto')
        self.declare_parameter('image_queue_depth', 2)
        # Best effort matches both kinds of camera publisher (drivers often offer only best effort).
        self.declare_parameter('image_reliable', False)
        self.declare_parameter('diagnostics_period', 5.0)
        self.declare_parameter('follow_model_version', True)
        # Joint order of the proprioception input, for checkpoints that encode joint positions too.
        self.declare_parameter('proprio_joints', [*PANDA_ARM_JOINTS, *PANDA_FINGER_JOINTS])
        limit_torch_threads(self.declare_parameter('torch_threads', 1).value)

        self.encoder = None
        self.latency = LatencyStats()
        # The thread's own CPU time per frame beside the wall time: on shared cores the difference is the time
        # the frame waited for a core, not the encoder's cost.
        self.cpu_time = LatencyStats()
        self.errors = 0
        self._warned_sizes = set()
        self._goal_image = None
        self._joint_state: JointState | None = None
        self._joint_state_sub = None
        try:
            self.encoder = ImageEncoder(self.get_parameter('checkpoint').value, self.get_parameter('device').value)
            size = self.encoder.image_size
            self.get_logger().info(f'loaded {self.encoder.checkpoint} (model {self.encoder.model_id}, '
                                   f'{size}x{size} input) on {self.encoder.device}')
        except Exception as e:  # the node stays up and waits for a usable checkpoint
            self.get_logger().error(f'cannot load checkpoint: {e}; images are dropped until a checkpoint loads')

        self.latent_pub = self.create_publisher(LatentState, '/jepa/latent', 10)
        self.goal_pub = self.create_publisher(LatentState, '/jepa/goal_latent', LATCHED)
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        image_qos = QoSProfile(depth=self.get_parameter('image_queue_depth').value,
                               reliability=ReliabilityPolicy.RELIABLE if self.get_parameter('image_reliable').value
                               else ReliabilityPolicy.BEST_EFFORT)
        self.create_subscription(Image, '/camera/image_raw', self.on_image, image_qos)
        self.create_subscription(Image, '/jepa/goal_image', self.on_goal_image, LATCHED)
        if self.get_parameter('follow_model_version').value:
            self.create_subscription(String, '/world_model/model_version', self.on_model_version, LATCHED)
        self.add_on_set_parameters_callback(self.on_parameters)
        self._follow_joint_states()
        self.create_timer(self.get_parameter('diagnostics_period').value, self.publish_diagnostics)

    # ----- model (re)loading
    def reload(self, checkpoint: str) -> tuple[bool, str]:
        try:
            if self.encoder is None:
                self.encoder = ImageEncoder(checkpoint, self.get_parameter('device').value)
            elif not self.encoder.load(checkpoint):
                return True, f'{self.encoder.checkpoint} is already loaded'
        except Exception as e:
            message = f'cannot load checkpoint {checkpoint!r}: {e}; keeping the current model'
            self.get_logger().error(message)
            return False, message
        self.get_logger().info(f'loaded {self.encoder.checkpoint} (model {self.encoder.model_id})')
        self._follow_joint_states()
        if self._goal_image is not None:
            self.on_goal_image(self._goal_image)
        return True, 'loaded'

    def _follow_joint_states(self) -> None:
        if self.encoder is not None and self.encoder.uses_proprio and self._joint_state_sub is None:
            self._joint_state_sub = self.create_subscription(
                JointState, '/joint_states', lambda msg: setattr(self, '_joint_state', msg), 10)

    def _proprio(self):
        if not self.encoder.uses_proprio or self._joint_state is None:
            return None
        return joint_positions(self._joint_state, self.get_parameter('proprio_joints').value)[None]

    def on_model_version(self, msg: String) -> None:
        if msg.data:
            self.reload(msg.data)  # a no-op when that file is already loaded unchanged

    def on_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == 'checkpoint':
                ok, message = self.reload(param.value)
                return SetParametersResult(successful=ok, reason=message)
        return SetParametersResult(successful=True)

    # ----- images
    def _encode(self, msg: Image, what: str):
        """Latent of one image message, or None after logging what was wrong with it."""
        if self.encoder is None:
            self.get_logger().error(f'no checkpoint loaded: dropping {what}', throttle_duration_sec=5.0)
            return None
        try:
            rgb = image_to_rgb(msg)
            image, resized = self.encoder.prepare(rgb)
            if resized and rgb.shape[:2] not in self._warned_sizes:
                self._warned_sizes.add(rgb.shape[:2])
                size = self.encoder.image_size
                self.get_logger().warning(f'{what} is {rgb.shape[1]}x{rgb.shape[0]}, the encoder takes '
                                          f'{size}x{size}: resizing (warned once per size)')
            return self.encoder.encode_batch(image[None], self._proprio())[0]
        except (ValueError, RuntimeError) as e:  # RuntimeError: torch (device, memory)
            self.errors += 1
            self.get_logger().error(f'bad {what} (stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}): {e}')
            return None

    def on_image(self, msg: Image) -> None:
        start, cpu_start = time.perf_counter(), time.thread_time()
        latent = self._encode(msg, 'camera image')
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
        status = DiagnosticStatus(name='perception: encoder',
                                  hardware_id=str(self.encoder.device) if self.encoder else '')
        if self.encoder is None:
            status.level, status.message = DiagnosticStatus.ERROR, 'no checkpoint loaded'
        else:
            status.level, status.message = DiagnosticStatus.OK, f'p50 {p50:.1f} ms, p95 {p95:.1f} ms per frame'
        status.values = [KeyValue(key='latency_p50_ms', value=f'{p50:.2f}'),
                         KeyValue(key='latency_p95_ms', value=f'{p95:.2f}'),
                         KeyValue(key='cpu_p50_ms', value=f'{cpu_p50:.2f}'),
                         KeyValue(key='cpu_p95_ms', value=f'{cpu_p95:.2f}'),
                         KeyValue(key='frames', value=str(self.latency.count)),
                         KeyValue(key='bad_images', value=str(self.errors)),
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
