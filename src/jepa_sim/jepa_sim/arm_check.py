"""arm_check: does an arm (simulated, fake or real) answer the agent's contract?

A plain rclpy client that knows only the public interface (docs/architecture.md): it waits for joint_states,
moves a few joints by small amounts through the safety gate's input jepa/joint_trajectory (or straight to
the controller with --direct), and measures the joint_states, camera and /clock rates and the final
tracking error of each target. Rates are given per second of the arm's own clock (message stamps, i.e. sim
time for the simulator) and per wall-clock second. Exit status 0 when every target was reached. Topic names
are relative: `--ros-args -r __ns:=/arm1` checks the arm of a graph launched with namespace:=arm1 (give it
`-r /clock:=/arm1/clock` too, the clock such a graph uses).

    arm_check [--direct] [--tolerance 0.02] [--move-time 2.0] [--settle-time 1.0] [--timeout 60] [--ros-args ...]
"""
import argparse
import json
import sys
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

GATE_TOPIC = 'jepa/joint_trajectory'
CONTROLLER_TOPIC = 'arm_controller/joint_trajectory'
# Joint-space moves relative to the arm's start position: (joint index, offset rad). Small enough to stay in
# the workspace from the Panda's home pose; the last one returns to the start.
DEFAULT_MOVES = (((0, 0.25),), ((0, -0.25), (1, 0.15)), ())
# Well inside the safety gate's default command_timeout (0.5 s).
RESEND_PERIOD_S = 0.2
MIN_MOVE_TIME_S = 0.1
EXTRA_TIME_FACTOR = 3.0


class _Stream:
    """Arrival stamps (the message's own and wall-clock) of one topic."""

    def __init__(self):
        self.stamps, self.wall = [], []

    def add(self, stamp) -> None:
        self.stamps.append(stamp.sec + stamp.nanosec * 1e-9)
        self.wall.append(time.monotonic())

    def rates(self) -> dict:
        """rate_hz: messages received per second of the arm's clock; wall_rate_hz: per wall-clock second;
        stamp_rate_hz: 1 / the median stamp interval, the publisher's rate even when this client, slower
        than a faster-than-real-time simulator, drops messages."""
        if len(self.stamps) < 2:
            return {'messages': len(self.stamps), 'rate_hz': None, 'wall_rate_hz': None, 'stamp_rate_hz': None}
        span, wall_span = self.stamps[-1] - self.stamps[0], self.wall[-1] - self.wall[0]
        interval = float(np.median(np.diff(self.stamps)))
        return {'messages': len(self.stamps),
                'rate_hz': (len(self.stamps) - 1) / span if span > 0 else None,
                'wall_rate_hz': (len(self.stamps) - 1) / wall_span if wall_span > 0 else None,
                'stamp_rate_hz': 1.0 / interval if interval > 0 else None}


class _ArmProbe:
    def __init__(self, node: Node, executor: SingleThreadedExecutor):
        self.node, self.executor = node, executor
        self.latest: JointState | None = None
        self.streams = {'joint_states': _Stream(), 'camera': _Stream(), 'clock': _Stream()}
        node.create_subscription(JointState, 'joint_states', self._on_joint_state, 50)
        node.create_subscription(Image, 'camera/image_raw', lambda m: self.streams['camera'].add(m.header.stamp), 10)
        node.create_subscription(Clock, '/clock', lambda m: self.streams['clock'].add(m.clock), 50)

    def _on_joint_state(self, msg: JointState) -> None:
        self.latest = msg
        self.streams['joint_states'].add(msg.header.stamp)

    def spin_until(self, predicate, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                return False
            self.executor.spin_once(timeout_sec=0.02)
        return True

    def arm_time(self) -> float:
        return self.streams['joint_states'].stamps[-1]

    def positions(self, names) -> np.ndarray:
        index = {n: i for i, n in enumerate(self.latest.name)}
        return np.array([self.latest.position[index[n]] for n in names])


def check_arm(direct: bool = False, tolerance: float = 0.02, move_time: float = 2.0, settle_time: float = 1.0,
              timeout: float = 60.0, moves=DEFAULT_MOVES, context: Context | None = None,
              ros_args: list[str] | None = None) -> dict:
    """Run the check; returns a dict of measurements with `ok` (bool) and `problems` (list of str).

    Uses `context` if given (an initialised rclpy context), else its own on the environment's ROS_DOMAIN_ID,
    initialised with ros_args (`--ros-args -r __ns:=/arm1 ...`)."""
    own_context = context is None
    if own_context:
        context = Context()
        rclpy.init(context=context, args=['arm_check', *(ros_args or [])])
    node = Node('arm_check', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    topic = CONTROLLER_TOPIC if direct else GATE_TOPIC
    result = {'topic': node.resolve_topic_name(topic), 'targets': [], 'problems': []}
    try:
        _run(node, executor, topic, tolerance, move_time, settle_time, timeout, moves, result)
    finally:
        executor.shutdown()
        node.destroy_node()
        if own_context:
            rclpy.shutdown(context=context)
    result['ok'] = not result['problems']
    return result


def _run(node, executor, topic, tolerance, move_time, settle_time, timeout, moves, result) -> None:
    probe = _ArmProbe(node, executor)
    publisher = node.create_publisher(JointTrajectory, topic, 10)
    deadline = time.monotonic() + timeout
    if not probe.spin_until(lambda: len(probe.streams['joint_states'].stamps) >= 10, timeout):
        result['problems'].append(f'no {node.resolve_topic_name("joint_states")} within {timeout} s')
        return
    if not probe.spin_until(lambda: publisher.get_subscription_count() > 0, max(1.0, deadline - time.monotonic())):
        hint = '' if topic == CONTROLLER_TOPIC else ' (is safety_node running? --direct bypasses it)'
        result['problems'].append(f'nobody subscribes to {publisher.topic_name}{hint}')
        return
    names = [n for n in probe.latest.name]
    start = probe.positions(names)
    result['joint_names'] = names
    for move in moves:
        target = start.copy()
        for joint, offset in move:
            target[joint] += offset
        arrived = _move(probe, publisher, names, target, move_time, settle_time, tolerance, deadline)
        error = np.abs(probe.positions(names) - target)
        worst = int(np.argmax(error))
        result['targets'].append({'target': target.tolist(), 'max_error_rad': float(error[worst]),
                                  'worst_joint': names[worst]})
        if not arrived:
            result['problems'].append(f'timed out after {timeout} s waiting for the arm to reach target '
                                      f'{len(result["targets"])}')
            break
        if error[worst] > tolerance:
            result['problems'].append(f'target {len(result["targets"])}: {names[worst]} is {error[worst]:.4f} rad '
                                      f'off (tolerance {tolerance})')
    for name, stream in probe.streams.items():
        result[name] = stream.rates()
    states = probe.streams['joint_states']
    # How fast the arm's clock ran against the wall clock (the simulator's achieved real-time factor).
    result['arm_time_per_wall_time'] = (states.stamps[-1] - states.stamps[0]) / (states.wall[-1] - states.wall[0])


def _move(probe, publisher, names, target, move_time, settle_time, tolerance, deadline) -> bool:
    """Command target, reached in move_time of arm time, and wait settle_time more; when the arm is not
    within tolerance by then (the gate held it a moment, say), keep commanding for up to EXTRA_TIME_FACTOR
    times as long. Like any commander the check keeps talking: it re-sends the target (with the time left)
    every RESEND_PERIOD_S of wall or arm time, whichever comes first, as the safety gate holds the arm when
    its commander falls silent (on its node clock: sim time in simulation, which may run faster)."""
    sent_at = probe.arm_time()
    settled, give_up = sent_at + move_time + settle_time, sent_at + EXTRA_TIME_FACTOR * (move_time + settle_time)

    def done() -> bool:
        now = probe.arm_time()
        return now >= give_up or (now >= settled and np.max(np.abs(probe.positions(names) - target)) <= tolerance)

    next_send, next_send_arm = time.monotonic(), sent_at
    while not done():
        now = time.monotonic()
        if now > deadline:
            return False
        if now >= next_send or probe.arm_time() >= next_send_arm:
            left = max(move_time - (probe.arm_time() - sent_at), MIN_MOVE_TIME_S)
            sec = int(left)
            msg = JointTrajectory(joint_names=names)
            msg.points = [JointTrajectoryPoint(positions=target.tolist(),
                                               time_from_start=Duration(sec=sec, nanosec=int((left - sec) * 1e9)))]
            publisher.publish(msg)
            next_send, next_send_arm = now + RESEND_PERIOD_S, probe.arm_time() + RESEND_PERIOD_S
        probe.executor.spin_once(timeout_sec=0.01)
    return True


def print_report(result: dict) -> None:
    print(f'commands sent to {result["topic"]}')
    for name in ('joint_states', 'camera', 'clock'):
        r = result.get(name)
        if r is None:
            continue
        rate, wall, stamped = ('n/a' if r[k] is None else f'{r[k]:.1f} Hz'
                               for k in ('rate_hz', 'wall_rate_hz', 'stamp_rate_hz'))
        print(f'{name:>13}: {r["messages"]:6d} messages, {rate} (arm clock), {wall} (wall clock), '
              f'published at {stamped}')
    if 'arm_time_per_wall_time' in result:
        print(f'    arm clock: {result["arm_time_per_wall_time"]:.2f} s per wall-clock second')
    for i, t in enumerate(result['targets'], 1):
        print(f'     target {i}: max tracking error {t["max_error_rad"]:.2e} rad ({t["worst_joint"]})')
    print('OK' if result['ok'] else 'FAILED: ' + '; '.join(result['problems']))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--direct', action='store_true', help=f'command {CONTROLLER_TOPIC} (bypasses the gate)')
    parser.add_argument('--tolerance', type=float, default=0.02, help='max final error per joint, rad')
    parser.add_argument('--move-time', type=float, default=2.0, help='time_from_start of each target, s')
    parser.add_argument('--settle-time', type=float, default=1.0, help='arm-clock seconds to wait after each move')
    parser.add_argument('--timeout', type=float, default=60.0, help='wall-clock limit for the whole check, s')
    parser.add_argument('--json', action='store_true', help='print the measurements as JSON')
    argv = sys.argv[1:] if argv is None else list(argv)
    ros_args = argv[argv.index('--ros-args'):] if '--ros-args' in argv else []
    args = parser.parse_args(argv[:len(argv) - len(ros_args)])
    result = check_arm(args.direct, args.tolerance, args.move_time, args.settle_time, args.timeout,
                       ros_args=ros_args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0 if result['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
