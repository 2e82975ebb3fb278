"""`safety_node` (node `safety`): the only path from any commander to the arm controller.

jepa/joint_trajectory -> SafetyGate -> output_topic (arm_controller/joint_trajectory: a checked trajectory, or
a hold: joint names, no points). joint_states, jepa/estop (true = hold now, latched) and a steady-clock
watchdog timer feed the gate; the service safety/release_estop unlatches; /diagnostics reports state and
counters periodically and on every event, under the node's fully qualified name. Names are relative, so a
namespaced graph has its own gate; /diagnostics stays global. safety/set_parameters applies the live
parameters (_LIVE) through SafetyGate.reconfigure; the rest are read-only.
"""
import array
import os
import time

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration as RosDuration
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

import jepa_common.parameters as ros_parameters
from jepa_common.kinematics import DEFAULT_WORKSPACE, PANDA_ARM_JOINTS, PANDA_EE_FRAME, PANDA_FINGER_JOINTS, \
    ArmKinematics
from jepa_common.node import run_node
from jepa_common.qos import RELIABLE, SENSOR
from jepa_safety.gate import Decision, JointLimits, SafetyGate, Trajectory, TrajectoryPoint, WorkspaceBox

_LEVELS = {'forwarding': DiagnosticStatus.OK, 'holding': DiagnosticStatus.OK, 'no_state': DiagnosticStatus.WARN,
           'stale': DiagnosticStatus.WARN, 'fault': DiagnosticStatus.ERROR, 'estop': DiagnosticStatus.ERROR}
# Parameters applied while the node runs (SafetyGate.reconfigure: tightening at once, loosening only with the
# e-stop latched) -> the gate setting each feeds; every other parameter is read-only.
_LIVE = {'max_joint_velocity_scale': 'velocity_scale', 'stale_timeout': 'stale_timeout',
         'command_timeout': 'command_timeout', 'workspace_enabled': 'workspace', 'workspace_min': 'workspace',
         'workspace_max': 'workspace'}


def declare(node: Node, name: str, default, description: str, span: tuple | None = None, **options):
    """jepa_common.parameters.declare, live exactly when the parameter is in _LIVE (read-only otherwise)."""
    return ros_parameters.declare(node, name, default, description, span, live=name in _LIVE, **options)


def workspace_box(enabled: bool, lower, upper) -> WorkspaceBox | None:
    return WorkspaceBox(lower, upper) if enabled else None


def build_gate(node: Node) -> SafetyGate:
    """Declare the gate's parameters on node and build the gate: limits from the URDF, overridden per joint
    by limits.<joint>.lower / upper / velocity, velocities scaled by max_joint_velocity_scale."""
    urdf_path = declare(node, 'urdf_path', '', "arm URDF for joint limits and FK; '' = the default Panda")
    ee_frame = declare(node, 'ee_frame', '', "end-effector frame of the workspace check; '' = panda_grasptarget")
    arm_joints = list(declare(node, 'arm_joints', list(PANDA_ARM_JOINTS), 'arm joints, the ones a hold names'))
    gripper_joints = list(declare(node, 'gripper_joints', list(PANDA_FINGER_JOINTS),
                                  'gripper joints, limited like the arm; may be empty', dynamic_typing=True) or [])
    velocity_scale = declare(node, 'max_joint_velocity_scale', 1.0,
                             'commands move joints at up to this fraction of their velocity limits', (0.01, 1.0))
    workspace = workspace_box(
        declare(node, 'workspace_enabled', True, 'keep the end effector in the workspace box'),
        declare(node, 'workspace_min', [lo for lo, _ in DEFAULT_WORKSPACE], 'box corner x, y, z (m, base frame)'),
        declare(node, 'workspace_max', [hi for _, hi in DEFAULT_WORKSPACE], 'box corner x, y, z (m, base frame)'))

    kinematics = ArmKinematics(os.path.expanduser(urdf_path) or None, arm_joints=arm_joints,
                               finger_joints=gripper_joints, ee_frame=ee_frame or PANDA_EE_FRAME)
    names = tuple(arm_joints + gripper_joints)
    table = {'lower': [], 'upper': [], 'velocity': []}
    for name in names:
        for column, urdf_value in zip(('lower', 'upper', 'velocity'), kinematics.limits[name]):
            # Dynamically typed (an int or a double), so no range: JointLimits validates the result.
            override = declare(node, f'limits.{name}.{column}', None,
                               f'override of the URDF {column} limit of {name} (rad, m, rad/s or m/s)',
                               dynamic_typing=True)
            table[column].append(float(urdf_value if override is None else override))
    limits = JointLimits(names, np.array(table['lower']), np.array(table['upper']), np.array(table['velocity']))
    return SafetyGate(
        limits, workspace=workspace, fk=kinematics.fk, fk_joints=arm_joints, velocity_scale=velocity_scale,
        stale_timeout=declare(node, 'stale_timeout', 0.2, 'hold when a joint state is older (s)', (0.01, 10.0)),
        command_timeout=declare(node, 'command_timeout', 0.5,
                                'hold when the commander is silent this long (s, node clock); 0 disables',
                                (0.0, 60.0)),
        max_points=declare(node, 'max_points', 1000, 'most points a command may have', (1, 100_000)),
        max_reach=declare(node, 'max_reach', 1.3, "upper bound (m) on the end effector's lever arm", (0.01, 10.0)),
        max_check_time=declare(node, 'max_check_time', 0.05,
                               'CPU-time budget (s) for checking one command; 0 = unlimited', (0.0, 1.0)) or None,
        state_tolerance=declare(node, 'state_tolerance', 0.01,
                                'how far (rad or m) a measured position may lie outside its limits', (0.0, 0.1)),
        state_jitter=declare(node, 'state_jitter', 0.05,
                             'arrival jitter (s) the measured-state jump check allows', (0.0, 1.0)))


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
    def __init__(self, **node_options):
        super().__init__('safety', **node_options)
        try:
            self.gate = build_gate(self)
        except (OSError, ValueError, ParameterException) as error:
            # Without its limits and kinematics the gate cannot verify anything: refuse to run at all.
            self.get_logger().fatal(f'cannot set up the safety gate: {error}')
            raise
        # A hold names the arm joints only: every arm controller owns them, while grippers often have a
        # controller of their own that would reject the whole message (a hold stops all the arm
        # controller's joints whichever it names).
        self.hold_names = list(self.get_parameter('arm_joints').value)
        output_topic = declare(self, 'output_topic', 'arm_controller/joint_trajectory',
                               'where checked trajectories and holds go: the arm controller')
        check_period = declare(self, 'check_period', 0.02, 'period (s, steady clock) of the watchdog checks',
                               (0.001, 1.0))
        diagnostics_period = declare(self, 'diagnostics_period', 1.0, 'period (s) of the periodic /diagnostics',
                                     (0.01, 60.0))

        self.output = self.create_publisher(JointTrajectory, output_topic, RELIABLE)
        self.diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', RELIABLE)
        self.create_subscription(JointTrajectory, 'jepa/joint_trajectory', self.on_trajectory, RELIABLE)
        # Best effort accepts both reliable and best-effort joint state publishers; only the latest matters.
        self.create_subscription(JointState, 'joint_states', self.on_joint_state, SENSOR)
        self.create_subscription(Bool, 'jepa/estop', self.on_estop, RELIABLE)
        self.release_service = self.create_service(Trigger, 'safety/release_estop', self.on_release)
        # Watchdogs run on the steady clock: a paused or dead /clock must not stop them.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(check_period, self.on_check, clock=steady)
        self.create_timer(diagnostics_period, self.publish_diagnostics, clock=steady)
        self.last_reason = ''
        self.last_rejection, self.last_rejection_logged = '', -float('inf')
        self.add_on_set_parameters_callback(self.on_parameters)
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
            # An implausible reading holds now, not at the next watchdog tick.
            self.on_check()

    def on_parameters(self, parameters) -> SetParametersResult:
        """Live parameters -> SafetyGate.reconfigure, which refuses (with the reason) anything invalid and any
        loosening while the e-stop is not latched. Read-only ones never get here: rclpy refuses them."""
        values = {p.name: p.value for p in parameters if p.name in _LIVE}
        changes = {_LIVE[name]: value for name, value in values.items() if _LIVE[name] != 'workspace'}
        try:
            if 'workspace' in (_LIVE[name] for name in values):
                changes['workspace'] = workspace_box(*(
                    values.get(name, self.get_parameter(name).value)
                    for name in ('workspace_enabled', 'workspace_min', 'workspace_max')))
            decision = self.gate.reconfigure(**changes)
        except ValueError as error:
            self.get_logger().warn(f'refused parameters {values}: {error}')
            return ros_parameters.result(str(error))
        if values:
            self.get_logger().info(f'parameters applied: {values}')
            self.last_reason = f'parameters applied: {values}'
            self.publish_diagnostics()
        if decision is not None:
            self.apply(decision, event=True)
        return ros_parameters.result()

    def on_estop(self, msg: Bool) -> None:
        decision = self.gate.on_estop(msg.data)
        if decision is not None:
            self.apply(decision, event=True)
            self.get_logger().warn(f'e-stop: holding until {self.release_service.srv_name}',
                                   throttle_duration_sec=1.0)

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
        status = DiagnosticStatus(level=_LEVELS[state], name=f'{self.get_fully_qualified_name()}: gate',
                                  hardware_id='arm',
                                  message=f'{state}: {self.last_reason}' if self.last_reason else state,
                                  values=values)
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics.publish(msg)

    def close(self) -> None:
        # The gate's last word: nothing it forwarded keeps the arm moving after it is gone.
        self.output.publish(JointTrajectory(joint_names=self.hold_names))
        # Destroying the writer at once can drop the sample before a reliable reader has it.
        if self.output.wait_for_all_acked(RosDuration(seconds=1.0)):
            self.get_logger().info('stopping: published a hold, acknowledged by every subscriber')
        else:
            self.get_logger().warning('stopping: published a hold; not every subscriber acknowledged it within 1 s')


def main(args=None) -> int:
    return run_node(SafetyNode, args)


if __name__ == '__main__':
    main()
