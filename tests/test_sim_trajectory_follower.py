"""TrajectoryFollower: JointTrajectoryController semantics without ROS."""
import numpy as np
import pytest

from jepa_sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint as P

NAMES = ('a', 'b', 'c')


@pytest.fixture
def follower():
    return TrajectoryFollower(NAMES, lower=[-1, -1, 0], upper=[1, 1, 0.04], initial_positions=[0, 0, 0.02])


def test_interpolates_from_current_position_then_holds_last_point(follower):
    follower.set_trajectory(NAMES, [P(1.0, [0.5, -0.5, 0.04]), P(2.0, [1.0, 0.0, 0.0])], 10.0, [0.1, 0.0, 0.02])
    assert follower.sample(9.0)[0] == pytest.approx([0.1, 0.0, 0.02])
    assert follower.sample(10.0)[0] == pytest.approx([0.1, 0.0, 0.02])
    positions, velocities = follower.sample(10.5)
    assert positions == pytest.approx([0.3, -0.25, 0.03])
    assert velocities == pytest.approx([0.4, -0.5, 0.02])
    assert follower.sample(11.5)[0] == pytest.approx([0.75, -0.25, 0.02])
    assert not follower.finished(11.9)
    assert follower.sample(50.0)[0] == pytest.approx([1.0, 0.0, 0.0])
    assert follower.sample(50.0)[1] == pytest.approx([0, 0, 0])
    assert follower.finished(12.0) and follower.end_time == pytest.approx(12.0)


def test_cubic_when_velocities_given(follower):
    follower.set_trajectory(['a'], [P(1.0, [0.5], [0.5]), P(2.0, [1.0], [0.0])], 0.0, [0.0, 0.0, 0.02])
    # Hermite: starts at rest, passes the first point with its velocity, ends at rest.
    assert follower.sample(1e-6)[1][0] == pytest.approx(0.0, abs=1e-4)
    assert follower.sample(1.0)[0][0] == pytest.approx(0.5)
    assert follower.sample(1.0 + 1e-9)[1][0] == pytest.approx(0.5, abs=1e-4)
    mid = follower.sample(0.5)[0][0]
    assert 0.0 < mid < 0.5 and mid != pytest.approx(0.25)  # not linear
    assert follower.sample(2.0)[0][0] == pytest.approx(1.0)


def test_first_point_at_time_zero_is_a_step(follower):
    follower.set_trajectory(NAMES, [P(0.0, [0.2, 0.2, 0.0])], 3.0, [0.0, 0.0, 0.02])
    assert follower.sample(3.0)[0] == pytest.approx([0.2, 0.2, 0.0])
    assert follower.sample(2.9)[0] == pytest.approx([0.0, 0.0, 0.02])


def test_new_trajectory_replaces_current(follower):
    follower.set_trajectory(NAMES, [P(2.0, [1.0, 1.0, 0.04])], 0.0, [0.0, 0.0, 0.02])
    follower.set_trajectory(NAMES, [P(1.0, [-1.0, 0.0, 0.0])], 1.0, [0.5, 0.5, 0.03])
    assert follower.sample(1.0)[0] == pytest.approx([0.5, 0.5, 0.03])
    assert follower.sample(5.0)[0] == pytest.approx([-1.0, 0.0, 0.0])


def test_empty_trajectory_holds_current_position(follower):
    follower.set_trajectory(NAMES, [P(2.0, [1.0, 1.0, 0.04])], 0.0, [0.0, 0.0, 0.02])
    follower.set_trajectory(NAMES, [], 1.0, [0.4, 0.45, 0.03])
    assert follower.sample(1.0)[0] == pytest.approx([0.4, 0.45, 0.03])
    assert follower.sample(9.0)[0] == pytest.approx([0.4, 0.45, 0.03])


def test_partial_joint_set_keeps_other_targets(follower):
    follower.set_trajectory(NAMES, [P(1.0, [0.8, 0.6, 0.04])], 0.0, [0.0, 0.0, 0.02])
    # At t=2 the first trajectory has arrived; the measured positions lag behind.
    follower.set_trajectory(['b'], [P(1.0, [-0.6])], 2.0, [0.7, 0.5, 0.035])
    final = follower.sample(10.0)[0]
    assert final == pytest.approx([0.8, -0.6, 0.04])
    assert follower.sample(2.5)[0][1] == pytest.approx(-0.05)  # b starts from its measured position


def test_targets_clamped_to_limits(follower):
    clamped = follower.set_trajectory(NAMES, [P(1.0, [2.0, -0.5, 0.1])], 0.0, [0.0, 0.0, 0.02])
    assert clamped == ['a', 'c']
    assert follower.sample(5.0)[0] == pytest.approx([1.0, -0.5, 0.04])


@pytest.mark.parametrize('names, points, message', [
    (['a', 'z'], [P(1.0, [0, 0])], r"unknown joints \['z'\]"),
    (NAMES, [P(1.0, [0, np.nan, 0])], 'point 0: positions contain NaN'),
    (NAMES, [P(1.0, [0, 0, 0], [0, np.inf, 0])], 'point 0: velocities contain NaN or inf'),
    (NAMES, [P(1.0, [0, 0])], 'point 0: 2 positions for 3 joint names'),
    (NAMES, [P(1.0, [0, 0, 0], [0])], 'point 0: 1 velocities for 3'),
    (NAMES, [P(1.0, [0, 0, 0]), P(1.0, [0, 0, 0])], 'point 1: time_from_start 1.0 does not increase'),
    (NAMES, [P(-1.0, [0, 0, 0])], 'negative'),
    (['a', 'a'], [P(1.0, [0, 0])], 'twice'),
    ([], [], 'no joint names'),
])
def test_invalid_trajectories_raise_and_keep_current(follower, names, points, message):
    follower.set_trajectory(NAMES, [P(1.0, [0.5, 0.5, 0.03])], 0.0, [0.0, 0.0, 0.02])
    with pytest.raises(ValueError, match=message):
        follower.set_trajectory(names, points, 0.5, [0.25, 0.25, 0.025])
    assert follower.sample(2.0)[0] == pytest.approx([0.5, 0.5, 0.03])


def test_bad_current_positions_raise(follower):
    with pytest.raises(ValueError, match='current positions'):
        follower.set_trajectory(NAMES, [], 0.0, [0.0, 0.0])
    with pytest.raises(ValueError, match='NaN'):
        follower.hold([0.0, np.nan, 0.0], 0.0)
