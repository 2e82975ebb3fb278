"""`jepa collect --arm PRESET`: play on any arm behind the `arm` graph, without the simulator.

ROS-free: the ArmPlay core on the Panda's and a UR5e's kinematics (episodes end at home, every command within the
gate's velocity limits and the workspace box, pauses, the e-stop, an arm that cannot get home). Integration: the
real command against fake_arm_node with a camera published from the test, once with the gate collect starts
itself, once through the gate of a running `jepa launch arm` graph; nothing of the collection touches sim/*, every
command goes through the gate and stays in the box, the arm returns home at every episode end, and the bag trains
with `--arm`."""
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from jepa_bringup.arm_collect import ArmPlay, ArmPlayConfig, HomingError
from jepa_bringup.collect import main
from jepa_bringup.graph import load_preset
from jepa_common.conversions import rgb_to_image
from jepa_common.kinematics import ArmKinematics
from jepa_common.qos import SENSOR
from ur5e_model import ur5e_kinematics, write_ur5e_urdf

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
PANDA = load_preset('panda')
BOX = np.array(list(zip(PANDA['workspace']['min'], PANDA['workspace']['max'])))


def panda_kinematics() -> ArmKinematics:
    return ArmKinematics(home=PANDA['kinematics']['home'], workspace=tuple(map(tuple, BOX)))


def drive(play: ArmPlay, positions, ticks: int, follow: float = 0.8, dt: float = 0.1, blocked=None, on_tick=None):
    """Closed loop with a lagging arm: each tick the joints move `follow` of the way to the command (joints in
    `blocked` do not move). Returns (tick, time, state before the tick, measured positions, command) rows."""
    rows = []
    positions = np.asarray(positions, dtype=float).copy()
    for tick in range(ticks):
        now = tick * dt
        if on_tick is not None:
            on_tick(tick, play)
        state = play.state
        command = play.tick(positions, now)
        rows.append((tick, now, state, positions.copy(), command))
        if command is not None:
            moved = positions + follow * (command.positions - positions)
            if blocked is not None:
                moved[blocked] = positions[blocked]
            positions = moved
        if play.done:
            break
    return rows


def box_excess(kinematics, q_arm) -> float:
    box = np.asarray(kinematics.workspace)
    ee = kinematics.fk(q_arm)
    return float(np.max(np.maximum(box[:, 0] - ee, ee - box[:, 1])))


@pytest.fixture(scope='module')
def ur5e(tmp_path_factory):
    return ur5e_kinematics(write_ur5e_urdf(tmp_path_factory.mktemp('ur5e') / 'ur5e.urdf'))


@pytest.mark.parametrize('arm', ['panda', 'ur5e'])
def test_episodes_end_at_home_and_every_command_keeps_the_gates_limits(arm, ur5e):
    kinematics = panda_kinematics() if arm == 'panda' else ur5e
    scale = 0.25
    config = ArmPlayConfig(play_seconds=20.0, episode_seconds=(6.0, 8.0), seed=4, velocity_scale=scale)
    play = ArmPlay(kinematics, config)
    n = len(kinematics.arm_joints)
    start = np.r_[kinematics.home, kinematics.gripper_to_fingers(-1.0)]
    rows = drive(play, start, 2000)
    assert play.done and play.played_seconds == pytest.approx(20.0)
    assert play.episodes_done == play.episodes_started >= 3
    limits = np.r_[kinematics.velocity, kinematics.finger_velocity] * scale * config.dt
    actions = []
    for _, _, _, positions, command in rows:
        if command is None:
            continue
        # Within the gate's velocity limits with room to spare (it never has to stretch a command)...
        assert np.all(np.abs(command.positions - positions) <= config.speed_share * limits + 1e-9)
        # ...and inside the workspace box.
        assert box_excess(kinematics, command.positions[:n]) <= 1e-3
        if command.action is not None:
            actions.append(command.action)
    actions = np.array(actions)
    assert len(actions) == 200 and np.abs(actions[:, :3]).max() <= kinematics.max_step + 1e-6
    assert np.linalg.norm(actions[:, :3], axis=1).mean() > 0.003          # it babbles, not stands
    # Every episode starts at home, and the run ends there: an action follows only a home reached.
    states = [state for _, _, state, _, _ in rows]
    for i in range(1, len(rows)):
        if rows[i][4] is not None and rows[i][4].action is not None and states[i] != 'playing':
            assert np.max(np.abs(rows[i][3][:n] - kinematics.home)) <= config.home_tolerance
    last = rows[-1][3][:n]
    assert np.max(np.abs(last - kinematics.home)) <= config.home_tolerance
    assert len(play.homing_seconds) == play.episodes_done + 1       # the start, and after every episode


def test_pauses_hold_still_for_their_seconds_and_until_enter():
    kinematics = panda_kinematics()
    config = ArmPlayConfig(play_seconds=4.0, episode_seconds=(2.0, 2.0), pause_seconds=1.5, wait_for_resume=True)
    play = ArmPlay(kinematics, config)
    resumed_at = []

    def press_enter_late(tick, play):
        # Enter is pressed at tick 80, long after the pause's seconds are over.
        if tick == 80 and play.state == 'pausing':
            play.resume()
            resumed_at.append(tick)
    rows = drive(play, np.r_[kinematics.home, kinematics.gripper_to_fingers(1.0)], 400, on_tick=press_enter_late)
    assert play.done and resumed_at == [80]
    # Still at home, commanding nothing, until Enter; the tick it comes the next episode plays.
    pausing = [(tick, command) for tick, _, state, _, command in rows if state == 'pausing']
    assert pausing[0][0] < 60 and pausing[-1][0] == 80
    assert all(command is None for _, command in pausing[:-1]) and pausing[-1][1].action is not None
    assert any('rearrange the objects' in line for line in play.log)

    # Seconds only: the next episode starts when they are over.
    play = ArmPlay(kinematics, ArmPlayConfig(play_seconds=4.0, episode_seconds=(2.0, 2.0), pause_seconds=1.5))
    rows = drive(play, np.r_[kinematics.home, kinematics.gripper_to_fingers(1.0)], 400)
    pausing = [tick for tick, _, state, _, _ in rows if state == 'pausing']
    home_reached, resumed = rows[pausing[0] - 1][1], rows[pausing[-1]][1]
    assert resumed - home_reached == pytest.approx(1.5) and rows[pausing[-1]][4].action is not None


def test_an_estop_ends_the_episode_and_the_arm_goes_home_before_playing_again():
    kinematics = panda_kinematics()
    play = ArmPlay(kinematics, ArmPlayConfig(play_seconds=6.0, episode_seconds=(5.0, 5.0)))

    def estop(tick, play):
        if tick == 20:
            assert play.state == 'playing'
            play.interrupt()
    rows = drive(play, np.r_[kinematics.home, kinematics.gripper_to_fingers(1.0)], 500, on_tick=estop)
    after = [row for row in rows if row[0] >= 20]
    assert after[0][2] == 'homing' and after[0][4].action is None
    first_action = next(row for row in after if row[4] is not None and row[4].action is not None)
    assert np.max(np.abs(first_action[3][:7] - kinematics.home)) <= 0.02
    assert play.done and play.episodes_done == 2 and play.played_seconds == pytest.approx(6.0)


def test_an_arm_that_cannot_get_home_is_named():
    kinematics = panda_kinematics()
    play = ArmPlay(kinematics, ArmPlayConfig(play_seconds=1.0, stall_seconds=2.0))
    start = np.r_[kinematics.home, kinematics.gripper_to_fingers(1.0)]
    start[3] += 0.3      # panda_joint4 away from home, and stuck there
    with pytest.raises(HomingError, match=r'panda_joint4 stays 0.300 rad from kinematics.home after 2 s'):
        drive(play, start, 200, blocked=[3])


def test_a_home_outside_the_workspace_box_is_refused():
    kinematics = ArmKinematics(workspace=((0.4, 0.7), (-0.3, 0.3), (0.05, 0.5)))
    with pytest.raises(ValueError, match=r'kinematics.home puts the end effector at .* outside the workspace box'):
        ArmPlay(kinematics, ArmPlayConfig(play_seconds=1.0))


def test_an_estop_is_released_by_the_gates_later_report_even_when_its_report_of_the_latch_was_missed(rclpy_context):
    """The collector holds from the e-stop until the gate, the authority, reports it is not latched. /diagnostics
    may drop the gate's report of the latch on a loaded machine: a report made well after the e-stop still ends the
    hold; one that may predate the gate's latch does not."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    from jepa_bringup.arm_collect import ArmCollector, ArmSetup
    kinematics = panda_kinematics()
    setup = ArmSetup('panda', kinematics, 0.5, 'camera/image_raw', 'camera/camera_info',
                     'arm_controller/joint_trajectory', [])
    collector = ArmCollector(ArmPlay(kinematics, ArmPlayConfig(play_seconds=1.0)), setup, context=rclpy_context)
    try:
        def report(state: str, after_s: float) -> None:
            msg = DiagnosticArray(status=[DiagnosticStatus(name='/safety: gate',
                                                           values=[KeyValue(key='state', value=state)])])
            stamp = collector._estop_since_ns + int(after_s * 1e9)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            collector.on_diagnostics(msg)

        collector.on_estop(Bool(data=True))
        report('holding', 0.1)          # made before the gate could have latched: proves nothing
        assert collector.estop
        report('holding', 2.0)          # the gate's report of the latch was missed; this one is after it
        assert not collector.estop
        collector.on_estop(Bool(data=True))
        report('estop', 0.1)
        report('holding', 0.2)          # the gate saw the latch and is released: go on
        assert not collector.estop
    finally:
        collector.destroy_node()


def test_options_of_the_other_mode_and_bad_arms_are_refused(tmp_path, capsys):
    out = str(tmp_path / 'play')
    with pytest.raises(SystemExit) as exit_:
        main(['--minutes', '1', '--out', out, '--arm', 'panda', '--sim-camera', 'cam.yaml', '--push-fraction', '0.5'])
    assert exit_.value.code == 2
    assert '--push-fraction, --sim-camera: for the simulator only' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--minutes', '1', '--out', out, '--arm', 'panda', '--perturb', 'camera_moved'])
    assert '--perturb: for the simulator only' in capsys.readouterr().err
    assert main(['--minutes', '1', '--out', out, '--perturb', 'camera_wobbles']) == 2
    assert "unknown perturbations ['camera_wobbles']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--minutes', '1', '--out', out, '--fake-arm', '--pause-between-episodes', '3'])
    assert '--fake-arm, --pause-between-episodes: for an arm behind the arm graph only' in capsys.readouterr().err
    assert main(['--minutes', '1', '--out', out, '--arm', 'no_such_arm']) == 2
    assert "unknown arm preset 'no_such_arm'" in capsys.readouterr().err
    # The preset's URDF is the user's file: where it is not, the way to pass one is named.
    assert main(['--minutes', '1', '--out', out, '--arm', 'ur5e', '--urdf', str(tmp_path / 'none.urdf')]) == 2
    assert 'none.urdf' in capsys.readouterr().err
    assert main(['--minutes', '1', '--out', out, '--arm', 'panda', '--gate', 'running', '--fake-arm']) == 2
    assert 'fake_arm:=true' in capsys.readouterr().err
    assert main(['--minutes', '1', '--out', out, '--arm', 'panda', '--pause-between-episodes', '-1']) == 2
    assert '--pause-between-episodes >= 0' in capsys.readouterr().err
    assert not Path(out).exists()


# ---------------------------------------------------------------- integration

def wait_for_exit(graph, process, step, timeout: float) -> None:
    """Spin (calling step()) until `process` exits by itself; rosharness' spin_until would take that exit for a
    crash."""
    end = time.monotonic() + timeout
    while process.alive():
        assert time.monotonic() < end, f'{process.name} still runs after {timeout} s:\n{process.output()[-3000:]}'
        graph.executor.spin_once(timeout_sec=0.05)
        step()


def child_pid(parent: int, marker: str) -> int:
    for child in Path(f'/proc/{parent}/task/{parent}/children').read_text().split():
        if marker in Path(f'/proc/{child}/cmdline').read_bytes().decode(errors='replace'):
            return int(child)
    raise AssertionError(f'no child of {parent} runs {marker}')


class Observer:
    """The test's view of the collection from outside: a camera it publishes, and what goes over the wires."""

    def __init__(self, graph, preset):
        self.graph = graph
        self.preset = preset
        self.arm = list(preset['joints']['arm'])
        node = graph.node
        self.commands, self.gate_output, self.states, self.actions = [], [], [], []
        node.create_subscription(JointTrajectory, '/jepa/joint_trajectory',
                                 lambda m: self.commands.append((time.monotonic(), m)), RELIABLE)
        node.create_subscription(JointTrajectory, '/' + preset['controller']['topic'],
                                 lambda m: self.gate_output.append((time.monotonic(), m)), RELIABLE)
        node.create_subscription(JointState, '/joint_states', self.on_state, SENSOR)
        from jepa_interfaces.msg import ActionStamped
        node.create_subscription(ActionStamped, '/jepa/action', lambda m: self.actions.append(time.monotonic()),
                                 RELIABLE)
        self.camera = node.create_publisher(Image, '/' + preset['camera']['image_topic'], SENSOR)
        self.frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        node.create_timer(0.05, self.publish_frame)
        self.estop = node.create_publisher(Bool, '/jepa/estop', RELIABLE)
        self.release = node.create_client(Trigger, '/safety/release_estop')
        self.sim_names: set = set()
        self.collect_nodes: dict = {}

    def publish_frame(self) -> None:
        self.frame = np.roll(self.frame, 1, axis=1)
        self.camera.publish(rgb_to_image(self.frame, self.graph.node.get_clock().now().to_msg()))

    def on_state(self, msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        if all(n in index for n in self.arm):
            self.states.append((time.monotonic(), np.array([msg.position[index[n]] for n in self.arm])))

    def look_at_the_graph(self, names) -> None:
        """Every topic, service and client of the named nodes (those that run now), and every topic of the domain
        under sim/ that anything publishes."""
        node = self.graph.node
        running = {name for name, namespace in node.get_node_names_and_namespaces() if namespace == '/'}
        for name in set(names) & running:
            try:
                endpoints = {
                    'subscribes': node.get_subscriber_names_and_types_by_node(name, '/'),
                    'publishes': node.get_publisher_names_and_types_by_node(name, '/'),
                    'serves': node.get_service_names_and_types_by_node(name, '/'),
                    'calls': node.get_client_names_and_types_by_node(name, '/')}
            except Exception:  # noqa: BLE001 - the node went away between the two calls
                continue
            seen = self.collect_nodes.setdefault(name, {})
            for kind, pairs in endpoints.items():
                seen.setdefault(kind, set()).update(topic for topic, _ in pairs)
        self.sim_names |= {topic for topic, _ in node.get_topic_names_and_types()
                           if topic.startswith('/sim/') and node.count_publishers(topic)}
        self.sim_names |= {service for service, _ in node.get_service_names_and_types() if service.startswith('/sim/')}

    def home_distance(self, after: float = -np.inf, before: float = np.inf) -> float:
        home = np.array(self.preset['kinematics']['home'])
        return min((float(np.max(np.abs(q - home))) for t, q in self.states if after < t < before), default=np.inf)


def check_collection(observer: Observer, kinematics, bag: Path, node_names, holds=()) -> None:
    """What every real-arm collection must show, read from outside and from its bag. `holds` are (start, end)
    times the test made the collection hold mid-episode (not an episode's end: no return home)."""
    # Nothing under sim/ in any node of the collection, nor published by anything in the domain.
    assert set(node_names) <= set(observer.collect_nodes), observer.collect_nodes.keys()
    for name, endpoints in observer.collect_nodes.items():
        for kind, names in endpoints.items():
            assert not [n for n in names if n.startswith('/sim/')], (name, kind, names)
    assert not observer.sim_names
    # The collector commands the gate only: never the controller itself.
    collector = observer.collect_nodes['collector']
    assert {'/jepa/joint_trajectory', '/jepa/action'} <= collector['publishes']
    assert '/' + PANDA['controller']['topic'] not in collector['publishes']
    assert {'/jepa/estop', '/joint_states', '/diagnostics'} <= collector['subscribes']
    assert not collector['calls']
    # Every command went through the gate, which forwarded them, and all stayed in the box.
    forwarded = [m for _, m in observer.gate_output if m.points]
    assert len(observer.commands) > 40 and len(forwarded) >= 0.8 * len(observer.commands)
    for msg in [m for _, m in observer.commands] + forwarded:
        assert list(msg.joint_names[:7]) == observer.arm
        for point in msg.points:
            assert box_excess(kinematics, np.array(point.positions[:7])) <= 0.005
    # Home between episodes (each gap of the actions longer than a control period) and at the end.
    times = np.array(observer.actions)
    gaps = [(a, b) for a, b in zip(times[:-1], times[1:]) if b - a > 0.8
            and not any(a < end and start < b for start, end in holds)]
    assert gaps
    for a, b in gaps:
        assert observer.home_distance(a, b) <= 0.03, (a, b)
    assert observer.home_distance(after=times[-1] + 0.5) <= 0.03
    # The bag holds what training reads, and it trains with --arm.
    from jepa_world_model import dataset
    from jepa_world_model.bag_layout import layout_from_preset
    ticks = dataset.decode_bag(bag, layout=layout_from_preset('panda'))
    assert ticks.sources[0]['actions'] == 'recorded'
    assert len(ticks) >= 0.8 * len(times)
    assert not [t for t in ticks.sources[0]['messages'] if t.startswith('/sim/')]


@pytest.mark.integration
def test_collect_plays_on_the_arm_graphs_fake_arm_through_its_gate_without_sim(ros_graph, tmp_path):
    """`jepa collect --arm panda --fake-arm`: collect starts the arm graph's gate and fake_arm_node itself; an
    e-stop holds it (and it goes home once released), stale joint states hold it."""
    observer = Observer(ros_graph, PANDA)
    bag = tmp_path / 'play'
    collect = ros_graph.run(['jepa', 'collect', '--arm', 'panda', '--fake-arm', '--minutes', str(8 / 60),
                             '--episode-seconds', '3', '4', '--pause-between-episodes', '1', '--out', str(bag),
                             '--no-progress'], 'collect')
    names = ('collector', 'recorder', 'safety', 'fake_arm')
    events = {}

    def step() -> bool:
        observer.look_at_the_graph(names)
        now = time.monotonic()
        if 'estop' not in events and len(observer.actions) >= 10:
            events['estop'] = now
            observer.estop.publish(Bool(data=True))
        elif 'estop' in events and 'released' not in events and now - events['estop'] > 1.5 \
                and observer.release.service_is_ready():
            events['released'] = now
            observer.estop.publish(Bool(data=False))
            events['release_answer'] = observer.release.call_async(Trigger.Request())
        elif 'released' in events and 'stopped' not in events and \
                len([t for t in observer.actions if t > events['released']]) >= 10:
            events['stopped'] = now
            events['fake_arm'] = child_pid(collect.proc.pid, 'fake_arm_node')
            os.kill(events['fake_arm'], signal.SIGSTOP)
        elif 'stopped' in events and 'continued' not in events and now - events['stopped'] > 1.0:
            events['continued'] = now
            os.kill(events['fake_arm'], signal.SIGCONT)
    try:
        wait_for_exit(ros_graph, collect, step, 150)
    finally:
        if 'stopped' in events and 'continued' not in events:
            os.kill(events['fake_arm'], signal.SIGCONT)
    output = collect.output()
    assert collect.proc.returncode == 0, output[-4000:]
    assert events['release_answer'].done() and events['release_answer'].result().success
    # The e-stop held every command (one in flight may still arrive), and after its release the arm went home
    # before the next action.
    during = [t for t, _ in observer.commands if events['estop'] + 0.3 < t < events['released']]
    assert not during
    next_action = min(t for t in observer.actions if t > events['released'])
    assert observer.home_distance(events['released'], next_action) <= 0.03
    # Stale joint states held it: no command while the arm's driver was stopped.
    assert not [t for t, _ in observer.commands if events['stopped'] + 0.5 < t < events['continued']]
    for line in ('e-stop (jepa/estop)', 'e-stop released', 'holding: stale joint states', 'pausing at home for 1 s',
                 'returning home', 'train on it with: jepa train --arm panda'):
        assert line in output, line
    check_collection(observer, panda_kinematics(), bag, names, holds=[(events['stopped'], events['continued'])])


@pytest.mark.integration
def test_collect_commands_through_the_gate_of_a_running_arm_graph(ros_graph, tmp_path):
    """`jepa launch arm arm:=panda fake_arm:=true` (gate, agent, fake_arm_node, no simulator) runs; `jepa collect
    --arm panda --gate running` plays through its gate and starts none, and the default `--gate start` refuses to
    start a second gate beside it."""
    launch = ros_graph.run(['jepa', 'launch', 'arm', 'arm:=panda', 'fake_arm:=true', 'task:=idle'], 'jepa_launch_arm')
    observer = Observer(ros_graph, PANDA)
    ros_graph.spin_until(lambda: observer.states and ros_graph.node.count_subscribers('/jepa/joint_trajectory'),
                         90, 'the arm graph\'s fake arm and gate')
    second = ros_graph.run(['jepa', 'collect', '--arm', 'panda', '--fake-arm', '--minutes', '1',
                            '--out', str(tmp_path / 'refused'), '--no-progress'], 'collect_second_gate')
    wait_for_exit(ros_graph, second, lambda: None, 60)
    assert second.proc.returncode == 2 and 'a safety gate already runs' in second.output()
    assert not (tmp_path / 'refused').exists()

    bag = tmp_path / 'play'
    collect = ros_graph.run(['jepa', 'collect', '--arm', 'panda', '--gate', 'running', '--minutes', str(5 / 60),
                             '--episode-seconds', '2.5', '2.5', '--out', str(bag), '--no-progress'], 'collect')
    names = ('collector', 'recorder')
    gates = []

    def step() -> None:
        observer.look_at_the_graph(names)
        gates.append(sum(name == 'safety' for name, _ in ros_graph.node.get_node_names_and_namespaces()))
    wait_for_exit(ros_graph, collect, step, 120)
    output = collect.output()
    assert collect.proc.returncode == 0, output[-4000:]
    assert 'gate: the running one' in output
    # One gate all along, the graph's: never a second (a graph query on a loaded machine may miss a node for a moment).
    assert max(gates) == 1 and gates.count(1) >= 0.8 * len(gates)
    check_collection(observer, panda_kinematics(), bag, names)
    assert launch.alive()
