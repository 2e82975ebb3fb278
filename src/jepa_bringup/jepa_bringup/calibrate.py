"""`jepa calibrate DIR`: record what the agent needs to know about a real cell into a folder.

- The camera pose, entered by hand (no fiducials): where the camera is (`--camera-eye`, metres in the arm base
  frame) and the point it looks at (`--camera-target`), the same parameterization as the simulator's camera,
  measured with a tape. Written to calibration.yaml and to sim_camera.yaml, a params file for sim_node
  (`jepa launch sim sim_camera:=DIR/sim_camera.yaml`) so simulated images are taken from a similar viewpoint.
  The field of view comes from the camera's CameraInfo when it publishes one.
- Goal images: for each `--goal NAME`, arrange the scene (move the arm with its teach pendant or hand-guiding,
  place the objects), press Enter, and the next camera image is saved as goals/NAME.png together with the joint
  state closest to it in time. goals.yaml is a params file for the configurator
  (`jepa launch arm goals:=DIR/goals.yaml`, then SetTask with goal_name NAME).
- `--save-urdf`: the driver's /robot_description saved as robot.urdf (point the arm preset's kinematics.urdf at it).

Nothing already in the folder is overwritten: a goal name that exists is refused.
"""
import argparse
import math
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from jepa_bringup.graph import GraphError, load_preset

CALIBRATION_FILE = 'calibration.yaml'
GOALS_PARAMS_FILE = 'goals.yaml'
SIM_CAMERA_PARAMS_FILE = 'sim_camera.yaml'
URDF_FILE = 'robot.urdf'
# A joint state further than this from the image (by header stamps) is reported: the arm may have moved.
MAX_STAMP_GAP = 0.2


class CalibrationError(RuntimeError):
    pass


def fov_deg_from_camera_info(k: list[float], height: int) -> float:
    """Vertical field of view (degrees) from the intrinsic matrix K (row-major 3x3) and image height."""
    fy = float(k[4])
    if not (fy > 0 and height > 0):
        raise CalibrationError(f'camera info has no usable focal length (fy={fy}, height={height})')
    return math.degrees(2.0 * math.atan(height / (2.0 * fy)))


class CalibrationFolder:
    """The folder's files (ROS-free): calibration.yaml (everything, human-readable), goals/*.png, goals.yaml
    (configurator params), sim_camera.yaml (sim params), robot.urdf."""

    def __init__(self, path: str | os.PathLike, arm: str, arm_joints: list[str]):
        self.path = Path(path).expanduser().resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / 'goals').mkdir(exist_ok=True)
        self.arm_joints = list(arm_joints)
        existing = self.path / CALIBRATION_FILE
        self.data = yaml.safe_load(existing.read_text()) if existing.is_file() else {}
        if self.data.get('arm') not in (None, arm):
            raise CalibrationError(f'{self.path} holds a calibration of arm {self.data["arm"]!r}, not {arm!r}')
        self.data['arm'] = arm
        self.data.setdefault('goals', {})

    def set_camera(self, topic: str, eye, target, fov_deg: float | None, size: tuple[int, int] | None) -> None:
        eye, target = [float(v) for v in eye], [float(v) for v in target]
        if len(eye) != 3 or len(target) != 3 or not all(map(math.isfinite, eye + target)):
            raise CalibrationError(f'camera eye and target need 3 finite numbers each, got {eye} and {target}')
        if np.linalg.norm(np.subtract(eye, target)) < 1e-3:
            raise CalibrationError('camera eye and target are the same point')
        camera = {'topic': topic, 'eye': eye, 'target': target, 'frame': 'arm base',
                  'source': 'manual entry', 'date': _now()}
        sim = {'camera_eye': eye, 'camera_target': target}
        if fov_deg is not None:
            camera['fov_deg'] = sim['camera_fov_deg'] = round(fov_deg, 3)
        if size is not None:
            camera['width'], camera['height'] = size
        self.data['camera'] = camera
        _write_yaml(self.path / SIM_CAMERA_PARAMS_FILE, {'sim': {'ros__parameters': sim}},
                    '# Simulator camera placed like the real one (jepa calibrate): jepa launch sim sim_camera:=<this>')

    def add_goal(self, name: str, rgb: np.ndarray, image_stamp: float, joint_names: list[str],
                 joint_positions: list[float], joint_stamp: float) -> Path:
        import cv2
        if not name.replace('_', '').replace('-', '').isalnum():
            raise CalibrationError(f'goal name {name!r} may only hold letters, digits, _ and -')
        image_path = self.path / 'goals' / f'{name}.png'
        if name in self.data['goals'] or image_path.exists():
            raise CalibrationError(f'goal {name!r} already exists in {self.path}; choose another name or delete it')
        index = {n: i for i, n in enumerate(joint_names)}
        missing = [n for n in self.arm_joints if n not in index]
        if missing:
            raise CalibrationError(f'the joint state lacks the arm joints {missing} (it has {joint_names})')
        if not cv2.imwrite(str(image_path), np.ascontiguousarray(rgb[:, :, ::-1])):
            raise CalibrationError(f'cannot write {image_path}')
        self.data['goals'][name] = {
            'image': str(image_path), 'image_stamp': image_stamp, 'joint_stamp': joint_stamp,
            'joint_names': list(joint_names), 'joint_positions': [float(v) for v in joint_positions],
            'arm_joint_positions': [float(joint_positions[index[n]]) for n in self.arm_joints],
            'height': int(rgb.shape[0]), 'width': int(rgb.shape[1]), 'date': _now()}
        return image_path

    def save_urdf(self, text: str) -> Path:
        path = self.path / URDF_FILE
        path.write_text(text)
        self.data['urdf'] = str(path)
        return path

    def write(self) -> None:
        _write_yaml(self.path / CALIBRATION_FILE, self.data, '# Written by jepa calibrate.')
        goals = self.data['goals']
        if goals:
            params = {'goal_names': sorted(goals),
                      'goals': {n: {'image': g['image'], 'joint_positions': g['arm_joint_positions']}
                                for n, g in sorted(goals.items())}}
            _write_yaml(self.path / GOALS_PARAMS_FILE, {'configurator': {'ros__parameters': params}},
                        '# Named goals for the configurator (jepa calibrate): jepa launch arm goals:=<this>')


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec='seconds')


def _write_yaml(path: Path, data: dict, header: str) -> None:
    tmp = path.with_suffix('.tmp')
    tmp.write_text(header + '\n' + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    tmp.replace(path)


def _make_scene_node(context, camera_topic: str, info_topic: str, joint_states_topic: str):
    """The ROS side: the latest image, camera info, recent joint states and /robot_description. (The class is
    built here so that importing this module, e.g. for CalibrationFolder, needs no rclpy.)"""
    import collections

    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import String

    from jepa_common.conversions import image_to_rgb, stamp_to_sec
    from jepa_common.qos import LATCHED, SENSOR

    class SceneNode(Node):
        def __init__(self):
            super().__init__('calibrate', context=context)
            self.lock = threading.Lock()
            self.image = None            # (receipt time, stamp, rgb)
            self.camera_info = None
            self.robot_description = None
            self.joint_states = collections.deque(maxlen=500)  # (stamp, names, positions)
            # Best effort matches both best-effort and reliable camera publishers.
            self.create_subscription(Image, camera_topic, self.on_image, SENSOR)
            self.create_subscription(CameraInfo, info_topic, self.on_info, SENSOR)
            self.create_subscription(JointState, joint_states_topic, self.on_joints, 50)
            self.create_subscription(String, 'robot_description', self.on_description, LATCHED)

        def on_image(self, msg):
            try:
                rgb = np.array(image_to_rgb(msg))
            except ValueError as error:
                self.get_logger().error(f'{camera_topic}: {error}')
                return
            with self.lock:
                self.image = (time.monotonic(), stamp_to_sec(msg.header.stamp), rgb)

        def on_info(self, msg):
            self.camera_info = msg

        def on_joints(self, msg):
            if len(msg.position) != len(msg.name):
                self.get_logger().error(f'{joint_states_topic}: {len(msg.name)} names, {len(msg.position)} positions')
                return
            with self.lock:
                self.joint_states.append((stamp_to_sec(msg.header.stamp), list(msg.name), list(msg.position)))

        def on_description(self, msg):
            self.robot_description = msg.data

        def image_after(self, t0: float, timeout: float):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                with self.lock:
                    if self.image is not None and self.image[0] > t0:
                        return self.image
                time.sleep(0.02)
            raise CalibrationError(f'no image on {camera_topic} within {timeout:.0f} s')

        def joint_state_near(self, stamp: float, timeout: float):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                with self.lock:
                    if self.joint_states:
                        return min(self.joint_states, key=lambda s: abs(s[0] - stamp))
                time.sleep(0.02)
            raise CalibrationError(f'no joint state on {joint_states_topic} within {timeout:.0f} s')

    return SceneNode()


def _ask_vector(prompt: str) -> list[float]:
    while True:
        text = input(prompt).replace(',', ' ').split()
        try:
            values = [float(v) for v in text]
        except ValueError:
            values = []
        if len(values) == 3:
            return values
        print('  three numbers please, e.g. 1.1 0.75 0.85')


def run(args, out=print) -> int:
    try:
        preset = load_preset(args.arm)
    except GraphError as error:
        raise CalibrationError(str(error)) from error
    camera_topic = args.camera_topic or preset['camera']['image_topic']
    info_topic = args.camera_info_topic or preset['camera'].get('info_topic', '')
    folder = CalibrationFolder(args.folder, args.arm, preset['joints']['arm'])
    for name in args.goal:
        if name in folder.data['goals']:
            raise CalibrationError(f'goal {name!r} already exists in {folder.path}; choose another name or delete it')
    interactive = not args.no_prompt and sys.stdin.isatty()
    if args.camera_eye is None and args.camera_target is None and interactive and 'camera' not in folder.data:
        out('Camera pose, in metres in the arm base frame (x forward, y left, z up from the base).')
        args.camera_eye = _ask_vector('  camera position (x y z): ')
        args.camera_target = _ask_vector('  point at the centre of the image (x y z): ')
    if (args.camera_eye is None) != (args.camera_target is None):
        raise CalibrationError('give both --camera-eye and --camera-target')

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    scene = None
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
    spinner = threading.Thread(target=spin)
    try:
        scene = _make_scene_node(context, camera_topic, info_topic or 'camera/camera_info', args.joint_states)
        executor.add_node(scene)
        spinner.start()
        if args.camera_eye is not None:
            _, _, rgb = scene.image_after(0.0, args.timeout)
            info = scene.camera_info
            fov = fov_deg_from_camera_info(list(info.k), info.height) if info is not None and info.k[4] > 0 else None
            folder.set_camera(camera_topic, args.camera_eye, args.camera_target, fov, (rgb.shape[1], rgb.shape[0]))
            out(f'camera pose recorded (fov: {"%.1f deg from camera info" % fov if fov else "not published"})')
        for name in args.goal:
            if interactive:
                input(f'Arrange the scene for goal {name!r}, then press Enter ')
            _, image_stamp, rgb = scene.image_after(time.monotonic(), args.timeout)
            joint_stamp, names, positions = scene.joint_state_near(image_stamp, args.timeout)
            gap = abs(joint_stamp - image_stamp)
            path = folder.add_goal(name, rgb, image_stamp, names, positions, joint_stamp)
            out(f'goal {name!r}: {path} ({rgb.shape[1]}x{rgb.shape[0]}), joint state {gap * 1000:.0f} ms from the image'
                + (' - more than expected: was the arm still moving?' if gap > MAX_STAMP_GAP else ''))
        if args.save_urdf:
            end = time.monotonic() + args.timeout
            while scene.robot_description is None and time.monotonic() < end:
                time.sleep(0.05)
            if scene.robot_description is None:
                topic = scene.resolve_topic_name('robot_description')
                raise CalibrationError(f'no {topic} within {args.timeout:.0f} s (is the driver running?)')
            out(f'URDF saved: {folder.save_urdf(scene.robot_description)}')
    finally:
        folder.write()
        # The spinning thread must be out of rclpy before the executor and context go away.
        stop.set()
        if spinner.is_alive():
            spinner.join()
        executor.shutdown()
        if scene is not None:
            scene.destroy_node()
        rclpy.try_shutdown(context=context)
    out(f'calibration in {folder.path}')
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='jepa calibrate', description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('folder', help='calibration folder (created; existing goals are kept)')
    parser.add_argument('--arm', default='franka_fr3', help='arm preset of config/arms/ (default franka_fr3)')
    parser.add_argument('--camera-topic', help='sensor_msgs/Image topic (default: the preset\'s)')
    parser.add_argument('--camera-info-topic', help='sensor_msgs/CameraInfo topic (default: the preset\'s)')
    parser.add_argument('--joint-states', default='joint_states', help='joint state topic')
    parser.add_argument('--camera-eye', type=float, nargs=3, metavar=('X', 'Y', 'Z'),
                        help='camera position, metres, arm base frame')
    parser.add_argument('--camera-target', type=float, nargs=3, metavar=('X', 'Y', 'Z'),
                        help='the point at the image centre, metres, arm base frame')
    parser.add_argument('--goal', action='append', default=[], metavar='NAME', help='record a goal (repeatable)')
    parser.add_argument('--save-urdf', action='store_true', help='save /robot_description as robot.urdf')
    parser.add_argument('--no-prompt', action='store_true', help='never ask: capture each goal at once')
    parser.add_argument('--timeout', type=float, default=15.0, help='seconds to wait for each message')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if len(set(args.goal)) != len(args.goal):
        parser.error('a goal name is given twice')
    try:
        return run(args)
    except CalibrationError as error:
        print(f'jepa calibrate: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('jepa calibrate: interrupted; what was captured so far is saved', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
