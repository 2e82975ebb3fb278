"""FakeArm, the ROS-free core of fake_arm_node: first-order lag with velocity limits."""
import numpy as np
import pytest

from jepa_sim.fake_arm import FakeArm


def test_first_order_lag():
    arm = FakeArm([0.0], max_velocity=[100.0], time_constant=0.2)
    for _ in range(20):  # 0.2 s in 10 ms steps
        arm.update(np.array([1.0]), 0.01)
    assert arm.position[0] == pytest.approx(1 - np.exp(-1), abs=1e-9)
    assert arm.velocity[0] == pytest.approx((1 - arm.position[0]) / 0.2, rel=0.05)


def test_velocity_limit_and_zero_lag():
    arm = FakeArm([0.0, 0.0], max_velocity=[0.5, 10.0], time_constant=0.0)
    arm.update(np.array([1.0, 1.0]), 0.1)
    assert arm.position == pytest.approx([0.05, 1.0])
    arm.update(np.array([1.0, 1.0]), 0.0)  # no time, no motion
    assert arm.position == pytest.approx([0.05, 1.0])
