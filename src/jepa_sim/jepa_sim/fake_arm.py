"""Mock arm hardware without physics (ROS-free core of fake_arm_node)."""
import math

import numpy as np


class FakeArm:
    """Joints that follow their target with a first-order lag (time constant, s), rate-limited per joint."""

    def __init__(self, initial: np.ndarray, max_velocity: np.ndarray, time_constant: float):
        self.position = np.array(initial, dtype=float)
        self.velocity = np.zeros_like(self.position)
        self.max_velocity = np.asarray(max_velocity, dtype=float)
        self.time_constant = float(time_constant)

    def update(self, target: np.ndarray, dt: float) -> None:
        if dt <= 0:
            return
        gain = 1.0 if self.time_constant <= 0 else 1.0 - math.exp(-dt / self.time_constant)
        step = np.clip((target - self.position) * gain, -self.max_velocity * dt, self.max_velocity * dt)
        self.position += step
        self.velocity = step / dt
