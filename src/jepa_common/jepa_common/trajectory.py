"""A joint trajectory point as plain data (ROS-free): what the gate checks and the simulated controllers follow."""
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class TrajectoryPoint:
    """One point as a commander sent it: nothing is trusted yet (any lengths, any values). Empty velocities:
    the follower interpolates positions linearly; given for every point, it follows a cubic."""
    time_from_start: float
    positions: Sequence[float]
    velocities: Sequence[float] = ()
    accelerations: Sequence[float] = ()
