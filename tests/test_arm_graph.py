"""The real-arm bring-up, proven without hardware: `jepa launch arm arm:=panda fake_arm:=true` starts the whole
agent graph, the gate and fake_arm_node (mock hardware behind a JointTrajectoryController, with the preset's
quarter-speed limits and workspace box). From outside, as any commander would, the test shows that the gate
clamps out-of-limit and out-of-workspace commands, never forwards a NaN, holds on e-stop (latched until
released), on a commander that goes silent (a killed actor), and on a driver that stops publishing."""
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from jepa_bringup.graph import load_preset
from jepa_common.kinematics import ArmKinematics

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def child_pid(parent: int, marker: str) -> int:
    """The pid of the launcher's child process whose command line contains marker."""
    for child in Path(f'/proc/{parent}/task/{parent}/children').read_text().split():
        if marker in Path(f'/proc/{child}/cmdline').read_bytes().decode(errors='replace'):
            return int(child)
    raise AssertionError(f'no child of {parent} runs {marker}')


class Commander:
    def __init__(self, graph, preset):
        self.graph = graph
        self.arm = list(preset['joints']['arm'])
        self.output: list[tuple[float, JointTrajectory]] = []
        self.state: JointState | None = None
        self.states_received = 0
        # The gate's events as it reports them (last_event of each /diagnostics status), newest last.
        self.gate_events: list[str] = []
        node = graph.node
        node.create_subscription(DiagnosticArray, '/diagnostics', self.on_diagnostics, 10)
        node.create_subscription(JointTrajectory, preset['controller']['topic'],
                                 lambda m: self.output.append((time.monotonic(), m)), RELIABLE)
        node.create_subscription(JointState, '/joint_states', self.on_joint_state, 10)
        self.command_pub = node.create_publisher(JointTrajectory, '/jepa/joint_trajectory', RELIABLE)
        self.estop_pub = node.create_publisher(Bool, '/jepa/estop', RELIABLE)

    def on_joint_state(self, msg: JointState) -> None:
        self.state = msg
        self.states_received += 1

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(': gate'):
                self.gate_events += [kv.value for kv in status.values if kv.key == 'last_event']

    def positions(self) -> np.ndarray:
        index = {n: i for i, n in enumerate(self.state.name)}
        return np.array([self.state.position[index[n]] for n in self.arm])

    def send(self, positions, seconds: float = 0.5) -> None:
        point = JointTrajectoryPoint(positions=[float(p) for p in positions],
                                     time_from_start=Duration(sec=int(seconds), nanosec=int(seconds % 1 * 1e9)))
        self.command_pub.publish(JointTrajectory(joint_names=self.arm, points=[point]))

    def next_output(self, action, timeout: float = 5.0) -> tuple[float, JointTrajectory]:
        before = len(self.output)
        sent = time.monotonic()
        action()
        self.graph.spin_until(lambda: len(self.output) > before, timeout, 'the gate\'s answer')
        arrived, msg = self.output[before]
        return arrived - sent, msg

    def forwarded(self, positions, attempts: int = 5) -> JointTrajectory:
        """The gate's checked version of a command. On a loaded 2-core machine the driver's joint states
        can be late by more than the stale timeout; the gate then rightly holds, and that hold may be the
        next output. Such a hold (and only such) is answered by sending the command again, once the
        driver's joint states flow again (a resend within the same pause would meet the same hold)."""
        for _ in range(attempts):
            events = len(self.gate_events)
            _, msg = self.next_output(lambda: self.send(positions))
            if msg.points:
                return msg
            # The hold's reason reaches /diagnostics at once (a periodic status may come first).
            self.graph.spin_until(lambda: any('stale' in e for e in self.gate_events[events:]), 3,
                                  'stale joint states as the reason the gate held a valid command')
            received = self.states_received
            self.graph.spin_until(lambda: self.states_received > received, 5, 'joint states after a stale hold')
            print(f'held for stale joint states, sending again: {self.gate_events[events:]}')
        raise AssertionError(f'joint states stayed stale through {attempts} commands')


def is_hold(msg: JointTrajectory) -> bool:
    return not msg.points


@pytest.mark.integration
def test_real_arm_launch_with_fake_arm_proves_the_gate(ros_graph):
    preset = load_preset('panda')
    launch = ros_graph.run(['jepa', 'launch', 'arm', 'arm:=panda', 'fake_arm:=true', 'task:=idle'], 'jepa_launch_arm')
    commander = Commander(ros_graph, preset)
    kinematics = ArmKinematics()
    box_min, box_max = np.array(preset['workspace']['min']), np.array(preset['workspace']['max'])
    ros_graph.spin_until(lambda: commander.state is not None and commander.command_pub.get_subscription_count() > 0,
                         60, 'fake_arm joint states and the gate')
    ros_graph.spin_for(1.0)
    home = commander.positions()

    # Out of the joint limits: clamped.
    beyond = home.copy()
    beyond[0] = 5.0
    msg = commander.forwarded(beyond)
    assert msg.points[-1].positions[0] <= kinematics.upper[0] + 1e-9

    # Out of the preset's workspace box (elbow straightened: the hand ends up ~1 m high): the forwarded
    # target's end effector stays inside.
    outside = home.copy()
    outside[3] = -1.0
    assert np.any(kinematics.fk(outside) > box_max)
    msg = commander.forwarded(outside)
    ee = kinematics.fk(np.array(msg.points[-1].positions[:7]))
    assert np.all(ee >= box_min - 0.005) and np.all(ee <= box_max + 0.005), ee

    # NaN: a hold, and no NaN ever reaches the controller.
    _, msg = commander.next_output(lambda: commander.send([float('nan')] * 7))
    assert is_hold(msg)

    # E-stop: hold at once, latched until released.
    latency, msg = commander.next_output(lambda: commander.estop_pub.publish(Bool(data=True)))
    assert is_hold(msg)
    print(f'e-stop -> hold in {latency * 1000:.1f} ms')
    assert latency < 0.5  # the target is 50 ms; the margin is for a loaded 2-core CI machine
    _, msg = commander.next_output(lambda: commander.send(home))
    assert is_hold(msg), 'e-stop is latched'
    commander.estop_pub.publish(Bool(data=False))
    ros_graph.spin_for(0.2)
    assert ros_graph.call(Trigger, '/safety/release_estop', Trigger.Request()).success
    ros_graph.spin_until(lambda: commander.next_output(lambda: commander.send(home))[1].points, 10,
                         'commands to flow after the release')

    # A commander that goes silent (a killed actor): hold after the gate's command timeout.
    for _ in range(10):
        commander.send(home, 0.2)
        ros_graph.spin_for(0.1)
    silent_from = time.monotonic()
    ros_graph.spin_until(lambda: any(t > silent_from and is_hold(m) for t, m in commander.output), 5,
                         'a hold after the commander went silent')

    # A driver that stops publishing joint states (process paused): hold within the stale timeout.
    fake_arm = child_pid(launch.proc.pid, 'fake_arm_node')
    os.kill(fake_arm, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        ros_graph.spin_until(lambda: any(t > stopped and is_hold(m) for t, m in commander.output), 5,
                             'a hold after joint states went stale')
        stale = min(t for t, m in commander.output if t > stopped and is_hold(m)) - stopped
        print(f'stale joint states -> hold in {stale * 1000:.0f} ms')
        assert stale < 1.0  # the target is 250 ms (stale timeout 200 ms); margin for CI load
    finally:
        os.kill(fake_arm, signal.SIGCONT)

    for _, msg in commander.output:
        for point in msg.points:
            assert np.all(np.isfinite(point.positions))
            assert np.all(np.array(point.positions[:7]) <= kinematics.upper + 1e-9)
            assert np.all(np.array(point.positions[:7]) >= kinematics.lower - 1e-9)
    assert launch.alive()
