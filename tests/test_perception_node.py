"""perception_node over real DDS: latents carry the image's stamp and model id, the goal latent is latched,
replayed images give identical latents, bad images are reported without killing the node, a new
checkpoint announced on /world_model/model_version is picked up, and camera frames the agent must not learn from
(a size other than the camera info's, noise, frozen) are refused by name and counted."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from jepa_interfaces.msg import LatentState
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from jepa_common.conversions import msg_to_latent, rgb_to_image
from jepa_world_model.model import read_checkpoint
from test_perception_frame_check import scene
from test_world_model_node_core import make_checkpoint

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _images(count: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Views of a scene (pixel noise is refused)."""
    return [scene(seed + i, size) for i in range(count)]


def _start_perception(ros_graph, checkpoint):
    return ros_graph.start('perception_node', 'perception', params={
        'checkpoint': checkpoint, 'device': 'cpu', 'image_queue_depth': 20, 'diagnostics_period': 1.0,
        'frame_check.reference_frames': 5})


def _wait_for_subscriber(ros_graph, publisher):
    ros_graph.spin_until(lambda: publisher.get_subscription_count() > 0, 20, f'a subscriber on {publisher.topic_name}')


@pytest.mark.integration
def test_latents_goal_latent_determinism_bad_images_and_reload(ros_graph, tmp_path):
    checkpoint = make_checkpoint(tmp_path / 'model.pt')
    _, model_id = read_checkpoint(checkpoint)
    perception = _start_perception(ros_graph, checkpoint)
    latents = ros_graph.collect(LatentState, '/jepa/latent', 50)
    diagnostics = ros_graph.collect(DiagnosticArray, '/diagnostics')
    image_pub = ros_graph.node.create_publisher(Image, '/camera/image_raw', 10)
    goal_pub = ros_graph.node.create_publisher(Image, '/jepa/goal_image', LATCHED)
    _wait_for_subscriber(ros_graph, image_pub)

    def publish_until(msg, done, what):
        """The camera topic is best effort (as camera drivers offer it): publish again until it got through."""
        for _ in range(10):
            image_pub.publish(msg)
            try:
                return ros_graph.spin_until(done, 2.0, what)
            except AssertionError:
                continue
        raise AssertionError(f'no {what} after 10 attempts:\n{perception.output()[-2000:]}')

    def latent_for(stamp):
        matching = [m for m in latents if m.header.stamp == stamp]
        return matching[0] if matching else None

    # The same three images twice, with distinct stamps.
    frames = _images(3)
    stamps = [Time(sec=100 + i, nanosec=1000 * i + 7) for i in range(6)]
    for i, stamp in enumerate(stamps):
        publish_until(rgb_to_image(frames[i % 3], stamp, 'camera'), lambda: latent_for(stamp), f'latent {i}')
    replies = [latent_for(stamp) for stamp in stamps]
    assert all(m.model_id == model_id and list(m.shape) == [16] for m in replies)
    values = [msg_to_latent(m) for m in replies]
    for i in range(3):
        np.testing.assert_array_equal(values[i], values[i + 3])
    assert not np.allclose(values[0], values[1])

    # Malformed: data shorter than step*height, and an unsupported encoding. No latent, node alive.
    broken = rgb_to_image(frames[0], Time(sec=200), 'camera')
    broken.data = bytes(broken.data)[:100]
    publish_until(broken, lambda: 'expected step*height' in perception.output(), 'error about the short image')
    weird = rgb_to_image(frames[0], Time(sec=201), 'camera')
    weird.encoding = '32FC1'
    publish_until(weird, lambda: "unsupported image encoding '32FC1'" in perception.output(), 'encoding error')
    assert latent_for(Time(sec=200)) is None and latent_for(Time(sec=201)) is None
    assert 'bad camera image' in perception.output()
    # A larger image is resized (with a warning), not rejected.
    big = np.repeat(np.repeat(frames[1], 2, axis=0), 2, axis=1)
    publish_until(rgb_to_image(big, Time(sec=202), 'camera'), lambda: latent_for(Time(sec=202)), 'resized latent')
    np.testing.assert_allclose(msg_to_latent(latent_for(Time(sec=202))), values[1], atol=1e-4)
    assert 'resizing' in perception.output()
    assert perception.alive()

    # Goal image -> latched goal latent, heard by a subscriber that joins afterwards.
    goal_pub.publish(rgb_to_image(frames[2], Time(sec=300), 'camera'))
    ros_graph.spin_for(1.5)
    goals = ros_graph.collect(LatentState, '/jepa/goal_latent', LATCHED)
    ros_graph.spin_until(lambda: len(goals) >= 1, 20, 'the latched goal latent')
    assert goals[0].header.stamp.sec == 300 and goals[0].model_id == model_id
    np.testing.assert_array_equal(msg_to_latent(goals[0]), values[2])

    ros_graph.spin_until(lambda: any(s.name == 'perception: encoder' and int(dict(
        (v.key, v.value) for v in s.values)['frames']) >= 7 for d in diagnostics for s in d.status),
        20, 'latency diagnostics')
    status = [s for d in diagnostics for s in d.status if s.name == 'perception: encoder'][-1]
    keys = {v.key: v.value for v in status.values}
    assert float(keys['latency_p95_ms']) >= float(keys['latency_p50_ms']) > 0
    # The node's own CPU time per frame is part of its wall-clock latency, never more.
    assert 0 < float(keys['cpu_p50_ms']) <= float(keys['latency_p50_ms'])
    assert float(keys['cpu_p50_ms']) <= float(keys['cpu_p95_ms']) <= float(keys['latency_p95_ms'])

    # A new checkpoint announced by the world model: a missing file is refused (the model is kept), a
    # real one is loaded and the goal is encoded again with it (latents of two models do not compare).
    version_pub = ros_graph.node.create_publisher(String, '/world_model/model_version', LATCHED)
    version_pub.publish(String(data=str(tmp_path / 'does_not_exist.pt')))
    ros_graph.spin_until(lambda: 'keeping the current model' in perception.output(), 20, 'the refused reload')
    second = make_checkpoint(tmp_path / 'second.pt', seed=1)
    _, second_id = read_checkpoint(second)
    version_pub.publish(String(data=second))
    ros_graph.spin_until(lambda: len(goals) >= 2, 30, 'the goal latent of the new model')
    assert goals[1].model_id == second_id and goals[1].header.stamp.sec == 300
    assert not np.allclose(msg_to_latent(goals[0]), msg_to_latent(goals[1]))
    publish_until(rgb_to_image(frames[0], Time(sec=400), 'camera'), lambda: latent_for(Time(sec=400)),
                  'a latent of the new model')
    assert latent_for(Time(sec=400)).model_id == second_id

    # The camera says its size: a frame of another size is refused by name, not resized.
    info_pub = ros_graph.node.create_publisher(CameraInfo, '/camera/camera_info', 10)
    ros_graph.spin_until(lambda: info_pub.get_subscription_count() > 0, 20, 'a subscriber on the camera info')
    info = CameraInfo(width=32, height=32)
    for _ in range(10):
        info_pub.publish(info)
        ros_graph.spin_for(0.2)
    publish_until(rgb_to_image(big, Time(sec=500), 'camera'),
                  lambda: 'image is 64x64, the camera info says 32x32' in perception.output(), 'the size refusal')
    assert latent_for(Time(sec=500)) is None and 'camera frame refused (size' in perception.output()
    # A frozen frame (the same picture again under a new stamp) gives the previous latent bit for bit: the
    # world model and the memory take it for no new observation.
    publish_until(rgb_to_image(frames[1], Time(sec=501), 'camera'), lambda: latent_for(Time(sec=501)), 'a latent')
    publish_until(rgb_to_image(frames[1], Time(sec=502), 'camera'), lambda: latent_for(Time(sec=502)),
                  'the frozen frame\'s latent')
    assert latent_for(Time(sec=502)).data == latent_for(Time(sec=501)).data
    # Pixel noise: no latent.
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    publish_until(rgb_to_image(noise, Time(sec=503), 'camera'),
                  lambda: 'camera frame refused (statistics' in perception.output(), 'the noise refusal')
    assert latent_for(Time(sec=503)) is None

    def refused():
        values = [{v.key: v.value for v in s.values} for d in diagnostics for s in d.status
                  if s.name == 'perception: encoder']
        return {k: int(v) for k, v in values[-1].items() if k.startswith('refused_')} if values else {}
    ros_graph.spin_until(lambda: all(refused().get(f'refused_{kind}', 0) >= 1
                                     for kind in ('size', 'frozen', 'statistics')), 10, 'refusals counted on /diagnostics')
    assert perception.alive() and perception.stop() == 0
