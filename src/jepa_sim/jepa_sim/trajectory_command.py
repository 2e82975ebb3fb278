"""trajectory_msgs/JointTrajectory -> TrajectoryFollower, shared by sim_node and fake_arm_node.

Both arms take commands like a ros2_control JointTrajectoryController: a zero header stamp starts the
trajectory on arrival; a malformed one is rejected with an error naming the problem and the arm holds.
"""
import numpy as np
from trajectory_msgs.msg import JointTrajectory

from jepa_common.conversions import stamp_to_sec
from jepa_sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint

# Where a ros2_control JointTrajectoryController named arm_controller listens; relative, so under the node's
# namespace.
CONTROLLER_TOPIC = 'arm_controller/joint_trajectory'


def points_from_msg(msg: JointTrajectory) -> list[TrajectoryPoint]:
    return [TrajectoryPoint(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, list(p.positions),
                            list(p.velocities) if len(p.velocities) else None) for p in msg.points]


def apply_trajectory(follower: TrajectoryFollower, msg: JointTrajectory, now: float, current_positions: np.ndarray,
                     logger, max_stamp_skew: float) -> bool:
    """Hand a trajectory message to the follower. Returns False (after logging why and holding the current
    position) when it is malformed."""
    start = stamp_to_sec(msg.header.stamp)
    if start == 0.0:
        start = now
    elif abs(start - now) > max_stamp_skew:
        # A stamp from another clock (wall time against sim time) would otherwise delay the start for ever.
        logger.warning(f'trajectory stamp {start:.3f} s is {start - now:+.3f} s from this arm\'s clock; '
                       f'starting it now (stamp 0 means "now")')
        start = now
    try:
        clamped = follower.set_trajectory(list(msg.joint_names), points_from_msg(msg), start, current_positions)
    except ValueError as error:
        logger.error(f'rejected trajectory on the controller topic: {error}; holding the current position')
        follower.hold(current_positions, now)
        return False
    if clamped:
        logger.warning(f'trajectory targets of {clamped} clamped to the joint limits')
    return True
