"""The perception's frame check (ROS-free): which camera frames the agent may encode, remember and learn from."""
import cv2
import numpy as np
import pytest

from jepa_perception.frame_check import FrameCheck, FrameCheckConfig, JointHistory
from jepa_world_model.image_statistics import STATISTICS, ImageReference, image_statistics
from jepa_world_model.model import resize_rgb

SIZE = 32
ARM_STILL = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04, 0.04])  # 7 arm + 2 finger joints


def scene(seed: int, size: int = 96) -> np.ndarray:
    """A camera's view stand-in: a smooth colour field with a few objects (large areas, sharp edges)."""
    rng = np.random.default_rng(seed)
    rgb = cv2.resize(rng.integers(60, 200, (4, 4, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
    for _ in range(3):
        x, y = rng.integers(0, size - size // 4, 2)
        rgb[y:y + size // 5, x:x + size // 5] = rng.integers(0, 255, 3)
    return rgb


def corrupt(kind: str, previous: np.ndarray, rng) -> np.ndarray:
    if kind == 'noise':
        return rng.integers(0, 256, previous.shape, dtype=np.uint8)
    if kind == 'black':
        return np.zeros_like(previous)
    if kind == 'frozen':
        return previous.copy()
    raise ValueError(kind)


def judge(check: FrameCheck, rgb: np.ndarray, joints=None, settled: bool = True):
    """As the node does: the size first, then the frame at the encoder's input size."""
    verdict = check.check_size(rgb)
    return verdict if not verdict else check.check(rgb, resize_rgb(rgb, SIZE), joints, settled)


def warmed_up(frames: int = 10) -> FrameCheck:
    check = FrameCheck(FrameCheckConfig(reference_frames=frames))
    for i in range(frames):
        assert judge(check, scene(i)), f'scene {i} refused'
    assert check.reference is not None and 'first 10 plausible frames' in check.reference.source
    return check


def test_statistics_tell_a_scene_from_noise_and_blank_frames_at_any_resolution():
    views = np.stack([image_statistics(resize_rgb(scene(i), SIZE)) for i in range(20)])
    rng = np.random.default_rng(0)
    for shape in ((96, 96, 3), (480, 640, 3)):
        noise = image_statistics(resize_rgb(rng.integers(0, 256, shape, dtype=np.uint8), SIZE))
        # Pixel noise: neighbour differences ~1.1 x its spread, whatever the resize averaged away.
        assert 2 ** noise[2] == pytest.approx(1.13, abs=0.1)
        assert np.all(2 ** views[:, 2] < 0.5)
    black = image_statistics(np.zeros((SIZE, SIZE, 3), np.uint8))
    assert black[0] == 0 and black[1] == 0  # log2 of the floored contrast: no contrast at all


def test_refused_frames_are_named_and_counted_and_a_burst_never_moves_the_reference():
    check = warmed_up()
    reference = (check.reference.median.copy(), check.reference.scale.copy())
    rng = np.random.default_rng(1)
    last = scene(10)
    joints = ARM_STILL.copy()
    assert judge(check, last, joints)
    for seed, (kind, expected) in enumerate((('noise', 'statistics'), ('black', 'statistics'), ('frozen', 'frozen'))):
        for _ in range(50):
            joints = joints + 0.01  # the arm moves on while the camera is broken
            verdict = judge(check, corrupt(kind, last, rng), joints)
            assert not verdict and verdict.kind == expected, (kind, verdict)
        last = scene(11 + seed)
        assert judge(check, last, joints), f'the scene after the {kind} burst'
    assert check.counts == {'size': 0, 'frozen': 50, 'statistics': 100}
    np.testing.assert_array_equal(check.reference.median, reference[0])
    np.testing.assert_array_equal(check.reference.scale, reference[1])
    # Far from the reference, not by absolute limits: a dim view of the scene (the lens half covered).
    dim = (scene(20) * 0.45).astype(np.uint8)
    verdict = judge(check, dim)
    assert verdict.kind == 'statistics' and 'brightness outside' in verdict.reason and 'first 10' in verdict.reason


def test_identical_frames_are_a_still_scene_while_the_arm_is_still_and_a_frozen_camera_once_it_moved():
    check = warmed_up()
    picture = scene(10)
    assert judge(check, picture, ARM_STILL)
    # The arm resting (at its goal, held by the gate): the same picture again and again is a normal observation,
    # the joint states' noise included.
    for noise in np.random.default_rng(0).normal(0.0, 1e-4, (20, ARM_STILL.size)):
        assert judge(check, picture.copy(), ARM_STILL + noise)
    assert check.counts['frozen'] == 0
    # The arm moves on while the picture stays: a frozen camera, refused and counted; and still refused once the
    # arm has stopped elsewhere (the picture shows where the arm was, not where it is).
    moved = ARM_STILL + np.r_[0.0, 0.0, 0.0, 0.02, 0.0, 0.0, 0.0, 0.0, 0.0]
    verdict = judge(check, picture.copy(), moved)
    assert verdict.kind == 'frozen' and 'the arm moved' in verdict.reason
    for _ in range(5):
        assert judge(check, picture.copy(), moved).kind == 'frozen'
    assert check.counts['frozen'] == 6
    # The camera comes back: a new picture, then that picture again while the arm holds still.
    assert judge(check, scene(11), moved) and judge(check, scene(11), moved)
    # The fingers count too (the gripper opening shows in the picture).
    assert judge(check, scene(11), moved + np.r_[np.zeros(7), -0.01, -0.01]).kind == 'frozen'


def test_without_joint_states_an_identical_frame_cannot_be_told_from_a_frozen_camera():
    check = warmed_up()
    assert judge(check, scene(12))
    verdict = judge(check, scene(12))
    assert verdict.kind == 'frozen' and 'no joint state' in verdict.reason
    # Joints that arrive while the picture stands still: judged from then on (this frame still refused).
    assert judge(check, scene(12), ARM_STILL).kind == 'frozen'
    assert judge(check, scene(12), ARM_STILL)
    assert check.counts['frozen'] == 2


def test_a_picture_seen_before_its_own_joint_state_takes_its_joints_from_its_first_repeat():
    """A reset teleports the arm between two joint states. Its first frame can be processed before the joint state
    of its own instant has arrived; the nearest one is then the pose before the reset. Judged against that pose,
    every frame of the arm holding still after it is refused as frozen, so the agent gets no latent, no plan, and
    the arm holds still: refused for the whole episode. Unsettled joints leave the picture's joints unknown until
    its first repeat (that one frame is refused)."""
    before, after = ARM_STILL, ARM_STILL + np.r_[0.5, np.zeros(8)]
    history = JointHistory()
    history.add(1.0, before)
    assert not history.settled(1.1) and history.settled(1.0)
    check, paired_with_the_pose_before = warmed_up(), warmed_up()
    for c in (check, paired_with_the_pose_before):
        assert judge(c, scene(20), before)
    # The reset's first frame, stamp 1.1, judged before the joint state stamped 1.1.
    assert judge(check, scene(21), history.at(1.1, 0.1), history.settled(1.1))
    assert judge(paired_with_the_pose_before, scene(21), before)  # as if `before` were its own joints
    history.add(1.1, after)
    history.add(1.2, after)
    verdict = judge(check, scene(21), history.at(1.2, 0.1), history.settled(1.2))
    assert verdict.kind == 'frozen' and 'since the picture was first seen' in verdict.reason
    for _ in range(10):
        assert judge(check, scene(21), after)
        assert judge(paired_with_the_pose_before, scene(21), after).kind == 'frozen'
    assert check.counts['frozen'] == 1 and paired_with_the_pose_before.counts['frozen'] == 10
    # Judged from its first repeat on: the arm moving on under that picture is still a frozen camera.
    assert judge(check, scene(21), after + np.r_[0.02, np.zeros(8)]).kind == 'frozen'


def test_a_still_scene_does_not_narrow_the_reference_derived_from_the_camera():
    check = FrameCheck(FrameCheckConfig(reference_frames=5))
    for _ in range(20):
        assert judge(check, scene(0), ARM_STILL)
    assert check.reference is None  # one distinct picture so far
    for i in range(1, 5):
        assert judge(check, scene(i), ARM_STILL)
    assert check.reference is not None


def test_the_joint_states_stamped_nearest_a_frame_are_its_joints():
    history = JointHistory(span=2.0)
    for k in range(100):  # 100 Hz from t = 10 s
        history.add(10.0 + k * 0.01, [k])
    assert history.at(10.5, 0.1)[0] == 50 and history.at(10.504, 0.1)[0] == 50 and history.at(10.506, 0.1)[0] == 51
    assert history.at(11.05, 0.1)[0] == 99 and history.at(11.2, 0.1) is None and history.at(9.0, 0.1) is None
    assert history.latest()[0] == 99
    history.add(13.5, [7])  # everything more than 2 s older is dropped
    assert history.at(10.99, 0.1) is None
    history.add(1.0, [3])  # time went backwards (a replay restarted): the history starts over
    assert history.at(13.5, 0.1) is None and history.at(1.0, 0.1)[0] == 3


@pytest.mark.parametrize('changes, field', [
    ({'tolerance': 0.0}, 'tolerance'), ({'min_band': [1.0, 1.0]}, 'min_band'), ({'min_band': [1.0, -1.0, 1.0]}, 'min_band'),
    ({'reference_frames': 0}, 'reference_frames'), ({'still_tolerance': -0.1}, 'still_tolerance'),
    ({'max_roughness': float('nan')}, 'max_roughness')])
def test_a_frame_check_config_refuses_values_it_cannot_use_by_name(changes, field):
    with pytest.raises(ValueError, match=field):
        FrameCheckConfig(**changes)


def test_a_frame_whose_size_disagrees_with_the_camera_info_is_refused_by_name():
    check = warmed_up()
    check.expected_size = (96, 96)
    verdict = judge(check, scene(30, size=128))
    assert verdict.kind == 'size' and verdict.reason == 'image is 128x128, the camera info says 96x96'
    assert judge(check, scene(31))
    check.expected_size = None  # a camera that does not say its size: any size is encoded (resized)
    assert judge(check, scene(32, size=128))


def test_the_checkpoints_record_of_its_training_images_is_the_reference():
    training = ImageReference.of([image_statistics(resize_rgb(scene(i), SIZE)) for i in range(30)], 'training')
    check = FrameCheck(FrameCheckConfig(reference_frames=1000))
    assert check.use_checkpoint({'image_statistics': training.to_dict()}, 'model.pt') == ''
    assert check.reference.source == 'model.pt'
    np.testing.assert_allclose(check.reference.median, training.median)
    assert not judge(check, (scene(40) * 0.3).astype(np.uint8))  # judged from the first frame on
    # A model without a record: a reference derived from the camera replaces the checkpoint's.
    assert check.use_checkpoint({}, 'other.pt') == '' and check.reference is None
    problem = check.use_checkpoint({'image_statistics': {'median': [1.0]}}, 'bad.pt')
    assert 'bad.pt' in problem and check.reference is None
    assert len(STATISTICS) == len(training.to_dict()['median'])


def test_a_refused_frame_gives_no_latent_and_a_still_scene_its_own(tmp_path, one_torch_thread):
    from jepa_perception.encoder import ImageEncoder
    from test_world_model_node_core import make_checkpoint
    encoder = ImageEncoder(make_checkpoint(tmp_path / 'a.pt'), 'cpu')
    check = FrameCheck(FrameCheckConfig(reference_frames=3))
    first, verdict = check.latent(encoder, scene(0), ARM_STILL)
    assert verdict and first is not None
    again, verdict = check.latent(encoder, scene(0), ARM_STILL)
    assert verdict and again is not first
    np.testing.assert_array_equal(again, first)  # a still scene: the same observation again
    latent, verdict = check.latent(encoder, scene(0), ARM_STILL + 0.1)
    assert latent is None and verdict.kind == 'frozen'
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    for _ in range(2):  # noise, then the same noise frozen: no latent either time
        latent, verdict = check.latent(encoder, noise, ARM_STILL)
        assert latent is None and verdict.kind == 'statistics'
    latent, verdict = check.latent(encoder, scene(1), ARM_STILL)
    assert verdict and latent is not None and not np.array_equal(latent, first)
