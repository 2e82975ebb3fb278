"""`jepa launch` as processes over real DDS: nodes start with their names, params files, overrides, remaps and
niceness; Ctrl-C stops them all; a crashed respawnable node is restarted and reported; a required node's exit stops
the graph. The nodes are a small real rclpy node installed like a colcon package into a temporary prefix."""
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
from std_msgs.msg import String

from jepa_bringup.launcher import ros_arguments
from jepa_bringup.graph import NodeSpec

# The `jepa` command, through its module so the test does not depend on the venv's bin/ links.
JEPA = [sys.executable, '-m', 'jepa_bringup.cli']

PROBE_NODE = '''#!{python}
"""Publishes who it is and what it was configured with on `chatter`; exits with code 3 after crash_after s
or on a message on the crash_on topic.
SIGINT/SIGTERM only set a flag (no KeyboardInterrupt raised inside rclpy calls), so a stop is always clean."""
import faulthandler, json, os, signal, sys
import rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String


class Probe(Node):
    def __init__(self):
        super().__init__('probe')
        self.greeting = self.declare_parameter('greeting', 'unset').value
        self.number = self.declare_parameter('number', 0).value
        crash_after = self.declare_parameter('crash_after', 0.0).value
        self.pub = self.create_publisher(String, 'chatter', 10)
        self.create_timer(0.2, self.tick)
        if crash_after > 0:
            self.create_timer(crash_after, self.crash)
        crash_on = self.declare_parameter('crash_on', '').value
        if crash_on:
            self.create_subscription(String, crash_on, lambda _: self.crash(), 10)
        self.get_logger().info('probe ready')

    def tick(self):
        self.pub.publish(String(data=json.dumps({{
            'name': self.get_fully_qualified_name(), 'pid': os.getpid(),
            'greeting': self.greeting, 'number': self.number}})))

    def crash(self):
        print('probe: crashing on purpose', flush=True)
        os._exit(3)


stop = []
signal.signal(signal.SIGINT, lambda *_: stop.append(True))
signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
rclpy.init(args=sys.argv, signal_handler_options=SignalHandlerOptions.NO)
probe = Probe()
if probe.declare_parameter('ignore_sigint', False).value:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
if probe.declare_parameter('ignore_sigterm', False).value:  # stuck: as run_node, it prints its stacks on SIGUSR1
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
while not stop:
    rclpy.spin_once(probe, timeout_sec=0.1)
probe.destroy_node()
rclpy.shutdown()
'''

GRAPH = '''
arguments:
  greeting: {default: hello, description: what talker_a says}
  with_b: {default: 'true', description: start talker_b}
graphs:
  small:
    arguments: [greeting, with_b]
    nodes:
      - name: talker_a
        package: jepa_launch_testpkg
        executable: probe_node
        params: [probe.yaml]
        parameters: {greeting: $(var greeting)}
        remap: {chatter: chatter_a}
      - name: talker_b
        package: jepa_launch_testpkg
        executable: probe_node
        params: [probe.yaml]
        remap: {chatter: chatter_b}
        if: with_b
        nice: 7
  stubborn:
    arguments: []
    nodes:
      - name: deaf
        package: jepa_launch_testpkg
        executable: probe_node
        parameters: {ignore_sigint: true}
        remap: {chatter: chatter_deaf}
  stuck:
    arguments: []
    nodes:
      - name: stuck
        package: jepa_launch_testpkg
        executable: probe_node
        parameters: {ignore_sigint: true, ignore_sigterm: true}
        remap: {chatter: chatter_stuck}
  crashy:
    arguments: []
    nodes:
      - name: flaky
        package: jepa_launch_testpkg
        executable: probe_node
        parameters: {crash_after: 4.0}
        remap: {chatter: chatter_flaky}
        respawn: true
        respawn_delay: 0.5
      - name: gate
        package: jepa_launch_testpkg
        executable: probe_node
        parameters: {crash_on: /kill_gate}
        remap: {chatter: chatter_gate}
        required: true
'''

PARAMS = '''
talker_a:
  ros__parameters:
    number: 7
    greeting: from_file
talker_b:
  ros__parameters:
    number: 8
'''


@pytest.fixture
def test_install(tmp_path):
    """A prefix laid out like a colcon install of one package, and a graph file using it."""
    prefix = tmp_path / 'install'
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages').mkdir(parents=True)
    (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'jepa_launch_testpkg').touch()
    exe = prefix / 'lib' / 'jepa_launch_testpkg' / 'probe_node'
    exe.parent.mkdir(parents=True)
    exe.write_text(PROBE_NODE.format(python=sys.executable))
    exe.chmod(0o755)
    config = tmp_path / 'config'
    config.mkdir()
    (config / 'graph.yaml').write_text(GRAPH)
    (config / 'probe.yaml').write_text(PARAMS)
    env = {'AMENT_PREFIX_PATH': f'{prefix}{os.pathsep}{sys.prefix}'}
    return config / 'graph.yaml', env


def heard(messages) -> list[dict]:
    return [json.loads(m.data) for m in messages]


def pids_started(output: str) -> set[int]:
    return {int(p) for p in re.findall(r'\(pid (\d+)\)', output)}


def process_gone(pid: int) -> bool:
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except FileNotFoundError:
        return True
    return stat.split(')')[-1].split()[0] == 'Z'


def test_respawn_waits_double_with_each_crash_in_a_row_up_to_a_cap():
    from jepa_bringup.launcher import MAX_RESPAWN_DELAY, respawn_backoff
    assert [respawn_backoff(0.5, n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert respawn_backoff(1.0, 40) == MAX_RESPAWN_DELAY


def test_exit_codes_are_described_with_signal_names():
    from jepa_bringup.launcher import describe_exit
    assert describe_exit(3) == 'exit code 3'
    assert describe_exit(-11) == 'killed by SIGSEGV'


def test_ros_arguments_carry_name_params_overrides_and_remaps():
    spec = NodeSpec(name='actor', package='p', executable='e', params_files=['/c/agent.yaml'],
                    parameters={'mode': 'mpc', 'use_sim_time': True, 'flag': 'true', 'ws': [0.1, 0.2]},
                    remaps=[('/camera/image_raw', '/cam/color')])
    assert ros_arguments(spec) == [
        '--ros-args', '-r', '__node:=actor', '--params-file', '/c/agent.yaml',
        '-p', 'mode:=mpc', '-p', 'use_sim_time:=true', '-p', "flag:='true'", '-p', 'ws:=[0.1, 0.2]',
        '-r', '/camera/image_raw:=/cam/color']
    # A namespaced graph's node: its namespace right after its name.
    spec.namespace = '/arm1'
    assert ros_arguments(spec)[:5] == ['--ros-args', '-r', '__node:=actor', '-r', '__ns:=/arm1']


@pytest.mark.integration
def test_launch_starts_named_configured_nodes_and_ctrl_c_stops_them_all(ros_graph, test_install):
    graph_file, env = test_install
    chatter_a, chatter_b = ros_graph.collect(String, 'chatter_a'), ros_graph.collect(String, 'chatter_b')
    launcher = ros_graph.run(JEPA + ['launch', 'small', '--graph-file', str(graph_file), 'greeting:=hi'],
                             'launcher', extra_env=env)
    ros_graph.spin_until(lambda: chatter_a and chatter_b, 30, 'both talkers')
    a, b = heard(chatter_a)[-1], heard(chatter_b)[-1]
    # Node name from the graph, the file's parameters, then the launch argument's override on top.
    assert (a['name'], a['number'], a['greeting']) == ('/talker_a', 7, 'hi')
    assert (b['name'], b['number'], b['greeting']) == ('/talker_b', 8, 'unset')
    output = launcher.output()
    assert re.search(r'^\[talker_a\] .*probe ready', output, re.M)  # node output, prefixed with its name
    pids = pids_started(output)
    assert {a['pid'], b['pid']} <= pids
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, a['pid']) == own  # the graph's niceness, relative to the launcher's
    assert os.getpriority(os.PRIO_PROCESS, b['pid']) == min(own + 7, 19)

    assert launcher.stop(timeout=30) == 0, launcher.log_path.read_text()
    output = launcher.log_path.read_text()
    assert all(process_gone(pid) for pid in pids), output
    assert 'all nodes stopped' in output and 'did not stop cleanly' not in output


@pytest.mark.integration
def test_a_node_ignoring_sigint_gets_sigterm_and_the_launch_fails(ros_graph, test_install):
    graph_file, env = test_install
    deaf = ros_graph.collect(String, 'chatter_deaf')
    launcher = ros_graph.run(JEPA + ['launch', 'stubborn', '--graph-file', str(graph_file), '--sigint-timeout', '2'],
                             'launcher', extra_env=env)
    ros_graph.spin_until(lambda: deaf, 30, 'the node that ignores SIGINT')
    assert launcher.stop(timeout=30) == 1
    output = launcher.log_path.read_text()
    assert 'deaf still running: sending SIGTERM' in output
    assert all(process_gone(pid) for pid in pids_started(output)), output


@pytest.mark.integration
def test_a_node_ignoring_sigterm_too_prints_its_stacks_and_is_killed(ros_graph, test_install):
    graph_file, env = test_install
    stuck = ros_graph.collect(String, 'chatter_stuck')
    launcher = ros_graph.run(JEPA + ['launch', 'stuck', '--graph-file', str(graph_file), '--sigint-timeout', '1',
                                     '--sigterm-timeout', '1'], 'launcher', extra_env=env)
    ros_graph.spin_until(lambda: stuck, 30, 'the node that ignores SIGINT and SIGTERM')
    assert launcher.stop(timeout=30) == 1
    output = launcher.log_path.read_text()
    assert "stuck still running: sending SIGUSR1 (its threads' stacks follow)" in output
    assert re.search(r'^\[stuck\] .*(Current thread|Thread) 0x', output, re.M), output  # faulthandler's dump
    assert 'stuck did not stop cleanly (killed by SIGKILL)' in output
    assert all(process_gone(pid) for pid in pids_started(output)), output


@pytest.mark.integration
def test_crashed_node_is_respawned_and_a_required_node_exit_stops_the_graph(ros_graph, test_install):
    graph_file, env = test_install
    flaky = ros_graph.collect(String, 'chatter_flaky')
    launcher = ros_graph.run(JEPA + ['launch', 'crashy', '--graph-file', str(graph_file)], 'launcher', extra_env=env)
    # flaky crashes 4 s after each start and comes back with a new pid.
    ros_graph.spin_until(lambda: len({m['pid'] for m in heard(flaky)}) >= 2, 40, 'a respawned flaky node')
    output = launcher.output()
    assert 'flaky exited (exit code 3)' in output
    assert 'probe: crashing on purpose' in output  # the crash report carries the node's last lines
    assert 'restarted flaky' in output
    # The required gate exits: everything stops and the launcher reports failure.
    kill_gate = ros_graph.node.create_publisher(String, '/kill_gate', 10)
    deadline = time.monotonic() + 40
    while launcher.alive() and time.monotonic() < deadline:
        kill_gate.publish(String(data='now'))
        ros_graph.spin_for(0.2)
    assert not launcher.alive(), launcher.output()
    assert launcher.proc.returncode == 1
    output = launcher.output()
    assert 'gate is required: stopping the whole graph' in output
    assert all(process_gone(pid) for pid in pids_started(output)), output


def test_launch_refuses_unknown_arguments_and_graphs_before_starting_anything(capsys):
    from jepa_bringup.launcher import main
    assert main(['sim', 'colour:=red']) == 2
    assert "unknown launch argument(s) colour for graph 'sim'" in capsys.readouterr().err
    assert main(['simulation']) == 2
    assert "unknown graph 'simulation'" in capsys.readouterr().err
    assert main(['sim', '--show-args']) == 0
    assert 'use_sim_time' in capsys.readouterr().out


@pytest.mark.integration
def test_launch_runs_the_real_simulated_arm_behind_its_gate(ros_graph):
    """The installed graph file: sim_node and safety_node as `jepa launch sim_arm` starts them."""
    from sensor_msgs.msg import JointState
    from diagnostic_msgs.msg import DiagnosticArray
    joint_states = ros_graph.collect(JointState, '/joint_states')
    diagnostics = ros_graph.collect(DiagnosticArray, '/diagnostics')
    launcher = ros_graph.run(JEPA + ['launch', 'sim_arm'], 'launcher')
    ros_graph.spin_until(lambda: joint_states and diagnostics, 60, 'joint states from sim and diagnostics from safety')
    assert 'panda_joint1' in joint_states[-1].name
    # A node's name reaches the graph by discovery, which can trail its first messages by a few seconds.
    ros_graph.spin_until(lambda: {'sim', 'safety'} <= set(ros_graph.node.get_node_names()), 10,
                         'the sim and safety nodes in the ROS graph')
    code = launcher.stop(timeout=30)
    output = launcher.log_path.read_text()
    assert all(process_gone(pid) for pid in pids_started(output)), output
    # The exit status follows the nodes' own: 0 when both stopped cleanly on SIGINT, else 1 with the report (a
    # node dying inside rclpy on SIGINT, or one still spinning until SIGTERM, must be reported, not hidden).
    unclean = re.findall(r'did not stop cleanly|still running: sending SIGTERM', output)
    assert code == (1 if unclean else 0), output
    assert 'all nodes stopped' in output


@pytest.mark.integration
def test_nodes_stop_when_the_launcher_is_killed(ros_graph, test_install):
    """SIGKILL leaves the launcher no chance to stop its nodes: they get SIGTERM from the kernel instead."""
    import signal
    graph_file, env = test_install
    chatter_a = ros_graph.collect(String, 'chatter_a')
    launcher = ros_graph.run(JEPA + ['launch', 'small', '--graph-file', str(graph_file), 'with_b:=false'],
                             'launcher', extra_env=env)
    ros_graph.spin_until(lambda: chatter_a, 30, 'talker_a')
    pids = pids_started(launcher.output())
    launcher.proc.send_signal(signal.SIGKILL)
    launcher.proc.wait()
    deadline = time.monotonic() + 20
    while not all(process_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(process_gone(pid) for pid in pids)
