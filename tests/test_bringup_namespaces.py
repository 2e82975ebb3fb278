"""Two simulated arms side by side in one ROS domain: `jepa launch sim_arm namespace:=arm1` and `namespace:=arm2`
(sim_node and safety_node each, real processes over real DDS). Each graph's topics, services and nodes live under
its namespace, each has its own sim clock, and a command through one arm's gate moves that arm only."""
import sys
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from jepa_common.conversions import joint_positions
from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_HOME
from jepa_common.qos import RELIABLE

JEPA = [sys.executable, '-m', 'jepa_bringup.cli']
ARMS = ('/arm1', '/arm2')


@pytest.mark.integration
def test_two_namespaced_sim_arms_run_side_by_side_and_each_gate_moves_its_own_arm(ros_graph):
    node = ros_graph.node
    states = {ns: ros_graph.collect(JointState, f'{ns}/joint_states', 10) for ns in ARMS}
    images = {ns: ros_graph.collect(Image, f'{ns}/camera/image_raw', 10) for ns in ARMS}
    diagnostics = ros_graph.collect(DiagnosticArray, '/diagnostics')
    gate = node.create_publisher(JointTrajectory, '/arm1/jepa/joint_trajectory', RELIABLE)
    for ns in ARMS:
        ros_graph.run(JEPA + ['launch', 'sim_arm', f'namespace:={ns.lstrip("/")}'], f'launch_{ns.lstrip("/")}')

    def gate_state(ns: str) -> str | None:
        for msg in reversed(diagnostics):
            for status in msg.status:
                if status.name == f'{ns}/safety: gate':
                    return next(kv.value for kv in status.values if kv.key == 'state')
        return None

    ros_graph.spin_until(lambda: all(states[ns] and images[ns] for ns in ARMS) and gate.get_subscription_count() > 0
                         and all(gate_state(ns) in ('holding', 'forwarding') for ns in ARMS), 45,
                         'joint states, images and a ready gate in both namespaces')
    # Everything of each graph is under its namespace, its sim clock included; nothing of theirs at the root.
    topics = {name for name, _ in node.get_topic_names_and_types()}
    for ns in ARMS:
        assert {f'{ns}/joint_states', f'{ns}/camera/image_raw', f'{ns}/jepa/joint_trajectory',
                f'{ns}/arm_controller/joint_trajectory', f'{ns}/clock'} <= topics, sorted(topics)
        assert {f'{ns}/sim/reset', f'{ns}/safety/release_estop'} <= {n for n, _ in node.get_service_names_and_types()}
    assert '/joint_states' not in topics and '/clock' not in topics
    # Node names travel in their own discovery messages (ros_discovery_info), which may come after the topics'.
    nodes = {('sim', ns) for ns in ARMS} | {('safety', ns) for ns in ARMS}
    ros_graph.spin_until(lambda: nodes <= set(node.get_node_names_and_namespaces()), 15,
                         'the sim and safety nodes of both namespaces among the graph\'s nodes')

    home = {ns: joint_positions(states[ns][-1], PANDA_ARM_JOINTS) for ns in ARMS}
    for ns in ARMS:
        assert home[ns] == pytest.approx(PANDA_HOME, abs=1e-3)
    target = np.array(PANDA_HOME) + [0.3, 0, 0, 0, 0, 0, 0]
    # Like any commander, keep talking (the gate holds a silent one), for 3 s of wall time.
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        point = JointTrajectoryPoint(positions=target.tolist(), time_from_start=Duration(sec=1))
        gate.publish(JointTrajectory(joint_names=list(PANDA_ARM_JOINTS), points=[point]))
        ros_graph.spin_for(0.2)
    moved = {ns: joint_positions(states[ns][-1], PANDA_ARM_JOINTS) for ns in ARMS}
    assert moved['/arm1'] == pytest.approx(target, abs=0.02), 'arm1 follows its own gate'
    assert moved['/arm2'] == pytest.approx(home['/arm2'], abs=1e-3), 'arm2 did not move'
