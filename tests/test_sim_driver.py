"""A second arm nobody tuned for: the xArm6 preset and sim_driver_node, a simulated arm behind a driver's interface.

ROS-free: the preset's pybullet_data URDF and its kinematics (FK, IK, the action mapping), ArmSim driving the xArm
(its gripper linkage, ee_delta steps), the scene inside the workspace box, the graph. In-process: the stand-in's
parameters, and its privileged referee/ interface off by default. Integration: the stand-in follows trajectories on
the preset's controller topic and publishes joint_states and a camera on the wall clock; the `arm` graph beside it
has no sim/ or referee/ endpoint; `jepa collect --arm xarm6` plays on it and its bag trains with `--arm xarm6`."""
import os
import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, JointState

from jepa_bringup.graph import GraphFile
from jepa_common.arm_presets import read_preset, resolve_urdf_path
from jepa_common.conversions import image_to_rgb, joint_positions, joint_target_trajectory, stamp_to_sec
from jepa_common.kinematics import ArmKinematics
from jepa_common.qos import SENSOR
from jepa_interfaces.srv import RenderState, ResetSim
from jepa_sim.arm_sim import Scene
from jepa_sim.sim_driver import REFEREE_NAMESPACE, SimDriverConfig, driver_arm

CONFIG = Path(__file__).resolve().parents[1] / 'config'
PRESET = read_preset('xarm6')
ARM = list(PRESET['joints']['arm'])
GRIPPER = list(PRESET['joints']['gripper'])
HOME = np.array(PRESET['kinematics']['home'])
BOX = np.array([PRESET['workspace']['min'], PRESET['workspace']['max']]).T
CONTROLLER = '/' + PRESET['controller']['topic']
CAMERA = '/' + PRESET['camera']['image_topic']
CAMERA_INFO = '/' + PRESET['camera']['info_topic']
AGENT_NODES = ('safety', 'perception', 'world_model', 'cost', 'actor', 'short_term_memory', 'configurator')


def xarm_kinematics(**options) -> ArmKinematics:
    return ArmKinematics(PRESET['kinematics']['urdf'], ARM, GRIPPER, PRESET['kinematics']['ee_frame'], home=HOME,
                         workspace=tuple(map(tuple, BOX)), **options)


def driver_config(**overrides) -> SimDriverConfig:
    values = dict(urdf_path=PRESET['kinematics']['urdf'], arm_joints=ARM, finger_joints=GRIPPER,
                  ee_frame=PRESET['kinematics']['ee_frame'], home=list(HOME),
                  workspace_min=list(PRESET['workspace']['min']), workspace_max=list(PRESET['workspace']['max']))
    return SimDriverConfig(**{**values, **overrides})


def inside_box(xyz, tolerance=1e-3) -> bool:
    return bool(np.all(xyz >= BOX[:, 0] - tolerance) and np.all(xyz <= BOX[:, 1] + tolerance))


# ---------------------------------------------------------------- the preset and its kinematics

def test_the_xarm6_preset_names_a_pybullet_data_urdf_and_its_kinematics_work():
    raw = (CONFIG / 'arms' / 'xarm6.yaml').read_text()
    assert 'urdf: pybullet_data://xarm/xarm6_with_gripper.urdf' in raw
    urdf = PRESET['kinematics']['urdf']
    assert os.path.isfile(urdf) and urdf == resolve_urdf_path('pybullet_data://xarm/xarm6_with_gripper.urdf')
    assert resolve_urdf_path('~/arm.urdf') == os.path.expanduser('~/arm.urdf') and resolve_urdf_path('') == ''
    k = xarm_kinematics()
    # Home: tool pointing down, inside the workspace box.
    xyz, rotation = k.ee_pose(HOME)
    assert inside_box(xyz) and np.abs(rotation - k.tool_rotation).max() < 1e-3
    # IK reaches the box's corners with the tool down (6 joints: no redundancy to spare).
    for corner in np.stack(np.meshgrid(*BOX, indexing='ij'), axis=-1).reshape(-1, 3):
        q = k.ik(HOME, corner, iterations=300)
        xyz, rotation = k.ee_pose(q)
        assert np.linalg.norm(xyz - corner) < 0.003 and np.abs(rotation - k.tool_rotation).max() < 0.01, corner
        assert np.all(q >= k.lower) and np.all(q <= k.upper)
    # The action mapping: a 3-cm step moves the end effector by about that much, the box clips the rest.
    for action in ([0.03, 0.0, 0.0, 1.0], [0.0, -0.03, 0.0, -1.0], [0.0, 0.0, 0.03, 0.0]):
        q_target, fingers = k.action_to_joint_target(HOME, action)
        step = k.fk(q_target) - k.fk(HOME)
        assert step == pytest.approx(action[:3], abs=0.003)
        assert fingers == pytest.approx(k.gripper_to_fingers(action[3]))
    low = k.ik(HOME, np.array([0.4, 0.0, BOX[2, 0]]), iterations=300)
    q_target, _ = k.action_to_joint_target(low, [0.0, 0.0, -0.03, 0.0])
    assert k.fk(q_target)[2] >= BOX[2, 0] - 0.002
    # The gripper: drive_joint spans 0 (open) .. 0.85 rad (closed).
    assert (k.finger_lower[0], k.finger_upper[0]) == (0.0, 0.85)


def test_a_six_joint_arm_without_a_home_has_kinematics_for_the_gate():
    """The safety gate and fake_arm_node build ArmKinematics without a home: for a 6-joint arm that must not be
    the Panda's 7-joint home."""
    k = ArmKinematics(PRESET['kinematics']['urdf'], ARM, GRIPPER, PRESET['kinematics']['ee_frame'])
    assert k.home.shape == (6,) and np.all(k.home >= k.lower) and np.all(k.home <= k.upper)
    assert ArmKinematics().home == pytest.approx([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])


def test_the_graph_starts_the_stand_in_with_the_presets_arm_and_topics_and_no_referee():
    nodes = {s.name: s for s in GraphFile(CONFIG / 'graph.yaml').resolve('sim_driver', {'arm': 'xarm6'})}
    driver = nodes['sim_driver']
    assert (driver.package, driver.executable) == ('jepa_sim', 'sim_driver_node')
    assert driver.required and not driver.respawn
    p = driver.parameters
    assert p['urdf_path'] == PRESET['kinematics']['urdf'] and p['arm_joints'] == ARM
    assert p['finger_joints'] == GRIPPER and p['home'] == list(HOME)
    assert p['controller_topic'] == PRESET['controller']['topic']
    assert p['image_topic'] == PRESET['camera']['image_topic']
    assert p['referee'] is False
    assert 'use_sim_time' not in p and not driver.remaps
    # The preset's camera_info is the image's sibling, where the stand-in publishes it.
    assert PRESET['camera']['info_topic'] == PRESET['camera']['image_topic'].rsplit('/', 1)[0] + '/camera_info'
    with_referee = GraphFile(CONFIG / 'graph.yaml').resolve('sim_driver', {'arm': 'xarm6', 'referee': 'true'})
    assert with_referee[0].parameters['referee'] is True


# ---------------------------------------------------------------- the simulated arm

def test_the_scene_lies_inside_the_workspace_box():
    scene = Scene.inside(BOX, margin=0.05)
    assert np.array(scene.arm_start_region) == pytest.approx(np.array([[0.3, 0.5], [-0.2, 0.2], [0.25, 0.4]]))
    assert scene.cube_region == scene.arm_start_region[:2] and scene.cube_home == pytest.approx((0.4, 0.0))
    with pytest.raises(ValueError, match='too small'):
        Scene.inside(((0.0, 0.05), (0.0, 1.0), (0.0, 1.0)))
    for overrides, message in (({'home': [0.0] * 7}, 'home has 7 values for 6 arm joints'),
                               ({'workspace_min': [0.6, -0.25, 0.2]}, 'min < max'),
                               ({'camera_rate': 0.0}, 'camera_rate must be a positive')):
        with pytest.raises(ValueError, match=message):
            driver_config(**overrides)


def test_arm_sim_drives_the_xarm_with_its_gripper_linkage_and_follows_ee_steps():
    sim = driver_arm(driver_config())
    try:
        assert sim.joint_names == (*ARM, *GRIPPER)
        # The five mimic joints of the gripper's linkage follow drive_joint (PyBullet does not enforce mimics).
        assert len(sim._mimics) == 5
        sim.step(120)
        assert sim.joint_positions()[:6] == pytest.approx(HOME, abs=1e-3)
        assert inside_box(sim.ee_pose()[:3]) and sim.cube_pose()[2] == pytest.approx(0.025, abs=2e-3)
        import pybullet as p
        mimic_ids = [j for j, *_ in sim._mimics]
        k = sim.kinematics
        for gripper in (-1.0, 1.0):
            for _ in range(20):
                q = sim.joint_positions()
                q_arm, fingers = k.action_to_joint_target(q[:6], [0.0, 0.0, 0.0, gripper])
                sim.send_joint_targets(np.r_[q_arm, fingers])
                sim.step(24)
            drive = sim.joint_positions()[6]
            assert drive == pytest.approx(k.gripper_to_fingers(gripper)[0], abs=0.02)
            linkage = [s[0] for s in p.getJointStates(sim.robot, mimic_ids, physicsClientId=sim.client)]
            assert linkage == pytest.approx([drive] * 5, abs=0.02)
        # ee_delta steps of 2.4 cm per 0.1 s, as the agent commands them through the stand-in's trajectory
        # follower: the hand ends each step within millimetres of its target.
        from jepa_common.trajectory import TrajectoryPoint
        from jepa_sim.trajectory_follower import TrajectoryFollower
        follower = TrajectoryFollower(sim.joint_names, sim.lower, sim.upper, sim.joint_positions())
        errors = []
        for _ in range(6):
            q = sim.joint_positions()
            target, fingers = k.action_to_joint_target(q[:6], [0.02, 0.01, -0.01, 1.0])
            follower.set_trajectory(sim.joint_names, [TrajectoryPoint(0.1, list(np.r_[target, fingers]))], sim.time, q)
            for _ in range(24):
                sim.send_joint_targets(*follower.sample(sim.time))
                sim.step()
            errors.append(np.linalg.norm(k.fk(sim.joint_positions()[:6]) - k.fk(target)))
        assert max(errors) < 0.004 and inside_box(sim.ee_pose()[:3])
        # Seeded resets put the arm and the cube inside the box.
        q1, cube1 = sim.reset(3)
        assert inside_box(k.fk(q1[:6])) and inside_box(np.r_[cube1[:2], 0.3])
        q2, cube2 = sim.reset(3)
        assert q1 == pytest.approx(q2) and cube1 == pytest.approx(cube2)
        assert sim.render().std() > 10
    finally:
        sim.close()


# ---------------------------------------------------------------- the node, in-process

def test_the_stand_in_offers_only_a_drivers_interface_unless_told_to_serve_a_referee(rclpy_context):
    from jepa_sim.sim_driver_node import SimDriverNode
    overrides = {'urdf_path': PRESET['kinematics']['urdf'], 'arm_joints': ARM, 'finger_joints': GRIPPER,
                 'ee_frame': PRESET['kinematics']['ee_frame'], 'home': list(HOME),
                 'workspace_min': list(PRESET['workspace']['min']),
                 'workspace_max': list(PRESET['workspace']['max']),
                 'controller_topic': PRESET['controller']['topic'], 'image_topic': PRESET['camera']['image_topic']}

    def make(**extra):
        params = [Parameter(k, value=v) for k, v in {**overrides, **extra}.items()]
        return SimDriverNode(context=rclpy_context, parameter_overrides=params, namespace='/cell')

    def endpoints(node) -> set:
        """Topics and services, without the parameter services every node has."""
        names = {p.topic_name for p in node.publishers} | {s.topic_name for s in node.subscriptions}
        services = {node.resolve_service_name(s.srv_name) for s in node.services}
        return names | {s for s in services if not s.startswith('/cell/sim_driver/')}

    node = make()
    try:
        names = [n for n in node._parameters if n not in ('use_sim_time', 'start_type_description_service')]
        for name, descriptor in zip(names, node.describe_parameters(names)):
            assert descriptor.description and descriptor.read_only, name
        assert endpoints(node) == {'/cell/joint_states', '/cell/' + PRESET['camera']['image_topic'],
                                   '/cell/' + PRESET['camera']['info_topic'], '/cell/' + PRESET['controller']['topic'],
                                   '/parameter_events'}
    finally:
        node.close()
        node.destroy_node()
    # Like the physical arm it stands in for, it keeps the wall clock.
    with pytest.raises(ValueError, match='runs on the wall clock'):
        make(use_sim_time=True)
    node = make(referee=True)
    try:
        extra = endpoints(node) - {'/cell/joint_states', '/cell/' + PRESET['camera']['image_topic'],
                                   '/cell/' + PRESET['camera']['info_topic'], '/cell/' + PRESET['controller']['topic'],
                                   '/parameter_events'}
        assert extra == {f'/cell/{REFEREE_NAMESPACE}/{n}' for n in ('clock', 'ee_pose', 'cube_pose', 'reset',
                                                                    'render_state')}
    finally:
        node.close()
        node.destroy_node()


# ---------------------------------------------------------------- integration

def launch_driver(ros_graph, *args):
    return ros_graph.run(['jepa', 'launch', 'sim_driver', 'arm:=xarm6', *args], 'sim_driver')


def names_under(node, prefixes) -> list[str]:
    """Every topic (with a publisher or subscriber) and service of the domain under one of the prefixes."""
    topics = [t for t, _ in node.get_topic_names_and_types()
              if node.count_publishers(t) or node.count_subscribers(t)]
    services = [s for s, _ in node.get_service_names_and_types()]
    return sorted(n for n in topics + services if n.startswith(prefixes))


@pytest.mark.integration
def test_the_stand_in_follows_trajectories_and_publishes_states_and_camera_on_the_wall_clock(ros_graph):
    launch_driver(ros_graph, 'referee:=true')
    node = ros_graph.node
    states = ros_graph.collect(JointState, '/joint_states', 50)
    arrivals = []       # (wall-clock arrival here, stamp) of joint states
    node.create_subscription(JointState, '/joint_states',
                             lambda m: arrivals.append((time.time(), stamp_to_sec(m.header.stamp))), 50)
    images = ros_graph.collect(Image, CAMERA, SENSOR)
    infos = ros_graph.collect(CameraInfo, CAMERA_INFO, SENSOR)
    ee_poses = ros_graph.collect(PoseStamped, f'/{REFEREE_NAMESPACE}/ee_pose')
    commands = node.create_publisher(type(joint_target_trajectory(ARM, HOME, 1.0)), CONTROLLER, 10)
    ros_graph.spin_until(lambda: len(states) > 10 and images and infos and ee_poses
                         and commands.get_subscription_count(), 45, 'the stand-in\'s joint states, camera and poses')
    last = states[-1]
    assert list(last.name) == ARM + GRIPPER
    assert joint_positions(last, ARM) == pytest.approx(HOME, abs=2e-3)
    # The wall clock, like a physical arm's driver: no /clock, stamps of the time they are sent (here a loaded
    # machine can only delay the arrival).
    delays = [arrived - stamp for arrived, stamp in arrivals[-20:]]
    assert -0.05 < float(np.median(delays)) < 0.5, delays
    assert not node.count_publishers('/clock')
    assert image_to_rgb(images[-1]).shape == (96, 96, 3) and infos[-1].width == 96
    assert images[-1].header.frame_id == 'camera_color_optical_frame'
    # A JointTrajectory on the preset's controller topic: the arm gets there.
    target = HOME + np.array([0.3, 0.1, -0.1, 0.0, 0.2, -0.2])
    commands.publish(joint_target_trajectory(ARM + GRIPPER, np.r_[target, 0.4], 1.0))
    ros_graph.spin_until(lambda: np.abs(joint_positions(states[-1], ARM + GRIPPER) - np.r_[target, 0.4]).max() < 0.01,
                         20, 'the arm at the trajectory\'s end')
    # The referee's privileged state agrees with the driver's joints of the same instant, and its reset is seeded.
    ros_graph.spin_for(0.3)
    k = xarm_kinematics()
    by_stamp = {stamp_to_sec(m.header.stamp): m for m in states}
    pose = next(p for p in reversed(ee_poses) if stamp_to_sec(p.header.stamp) in by_stamp)
    xyz = [pose.pose.position.x, pose.pose.position.y, pose.pose.position.z]
    assert xyz == pytest.approx(k.fk(joint_positions(by_stamp[stamp_to_sec(pose.header.stamp)], ARM)), abs=1e-4)
    assert pose.header.frame_id == 'world'
    first, second = (ros_graph.call(ResetSim, f'/{REFEREE_NAMESPACE}/reset',
                                    ResetSim.Request(seed=7, randomize_arm=True, randomize_cube=True))
                     for _ in range(2))
    assert first.success and list(first.joint_positions) == pytest.approx(list(second.joint_positions))
    rendered = ros_graph.call(RenderState, f'/{REFEREE_NAMESPACE}/render_state',
                              RenderState.Request(joint_names=ARM, joint_positions=list(HOME)))
    assert rendered.success and rendered.ee_position.z == pytest.approx(k.fk(HOME)[2], abs=1e-3)
    # Nothing under sim/, ever.
    assert not names_under(node, ('/sim/',))


@pytest.mark.integration
def test_the_arm_graph_beside_the_stand_in_uses_no_sim_or_referee_name(ros_graph):
    """`jepa launch arm arm:=xarm6` with the stand-in as its driver (serving a referee, to prove nobody listens):
    the agent sees the arm's camera, and no node of its graph touches sim/ or referee/."""
    launch_driver(ros_graph, 'referee:=true')
    graph = ros_graph.run(['jepa', 'launch', 'arm', 'arm:=xarm6', 'task:=idle'], 'arm_graph')
    node = ros_graph.node
    from jepa_interfaces.msg import LatentState
    latents = ros_graph.collect(LatentState, '/jepa/latent')
    ros_graph.spin_until(lambda: len(latents) >= 3 and all(
        (name, '/') in node.get_node_names_and_namespaces() for name in AGENT_NODES), 55,
        'the agent nodes, and latents of the stand-in\'s camera')
    for name in AGENT_NODES:
        used = [topic for pairs in (node.get_subscriber_names_and_types_by_node(name, '/'),
                                    node.get_publisher_names_and_types_by_node(name, '/'),
                                    node.get_service_names_and_types_by_node(name, '/'),
                                    node.get_client_names_and_types_by_node(name, '/')) for topic, _ in pairs]
        assert not [n for n in used if n.startswith(('/sim/', f'/{REFEREE_NAMESPACE}/'))], (name, used)
    # referee/ has its one publisher (the stand-in) and no subscriber; sim/ does not exist.
    assert not names_under(node, ('/sim/',))
    for topic in names_under(node, (f'/{REFEREE_NAMESPACE}/',)):
        assert node.count_subscribers(topic) == 0, topic
    # The gate forwards to the preset's controller topic, where the stand-in listens.
    assert node.count_subscribers(CONTROLLER) >= 1 and node.count_publishers(CONTROLLER) >= 1
    assert graph.alive()


@pytest.mark.integration
def test_collect_plays_on_the_stand_in_and_its_bag_trains_with_the_preset(ros_graph, tmp_path):
    launch_driver(ros_graph)
    bag = tmp_path / 'play_xarm6'
    collect = ros_graph.run(['jepa', 'collect', '--arm', 'xarm6', '--minutes', str(18 / 60), '--episode-seconds',
                             '5', '7', '--out', str(bag), '--no-progress'], 'collect')
    seen: dict = {}
    end = time.monotonic() + 90
    while collect.alive():
        assert time.monotonic() < end, collect.output()[-3000:]
        ros_graph.executor.spin_once(timeout_sec=0.1)
        node = ros_graph.node
        for name in ('collector', 'recorder', 'safety'):
            try:
                for pairs in (node.get_subscriber_names_and_types_by_node(name, '/'),
                              node.get_publisher_names_and_types_by_node(name, '/'),
                              node.get_client_names_and_types_by_node(name, '/')):
                    seen.setdefault(name, set()).update(topic for topic, _ in pairs)
            except Exception:  # noqa: BLE001 - not (or no longer) running
                pass
    output = collect.output()
    assert collect.proc.returncode == 0, output[-4000:]
    assert set(seen) == {'collector', 'recorder', 'safety'}
    assert not [n for names in seen.values() for n in names if n.startswith(('/sim/', f'/{REFEREE_NAMESPACE}/'))]
    assert {CAMERA, '/joint_states', CONTROLLER} <= seen['recorder']
    assert 'train on it with: jepa train --arm xarm6' in output
    from jepa_world_model import dataset
    from jepa_world_model.bag_layout import layout_from_preset
    ticks = dataset.decode_bag(bag, layout=layout_from_preset('xarm6'))
    assert ticks.sources[0]['actions'] == 'recorded' and len(ticks) >= 120
    assert ticks.proprio.shape[1] == 7 and ticks.images.shape[1:] == (64, 64, 3)
    # The end effector the decoder derives from the xArm's joints moved through the workspace box.
    assert np.ptp(ticks.ee, axis=0).max() > 0.05 and all(inside_box(e, 0.01) for e in ticks.ee)
    out = tmp_path / 'model.pt'
    train = ros_graph.run(['jepa', 'train', '--arm', 'xarm6', '--bag', str(bag), '--out', str(out), '--steps', '2',
                           '--threads', '1', '--cache', str(tmp_path / 'cache'), '--no-progress'], 'train')
    train.proc.wait(120)
    assert train.proc.returncode == 0 and out.is_file(), train.output()[-3000:]
    assert 'arm preset xarm6' in train.output()


# ---------------------------------------------------------------- jepa eval --arm: the referee of the stand-in

def test_eval_of_an_arm_preset_scores_with_the_stand_ins_referee_interface_and_the_presets_box(capsys):
    from jepa_bringup.episodes import make_goal, reach_region
    from jepa_bringup.evaluate import arm_referee_names, graph_camera, main, preset_kinematics
    names = arm_referee_names(PRESET)
    assert {names[k] for k in ('clock', 'ee_pose', 'cube_pose', 'reset', 'render_state')} == \
        {f'{REFEREE_NAMESPACE}/{k}' for k in ('clock', 'ee_pose', 'cube_pose', 'reset', 'render_state')}
    assert (names['image'], names['camera_info']) == (PRESET['camera']['image_topic'],
                                                      PRESET['camera']['info_topic'])
    k = preset_kinematics(PRESET)
    assert k.arm_joints == tuple(ARM) and np.asarray(k.workspace) == pytest.approx(BOX)
    region = np.array(reach_region(k.workspace))
    assert np.all(region[:, 0] > BOX[:, 0]) and np.all(region[:, 1] < BOX[:, 1])
    for seed in range(10):
        goal = make_goal('reach', seed, k, HOME, np.array([0.4, 0.0, 0.025]), tuple(map(tuple, region)))
        assert inside_box(goal.target)
    # The stand-in's camera (config/sim_driver.yaml), for the video overlay.
    assert graph_camera([], 'xarm6').target == (0.4, 0.0, 0.22)
    with pytest.raises(SystemExit):
        main(['--arm', 'xarm6', '--task', 'push'])
    assert '--arm evaluates reach only' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--arm', 'no_such_arm'])
    assert "unknown arm preset 'no_such_arm'" in capsys.readouterr().err


@pytest.mark.integration
def test_eval_reaches_on_the_stand_in_with_the_oracle(ros_graph, tmp_path):
    """`jepa eval --arm xarm6`: graph sim_driver_arm, seeded resets and goals through the referee/ interface; the
    oracle (through the gate, with the preset's kinematics) reaches its goal."""
    report = tmp_path / 'reach.json'
    run = ros_graph.run(['jepa', 'eval', '--arm', 'xarm6', '--episodes', '1', '--conditions', 'oracle',
                         '--seed', '11', '--json', str(report), '--log-dir', str(tmp_path / 'eval')], 'eval',
                        extra_env={'ROS_DOMAIN_ID': str(ros_graph.domain_id)})
    run.proc.wait(120)
    assert run.proc.returncode == 0, run.output()[-3000:]
    import json
    result = json.loads(report.read_text())
    assert result['provenance']['arm'] == 'xarm6'
    oracle = result['tasks']['reach']['conditions']['oracle']
    assert oracle['episodes'] == 1 and oracle['success_rate'] == 1.0
