"""`safety_node` (node `safety`): the only path from any commander to the arm controller.

/jepa/joint_trajectory -> SafetyGate -> output_topic (checked trajectory, or a hold: joint names, no points)
/joint_states, /jepa/estop (true = hold now, latched) and a steady-clock watchdog timer feed the gate;
/safety/release_estop unlatches; /diagnostics reports state and counters periodically and on every event.
"""
import array
import os
import time

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from jepa_common.kinematics import DEFAULT_WORKSPACE, PANDA_ARM_JOINTS, PANDA_EE_FRAME, PANDA_FINGER_JOINTS, \
    ArmKinematics
from jepa_common.node import run_node
from jepa_safety.gate import Decision, JointLimits, SafetyGate, Trajectory, TrajectoryPoint, WorkspaceBox

_LEVELS = {'forwarding': DiagnosticStatus.OK, 'holding': DiagnosticStatus.OK, 'no_state': DiagnosticStatus.WARN,
           'stale': DiagnosticStatus.WARN, 'estop': DiagnosticStatus.ERROR}


def build_gate(node: Node) -> SafetyGate:
    """Declare the gate's parameters on node and build the gate: limits from the URDF, overridden per joint
    by limits.<joint>.lower / upper / velocity, velocities scaled by max_joint_velocity_scale."""
    urdf_path = node.declare_parameter('urdf_path', '').value
    ee_frame = node.declare_parameter('ee_frame', '').value
    arm_joints = list(node.declare_parameter('arm_joints', list(PANDA_ARM_JOINTS)).value)
    gripper_joints = list(node.declare_parameter(
        'gripper_joints', list(PANDA_FINGER_JOINTS),
        ParameterDescriptor(dynamic_typing=True, description='may be empty for an arm without gripper')).value or [])
    velocity_scale = float(node.declare_parameter('max_joint_velocity_scale', 1.0).value)
    workspace_enabled = node.declare_parameter('workspace_enabled', True).value
    workspace_min = node.declare_parameter('workspace_min', [lo for lo, _ in DEFAULT_WORKSPACE]).value
    workspace_max = node.declare_parameter('workspace_max', [hi for _, hi in DEFAULT_WORKSPACE]).value

    kinematics = ArmKinematics(os.path.expanduser(urdf_path) or None, arm_joints=arm_joints,
                               finger_joints=gripper_joints, ee_frame=ee_frame or PANDA_EE_FRAME)
    names = tuple(arm_joints + gripper_joints)
    table = {'lower': [], 'upper': [], 'velocity': []}
    for name in names:
        for column, urdf_value in zip(('lower', 'upper', 'velocity'), kinematics.limits[name]):
            override = node.declare_parameter(f'limits.{name}.{column}', None,
                                              ParameterDescriptor(dynamic_typing=True)).value
            table[column].append(float(urdf_value if override is None else override))
    if not 0 < velocity_scale <= 1:
        raise ValueError(f'max_joint_velocity_scale must be in (0, 1], got {velocity_scale}')
    limits = JointLimits(names, np.array(table['lower']), np.array(table['upper']),
                         np.array(table['velocity']) * velocity_scale)
    return SafetyGate(
        limits,
        workspace=WorkspaceBox(workspace_min, workspace_max) if workspace_enabled else None,
        fk=kinematics.fk, fk_joints=arm_joints,
        stale_timeout=node.declare_parameter('stale_timeout', 0.2).value,
        command_timeout=node.declare_parameter('command_timeout', 0.5).value,
        max_points=node.declare_parameter('max_points', 1000).value,
        max_reach=node.declare_parameter('max_reach', 1.3).value,
        max_check_time=node.declare_parameter('max_check_time', 0.05).value or None)


def trajectory_from_msg(msg: JointTrajectory) -> Trajectory:
    """Unvalidated copy of the message's content; the gate does all the checking."""
    return Trajectory(list(msg.joint_names), [
        TrajectoryPoint(p.time_from_start.sec + p.time_from_start.nanosec * 1e-9, p.positions, p.velocities,
                        p.accelerations) for p in msg.points])


def trajectory_to_msg(trajectory: Trajectory) -> JointTrajectory:
    """Checked trajectory -> message with a zero stamp: the controller starts it on arrival, the time base
    the gate checked the velocities against."""
    msg = JointTrajectory(joint_names=list(trajectory.joint_names))
    for point in trajectory.points:
        sec = int(point.time_from_start)
        msg.points.append(JointTrajectoryPoint(
            positions=array.array('d', point.positions),
            time_from_start=Duration(sec=sec, nanosec=min(int(round((point.time_from_start - sec) * 1e9)),
                                                          999_999_999))))
    return msg


class SafetyNode(Node):
    def __init__(self):
        super().__init__('safety')
        try:
            self.gate = build_gate(self)
        except (OSError, ValueError) as error:
            # Without its limits and kinematics the gate cannot verify anything: refuse to run at all.
            self.get_logger().fatal(f'cannot set up the safety gate: {error}')
            raise
        # A hold names the arm joints only: every arm controller owns them, while grippers often have a
        # controller of their own that would reject the whole message (a hold stops all the arm
        # controller's joints whichever it names).
        self.hold_names = list(self.get_parameter('arm_joints').value)
        output_topic = self.declare_parameter('output_topic', '/arm_controller/joint_trajectory').value
        check_period = self.declare_parameter('check_period', 0.02).value
        diagnostics_period = self.declare_parameter('diagnostics_period', 1.0).value

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.output = self.create_publisher(JointTrajectory, output_topic, reliable)
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(JointTrajectory, '/jepa/joint_trajectory', self.on_trajectory, reliable)
        # Best effort accepts both reliable and best-effort joint state publishers; only the latest matters.
        self.create_subscription(JointState, '/joint_states', self.on_joint_state, qos_profile_sensor_data)
        self.create_subscription(Bool, '/jepa/estop', self.on_estop, reliable)
        self.create_service(Trigger, '/safety/release_estop', self.on_release)
        # Watchdogs run on the steady clock: a paused or dead /clock must not stop them.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(check_period, self.on_check, clock=steady)
        self.create_timer(diagnostics_period, self.publish_diagnostics, clock=steady)
        self.last_reason = ''
        self.last_rejection, self.last_rejection_logged = '', -float('inf')
        box = self.gate.workspace
        self.get_logger().info(f'gating {list(self.gate.joint_names)} -> {self.output.topic_name}; workspace '
                               f'{"off" if box is None else [box.lower.tolist(), box.upper.tolist()]}')

    def on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            decision = self.gate.on_trajectory(trajectory_from_msg(msg), time.monotonic(), self.command_clock())
        except Exception as error:  # noqa: BLE001 - any input the gate cannot digest must end in a hold
            # Dying here would also leave the e-stop unserved; hold, say why, and keep serving.
            self.get_logger().error(f'internal error checking a command, holding: {error!r}')
            decision = Decision(None, [f'internal error: {error!r}'], rejected=True)
        if decision.rejected:
            self.log_rejection(decision.reasons[0])
        elif decision.reasons and not decision.hold:
            self.get_logger().warn('; '.join(decision.reasons), throttle_duration_sec=1.0)
        self.apply(decision, event=bool(decision.reasons))

    def log_rejection(self, reason: str) -> None:
        """Every new reason at once; a repeated one (a 10 Hz commander against a latched e-stop) once a second."""
        now = time.monotonic()
        if reason != self.last_rejection or now - self.last_rejection_logged >= 1.0:
            self.get_logger().error(reason)
            self.last_rejection, self.last_rejection_logged = reason, now

    def on_joint_state(self, msg: JointState) -> None:
        error = self.gate.on_joint_state(msg.name, msg.position, time.monotonic())
        if error:
            self.get_logger().error(f'ignored joint state: {error}', throttle_duration_sec=1.0)

    def on_estop(self, msg: Bool) -> None:
        decision = self.gate.on_estop(msg.data)
        if decision is not None:
            self.apply(decision, event=True)
            self.get_logger().warn('e-stop: holding until /safety/release_estop', throttle_duration_sec=1.0)

    def on_release(self, request, response):
        response.success, response.message = self.gate.release_estop()
        self.get_logger().info(f'release e-stop: {response.message}')
        self.last_reason = response.message
        self.publish_diagnostics()
        return response

    def on_check(self) -> None:
        decision = self.gate.tick(time.monotonic(), self.command_clock())
        if decision is not None:
            self.get_logger().warn(f'holding: {decision.reasons[0]}')
            self.apply(decision, event=True)

    def command_clock(self) -> float:
        """Commanders' time (sim time under use_sim_time) for the silent-commander watchdog."""
        return self.get_clock().now().nanoseconds * 1e-9

    def apply(self, decision: Decision, event: bool) -> None:
        if decision.hold:
            self.output.publish(JointTrajectory(joint_names=self.hold_names))
        else:
            self.output.publish(trajectory_to_msg(decision.trajectory))
        if event:
            self.last_reason = '; '.join(decision.reasons)
            self.publish_diagnostics()

    def publish_diagnostics(self) -> None:
        state = self.gate.state(time.monotonic())
        values = [KeyValue(key='state', value=state)]
        values += [KeyValue(key=name, value=str(count)) for name, count in self.gate.counters.items()]
        values += [KeyValue(key='last_error', value=self.gate.last_error),
                   KeyValue(key='last_event', value=self.last_reason),
                   KeyValue(key='missing_joints', value=','.join(self.gate.missing_joints()))]
        status = DiagnosticStatus(level=_LEVELS[state], name=f'{self.get_name()}: gate', hardware_id='arm',
                                  message=f'{state}: {self.last_reason}' if self.last_reason else state,
                                  values=values)
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics.publish(msg)


    def close(self) -> None:
        # The gate's last word: nothing it forwarded keeps the arm moving after it is gone.
        self.output.publish(JointTrajectory(joint_names=self.hold_names))
        self.get_logger().info('stopping: published a hold')


def main(args=None) -> int:
    return run_node(SafetyNode, args)


if __name__ == '__main__':
    main()
