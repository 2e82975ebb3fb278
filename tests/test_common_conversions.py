"""jepa_common.conversions: validated message <-> numpy conversions."""
import array

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState

from jepa_common.conversions import image_to_rgb, joint_positions, latent_to_msg, msg_to_latent, rgb_to_image, \
    sec_to_stamp, stamp_to_sec


def test_image_round_trip_and_encodings():
    rgb = np.random.default_rng(0).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(rgb_to_image(rgb)), rgb)
    bgr = rgb_to_image(rgb[:, :, ::-1].copy())
    bgr.encoding = 'bgr8'
    assert np.array_equal(image_to_rgb(bgr), rgb)


@pytest.mark.parametrize('mutate, message', [
    (lambda m: setattr(m, 'encoding', '16UC1'), 'unsupported image encoding'),
    (lambda m: setattr(m, 'data', bytes(10)), 'expected step\\*height'),
    (lambda m: setattr(m, 'step', 2), 'step 2 is smaller'),
    (lambda m: setattr(m, 'height', 0), 'empty image'),
])
def test_malformed_images_are_named(mutate, message):
    msg = rgb_to_image(np.zeros((4, 5, 3), np.uint8))
    mutate(msg)
    with pytest.raises(ValueError, match=message):
        image_to_rgb(msg)


def test_latent_round_trip_and_rejections():
    latent = np.arange(6, dtype=np.float32).reshape(2, 3)
    msg = latent_to_msg(latent, model_id='m@1')
    assert np.array_equal(msg_to_latent(msg, 'm@1'), latent)
    with pytest.raises(ValueError, match='expected'):
        msg_to_latent(msg, 'other@2')
    msg.shape = array.array('I', [4])
    with pytest.raises(ValueError, match='needs 4 values, got 6'):
        msg_to_latent(msg)
    with pytest.raises(ValueError, match='NaN'):
        msg_to_latent(latent_to_msg(np.array([1.0, np.nan])))


def test_joint_positions_by_name():
    msg = JointState(name=['b', 'a'], position=[2.0, 1.0])
    assert joint_positions(msg, ['a', 'b']).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="lacks joints \\['c'\\]"):
        joint_positions(msg, ['a', 'c'])
    with pytest.raises(ValueError, match='2 names but 1 positions'):
        joint_positions(JointState(name=['a', 'b'], position=[1.0]), ['a'])


@pytest.mark.parametrize('seconds', [0.0, 1.5, 12.9999999999, 12.9999999996, 1795693521.0169])
def test_stamps_round_to_the_nearest_nanosecond(seconds):
    stamp = sec_to_stamp(seconds)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert abs(stamp_to_sec(stamp) - seconds) < 1e-6


def test_joint_target_trajectory_is_one_point_reached_in_the_given_time():
    from jepa_common.conversions import joint_target_trajectory
    msg = joint_target_trajectory(['a', 'b'], np.array([0.5, -1.0]), 1.25)
    assert list(msg.joint_names) == ['a', 'b'] and len(msg.points) == 1
    assert list(msg.points[0].positions) == [0.5, -1.0]
    assert (msg.points[0].time_from_start.sec, msg.points[0].time_from_start.nanosec) == (1, 250_000_000)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (0, 0)  # start on arrival
