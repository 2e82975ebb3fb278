"""Conversions between ROS messages and numpy arrays, with the validation every node needs.

Every function raises ValueError with a message that names what was wrong, so a node can log it and
carry on instead of dying on one bad message.
"""
import array
from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from jepa_interfaces.msg import LatentState
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

_CHANNELS = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB array (a view where the layout allows)."""
    channels = _CHANNELS.get(msg.encoding)
    if channels is None:
        raise ValueError(f'unsupported image encoding {msg.encoding!r} (supported: {sorted(_CHANNELS)})')
    if msg.height == 0 or msg.width == 0:
        raise ValueError(f'empty image ({msg.width}x{msg.height})')
    if msg.step < msg.width * channels:
        raise ValueError(f'image step {msg.step} is smaller than width*channels = {msg.width * channels}')
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray, memoryview, array.array))
                         else msg.data, dtype=np.uint8)
    if data.size != msg.step * msg.height:
        raise ValueError(f'image data has {data.size} bytes, expected step*height = {msg.step * msg.height}')
    pixels = data.reshape(msg.height, msg.step)[:, :msg.width * channels].reshape(msg.height, msg.width, channels)
    if msg.encoding == 'rgb8':
        return pixels
    if msg.encoding == 'bgr8':
        return pixels[:, :, ::-1]
    if msg.encoding == 'rgba8':
        return pixels[:, :, :3]
    if msg.encoding == 'bgra8':
        return pixels[:, :, 2::-1]
    return np.repeat(pixels, 3, axis=2)


def rgb_to_image(rgb: np.ndarray, stamp: Time | None = None, frame_id: str = '') -> Image:
    """(H, W, 3) uint8 array -> sensor_msgs/Image rgb8 (bytes assignment: fast)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f'expected an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}')
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = 'rgb8'
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def latent_to_msg(latent: np.ndarray, stamp: Time | None = None, model_id: str = '',
                  frame_id: str = '') -> LatentState:
    """float array of any shape -> jepa_interfaces/LatentState."""
    latent = np.ascontiguousarray(latent, dtype=np.float32)
    msg = LatentState()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.model_id = model_id
    msg.shape = array.array('I', latent.shape)
    msg.data = array.array('f', latent.tobytes())
    return msg


def msg_to_latent(msg: LatentState, expected_model_id: str | None = None) -> np.ndarray:
    """jepa_interfaces/LatentState -> float32 array of msg.shape; rejects NaN/inf and shape mismatches."""
    if expected_model_id is not None and msg.model_id != expected_model_id:
        raise ValueError(f'latent from model {msg.model_id!r}, expected {expected_model_id!r}')
    data = np.frombuffer(msg.data, dtype=np.float32) if isinstance(msg.data, array.array) \
        else np.asarray(msg.data, dtype=np.float32)
    shape = tuple(int(s) for s in msg.shape)
    if int(np.prod(shape)) != data.size:
        raise ValueError(f'latent shape {list(shape)} needs {int(np.prod(shape))} values, got {data.size}')
    if not np.all(np.isfinite(data)):
        raise ValueError('latent contains NaN or inf')
    return data.reshape(shape)


def joint_positions(msg: JointState, names: Sequence[str]) -> np.ndarray:
    """Positions of the named joints, in the order of names, from a JointState in any order."""
    if len(msg.position) != len(msg.name):
        raise ValueError(f'joint state has {len(msg.name)} names but {len(msg.position)} positions')
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f'joint state lacks joints {missing}')
    values = np.array([msg.position[index[n]] for n in names], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError('joint state contains NaN or inf positions')
    return values


def joint_target_trajectory(joint_names: Sequence[str], positions, seconds: float) -> JointTrajectory:
    """One-point trajectory: reach `positions` (in joint_names order) `seconds` from arrival. The stamp stays
    zero, which a JointTrajectoryController reads as "start on arrival"."""
    sec, nanosec = divmod(int(round(seconds * 1e9)), 1_000_000_000)
    point = JointTrajectoryPoint(positions=array.array('d', np.asarray(positions, dtype=np.float64).tobytes()),
                                 time_from_start=Duration(sec=sec, nanosec=nanosec))
    return JointTrajectory(joint_names=list(joint_names), points=[point])


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(seconds: float) -> Time:
    # Round to whole nanoseconds first: 12.9999999999 s must become 13 s + 0 ns, not 12 s + 0 ns.
    sec, nanosec = divmod(int(round(seconds * 1e9)), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)
