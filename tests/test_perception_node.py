"""perception_node. In process: its parameters (described, numeric ones with a range, read-only but the live
`checkpoint`), and identical frames judged with the joint states (a still scene encoded, a frozen camera refused).
Over real DDS: latents carry the image's stamp and model id, the goal latent is latched, replayed images give
identical latents, bad images are reported without killing the node, a new checkpoint announced on
world_model/model_version is picked up, and camera frames the agent must not learn from (a size other than the
camera info's, noise, frozen) are refused by name and counted."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from jepa_interfaces.msg import LatentState
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from jepa_common.conversions import msg_to_latent, rgb_to_image
from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_FINGER_JOINTS
from jepa_common.qos import LATCHED
from jepa_common.settings import config_fields
from jepa_perception.encoder import PerceptionConfig
from jepa_perception.frame_check import FrameCheckConfig
from jepa_world_model.model import read_checkpoint
from test_perception_frame_check import ARM_STILL, scene
from test_world_model_node_core import make_checkpoint
from test_world_model_node_params import check_parameters, make_node  # noqa: F401 (make_node: a fixture)

JOINTS = [*PANDA_ARM_JOINTS, *PANDA_FINGER_JOINTS]


@pytest.fixture
def perception(make_node, tmp_path, one_torch_thread):
    from jepa_perception.perception_node import PerceptionNode
    return make_node(PerceptionNode, checkpoint=make_checkpoint(tmp_path / 'a.pt'), device='cpu',
                     **{'frame_check.reference_frames': 3})


def test_every_parameter_is_described_with_a_range_and_only_the_checkpoint_is_live(perception):
    expected = {f.name for f in config_fields(PerceptionConfig)} | \
        {f'frame_check.{f.name}' for f in config_fields(FrameCheckConfig)}
    assert check_parameters(perception, expected) == {'checkpoint'}
    assert perception.frame_check.config.reference_frames == 3


@pytest.mark.parametrize('name, value', [('device', 'cuda'), ('image_queue_depth', 5), ('arm_joints', ['a']),
                                         ('joint_state_timeout', 1.0), ('refusal_log_period', 1.0),
                                         ('frame_check.tolerance', 2.0), ('frame_check.still_tolerance', 0.1)])
def test_a_read_only_parameter_is_refused_and_keeps_its_value(perception, name, value):
    before = perception.get_parameter(name).value
    (outcome,) = perception.set_parameters([Parameter(name, value=value)])
    assert not outcome.successful and 'read-only' in outcome.reason
    assert perception.get_parameter(name).value == before


def test_a_frame_check_setting_it_cannot_use_stops_the_node_by_name(make_node, tmp_path):
    from jepa_perception.perception_node import PerceptionNode
    with pytest.raises(ValueError, match='min_band'):
        make_node(PerceptionNode, checkpoint=make_checkpoint(tmp_path / 'a.pt'), device='cpu',
                  **{'frame_check.min_band': [1.0, 2.0]})


def _joint_state(stamp: Time, positions) -> JointState:
    msg = JointState(name=JOINTS, position=[float(p) for p in positions])
    msg.header.stamp = stamp
    return msg


def test_setting_the_checkpoint_encodes_with_that_model_and_a_broken_one_is_refused(perception, tmp_path):
    latents = []
    perception.latent_pub.publish = latents.append
    second = make_checkpoint(tmp_path / 'b.pt', seed=1)
    (outcome,) = perception.set_parameters([Parameter('checkpoint', value=second)])
    assert outcome.successful, outcome.reason
    perception.on_image(rgb_to_image(scene(0), Time(sec=1)))
    assert latents[-1].model_id == read_checkpoint(second)[1]
    (tmp_path / 'broken.pt').write_bytes(b'garbage')
    (outcome,) = perception.set_parameters([Parameter('checkpoint', value=str(tmp_path / 'broken.pt'))])
    assert not outcome.successful and 'keeping the current model' in outcome.reason
    assert perception.get_parameter('checkpoint').value == second
    perception.on_image(rgb_to_image(scene(1), Time(sec=2)))
    assert latents[-1].model_id == read_checkpoint(second)[1]


def test_identical_frames_are_encoded_while_the_arm_is_still_and_refused_once_it_moved(perception):
    latents, reports = [], []
    perception.latent_pub.publish = latents.append
    perception.diag_pub.publish = reports.append
    picture = scene(5)
    for k in range(3):  # 10 Hz frames, joint states at 100 Hz with the frames' stamps among them
        for j in range(10):
            perception.on_joint_state(_joint_state(Time(sec=1, nanosec=(k * 10 + j) * 10_000_000), ARM_STILL))
        perception.on_image(rgb_to_image(picture, Time(sec=1, nanosec=k * 100_000_000)))
    assert len(latents) == 3 and latents[1].data == latents[0].data == latents[2].data
    perception.publish_diagnostics()
    assert reports[-1].status[0].level == DiagnosticStatus.OK
    # The arm moves; the camera keeps sending the same picture: no latent, counted, reported.
    moved = ARM_STILL + 0.05
    perception.on_joint_state(_joint_state(Time(sec=1, nanosec=300_000_000), moved))
    perception.on_image(rgb_to_image(picture, Time(sec=1, nanosec=300_000_000)))
    assert len(latents) == 3 and perception.frame_check.counts['frozen'] == 1
    perception.publish_diagnostics()
    status = reports[-1].status[0]
    assert status.level == DiagnosticStatus.WARN and "'frozen': 1" in status.message
    # A frame whose stamp no joint state is near: whether the arm moved is unknown, so it is refused too.
    perception.on_image(rgb_to_image(picture, Time(sec=5)))
    assert len(latents) == 3 and perception.frame_check.counts['frozen'] == 2


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

    ros_graph.spin_until(lambda: any(s.name == '/perception: encoder' and int(dict(
        (v.key, v.value) for v in s.values)['frames']) >= 7 for d in diagnostics for s in d.status),
        20, 'latency diagnostics')
    status = [s for d in diagnostics for s in d.status if s.name == '/perception: encoder'][-1]
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
    # The same picture again under a new stamp, with no joint state to tell a still arm from a frozen camera:
    # refused (the in-process tests above cover the still scene).
    publish_until(rgb_to_image(frames[1], Time(sec=501), 'camera'), lambda: latent_for(Time(sec=501)), 'a latent')
    publish_until(rgb_to_image(frames[1], Time(sec=502), 'camera'),
                  lambda: 'camera frame refused (frozen' in perception.output(), 'the frozen refusal')
    assert latent_for(Time(sec=502)) is None
    # Pixel noise: no latent.
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    publish_until(rgb_to_image(noise, Time(sec=503), 'camera'),
                  lambda: 'camera frame refused (statistics' in perception.output(), 'the noise refusal')
    assert latent_for(Time(sec=503)) is None

    def refused():
        values = [{v.key: v.value for v in s.values} for d in diagnostics for s in d.status
                  if s.name == '/perception: encoder']
        return {k: int(v) for k, v in values[-1].items() if k.startswith('refused_')} if values else {}
    ros_graph.spin_until(lambda: all(refused().get(f'refused_{kind}', 0) >= 1
                                     for kind in ('size', 'frozen', 'statistics')), 10, 'refusals counted on /diagnostics')
    assert perception.alive()
    code = perception.stop()
    assert code == 0, f'exit {code} on SIGINT:\n{perception.output()[-3000:]}'
