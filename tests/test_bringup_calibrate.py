"""`jepa calibrate` over real DDS: camera pose, goal images with the joint state nearest in time, the params
files the configurator and sim take, /robot_description saved, and an existing goal never overwritten."""
import sys
import time

import cv2
import pytest
import yaml
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from jepa_bringup.calibrate import CalibrationError, CalibrationFolder, fov_deg_from_camera_info
from jepa_bringup.graph import GraphFile

JEPA = [sys.executable, '-m', 'jepa_bringup.cli']
PANDA_ARM = [f'panda_joint{i}' for i in range(1, 8)]


def test_fov_from_camera_info_matches_the_pinhole_model():
    # 64 px high, fy = 32 / tan(27.5 deg) is a 55 deg vertical field of view.
    import math
    fy = 32 / math.tan(math.radians(27.5))
    assert fov_deg_from_camera_info([fy, 0, 32, 0, fy, 32, 0, 0, 1], 64) == pytest.approx(55.0)
    with pytest.raises(CalibrationError, match='focal length'):
        fov_deg_from_camera_info([0] * 9, 64)


def test_folder_refuses_bad_input_and_keeps_what_it_has(tmp_path):
    import numpy as np
    folder = CalibrationFolder(tmp_path, 'panda', PANDA_ARM)
    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(CalibrationError, match=r"lacks the arm joints \['panda_joint7'\]"):
        folder.add_goal('g', rgb, 0.0, PANDA_ARM[:6], [0.0] * 6, 0.0)
    with pytest.raises(CalibrationError, match='same point'):
        folder.set_camera('/cam', [1, 1, 1], [1, 1, 1], None, None)
    folder.add_goal('g', rgb, 0.0, PANDA_ARM, [0.1] * 7, 0.0)
    folder.write()
    with pytest.raises(CalibrationError, match="holds a calibration of arm 'panda'"):
        CalibrationFolder(tmp_path, 'ur5e', ['shoulder_pan_joint'])
    again = CalibrationFolder(tmp_path, 'panda', PANDA_ARM)
    with pytest.raises(CalibrationError, match="goal 'g' already exists"):
        again.add_goal('g', rgb, 0.0, PANDA_ARM, [0.2] * 7, 0.0)


@pytest.mark.integration
def test_calibrate_records_camera_goals_and_urdf_from_the_live_scene(ros_graph, tmp_path):
    """The test process is the cell: a camera (a known picture, CameraInfo with a 55 degree field of view),
    joint states at two stamps (only one matches the picture's) and the driver's latched /robot_description."""
    import math

    import numpy as np
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from jepa_common.conversions import rgb_to_image, sec_to_stamp

    node = ros_graph.node
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    node.create_publisher(String, '/robot_description', latched).publish(String(data='<robot name="r"/>'))
    image_pub = node.create_publisher(Image, '/cell/image', 10)
    info_pub = node.create_publisher(CameraInfo, '/cell/camera_info', 10)
    joints_pub = node.create_publisher(JointState, '/joint_states', 10)
    picture = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    fy = 24 / math.tan(math.radians(27.5))
    at_picture = [0.1 * i for i in range(7)] + [0.04, 0.04]
    elsewhere = [-0.5] * 7 + [0.0, 0.0]

    def publish_scene():
        for t, positions in ((100.0, at_picture), (103.0, elsewhere)):
            joints_pub.publish(JointState(name=PANDA_ARM + ['panda_finger_joint1', 'panda_finger_joint2'],
                                          position=positions, header=rgb_to_image(picture, sec_to_stamp(t)).header))
        info_pub.publish(CameraInfo(height=48, width=64, k=[fy, 0.0, 32.0, 0.0, fy, 24.0, 0.0, 0.0, 1.0]))
        image_pub.publish(rgb_to_image(picture, sec_to_stamp(100.02)))
    node.create_timer(0.1, publish_scene)

    out = tmp_path / 'cell'
    cmd = JEPA + ['calibrate', str(out), '--arm', 'panda', '--camera-topic', '/cell/image',
                  '--camera-info-topic', '/cell/camera_info', '--camera-eye', '1.1', '0.75', '0.85',
                  '--camera-target', '0.4', '0', '0.22', '--goal', 'home', '--save-urdf', '--no-prompt',
                  '--timeout', '40']
    calibrate = ros_graph.run(cmd, 'calibrate')
    deadline = time.monotonic() + 60
    while calibrate.alive() and time.monotonic() < deadline:
        ros_graph.spin_for(0.1)
    assert calibrate.proc.returncode == 0, calibrate.output()

    saved = cv2.imread(str(out / 'goals' / 'home.png'))
    assert np.array_equal(saved[:, :, ::-1], picture)  # exactly the published pixels, RGB
    goals = yaml.safe_load((out / 'goals.yaml').read_text())['configurator']['ros__parameters']
    assert goals['goal_names'] == ['home']
    home = goals['goals']['home']
    assert home['image'] == str(out / 'goals' / 'home.png')
    # The joint state nearest the picture's stamp, arm joints only, in the preset's order.
    assert home['joint_positions'] == pytest.approx(at_picture[:7])
    sim_camera = yaml.safe_load((out / 'sim_camera.yaml').read_text())['sim']['ros__parameters']
    assert sim_camera['camera_eye'] == [1.1, 0.75, 0.85]
    assert sim_camera['camera_fov_deg'] == pytest.approx(55.0, abs=0.01)
    assert (out / 'robot.urdf').read_text() == '<robot name="r"/>'
    record = yaml.safe_load((out / 'calibration.yaml').read_text())
    assert record['goals']['home']['image_stamp'] == pytest.approx(100.02)
    assert record['goals']['home']['joint_stamp'] == pytest.approx(100.0)

    # The graph takes the folder's params files.
    specs = {s.name: s for s in GraphFile().resolve('sim', {'goals': str(out / 'goals.yaml'),
                                                            'sim_camera': str(out / 'sim_camera.yaml')})}
    assert specs['configurator'].params_files[-1] == str(out / 'goals.yaml')
    assert specs['sim'].params_files[-1] == str(out / 'sim_camera.yaml')

    # A second run with the same goal name is refused and leaves the first goal as it was.
    before = (out / 'goals' / 'home.png').read_bytes()
    again = ros_graph.run(JEPA + ['calibrate', str(out), '--arm', 'panda', '--goal', 'home', '--no-prompt'], 'again')
    again.proc.wait(timeout=30)
    assert again.proc.returncode == 1
    assert "goal 'home' already exists" in again.output()
    assert (out / 'goals' / 'home.png').read_bytes() == before
