"""Record throughput and loss of the recorder node over real DDS, against baselines measured in the same run.

Scenarios (each in a fresh ROS domain, publisher and recorder in separate processes):
  nominal  30 Hz 640x480 rgb8 images + 100 Hz joint states for a few seconds (the stack's real load)
  flood    images and joint states published as fast as the publisher can for a few seconds
Baselines:
  writer   BagRecorder writing the same messages in-process, no DDS (the disk/format ceiling)
  dds      the flood received by a raw subscriber that only counts (what DDS + rclpy deliver)
Prints figures and ratios; asserts nothing. --quick: 1 s per scenario and a writer baseline of 20 images (the
processes' start-up and DDS discovery make most of its half minute).

    .venv/bin/python bench/record_throughput.py [--seconds 4] [--quick]
"""
import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from jepa_rosbag.reader import BagReader
from jepa_rosbag.recorder import BagRecorder
from jepa_rosbag.typestore import jepa_typestore

VENV_BIN = Path(sys.prefix) / 'bin'
IMAGE = '/bench/camera/image_raw'
JOINTS = '/bench/joint_states'
H, W = 480, 640

PUBLISHER = textwrap.dedent('''
    import sys, time, rclpy, rclpy.duration
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image, JointState
    mode, seconds, start_delay = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    rclpy.init()
    node = rclpy.create_node('bench_publisher')
    qos = QoSProfile(depth=100)
    images = node.create_publisher(Image, {image!r}, qos)
    joints = node.create_publisher(JointState, {joints!r}, qos)
    image = Image(height={h}, width={w}, encoding='rgb8', step={w} * 3, data=bytes({h} * {w} * 3))
    joint = JointState(name=['panda_joint%d' % i for i in range(1, 8)], position=[0.1] * 7, velocity=[0.0] * 7)
    time.sleep(start_delay)  # discovery
    n_img = n_js = 0
    start = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        if mode == 'flood':
            images.publish(image); n_img += 1
            for _ in range(3):
                joints.publish(joint); n_js += 1
        else:
            if n_img < (now - start) * 30:
                images.publish(image); n_img += 1
            if n_js < (now - start) * 100:
                joints.publish(joint); n_js += 1
            time.sleep(0.002)
    elapsed = time.monotonic() - start
    # Everything published reaches the subscribers' DDS queues before the writers go away.
    for publisher in (images, joints):
        publisher.wait_for_all_acked(rclpy.duration.Duration(seconds=10))
    print('PUBLISHED', n_img, n_js, elapsed, flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
''').format(image=IMAGE, joints=JOINTS, h=H, w=W)

COUNTER = textwrap.dedent('''
    import signal, threading
    stop = threading.Event()
    # SIGINT ends the count wherever it lands, during the imports of a cold start included.
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    import rclpy
    from rclpy.qos import QoSProfile
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image, JointState
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('bench_counter')
    counts = {{'img': 0, 'js': 0, 'bytes': 0}}
    def on(kind):
        def cb(data):
            counts[kind] += 1
            counts['bytes'] += len(data)
        return cb
    node.create_subscription(Image, {image!r}, on('img'), QoSProfile(depth=1000), raw=True)
    node.create_subscription(JointState, {joints!r}, on('js'), QoSProfile(depth=1000), raw=True)
    print('READY', flush=True)
    while not stop.is_set():
        rclpy.spin_once(node, timeout_sec=0.1)
    print('RECEIVED', counts['img'], counts['js'], counts['bytes'], flush=True)
''').format(image=IMAGE, joints=JOINTS)


def ros_env(domain: int) -> dict:
    env = dict(os.environ)
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    env.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    return env


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def publish(mode: str, seconds: float, env: dict, start_delay: float) -> tuple[int, int, float]:
    out = subprocess.run([sys.executable, '-c', PUBLISHER, mode, str(seconds), str(start_delay)], env=env,
                         capture_output=True, text=True, timeout=seconds + start_delay + 60).stdout
    n_img, n_js, elapsed = re.search(r'PUBLISHED (\d+) (\d+) ([\d.]+)', out).groups()
    return int(n_img), int(n_js), float(elapsed)


def run_recorder(mode: str, seconds: float, workdir: Path, domain: int) -> dict:
    env = ros_env(domain)
    bag = workdir / f'{mode}_{domain}'
    recorder = subprocess.Popen(
        [str(VENV_BIN / 'recorder_node'), '--ros-args', '-p', f'output:={bag}', '-p', f'topics:=[{IMAGE},{JOINTS}]'],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    n_img, n_js, elapsed = publish(mode, seconds, env, start_delay=4.0)
    time.sleep(2.0)  # the recorder takes what is still queued for it
    report = stop(recorder)
    with BagReader(bag) as reader:
        counts = {name: t.message_count for name, t in reader.topics.items()}
    size = sum(f.stat().st_size for f in bag.iterdir())
    gaps = [m for m in re.findall(r'lost before the recorder: (\S+)', report)]
    dropped = sum(int(x) for x in re.findall(r'dropped by the recorder: (\d+)', report))
    return dict(published=n_img + n_js, published_img=n_img, recorded=sum(counts.values()),
                recorded_img=counts.get(IMAGE, 0), recorded_js=counts.get(JOINTS, 0), published_js=n_js,
                bytes=size, seconds=elapsed, gaps=gaps, dropped=dropped)


def run_counter(seconds: float, domain: int) -> dict:
    env = ros_env(domain)
    counter = subprocess.Popen([sys.executable, '-c', COUNTER], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    # The flood starts once the counter subscribes: a cold start (imports compiled on first use) can take longer
    # than the publisher's start delay.
    started = []
    for line in counter.stdout:
        started.append(line)
        if line.startswith('READY'):
            break
    else:
        raise RuntimeError(f'the DDS counter exited before subscribing (exit {counter.wait()}):\n{"".join(started)}')
    n_img, n_js, elapsed = publish('flood', seconds, env, start_delay=4.0)
    time.sleep(2.0)
    out = stop(counter)
    r_img, r_js, r_bytes = (int(x) for x in re.search(r'RECEIVED (\d+) (\d+) (\d+)', out).groups())
    return dict(published=n_img + n_js, received=r_img + r_js, bytes=r_bytes, seconds=elapsed)


def writer_baseline(workdir: Path, n_images: int) -> dict:
    store = jepa_typestore()
    T = store.types
    stamp = T['builtin_interfaces/msg/Time'](sec=0, nanosec=0)
    header = T['std_msgs/msg/Header'](stamp=stamp, frame_id='')
    image = bytes(store.serialize_cdr(T['sensor_msgs/msg/Image'](
        header=header, height=H, width=W, encoding='rgb8', is_bigendian=0, step=W * 3,
        data=np.zeros(H * W * 3, np.uint8)), 'sensor_msgs/msg/Image'))
    joint = bytes(store.serialize_cdr(T['sensor_msgs/msg/JointState'](
        header=header, name=[f'panda_joint{i}' for i in range(1, 8)], position=np.full(7, 0.1),
        velocity=np.zeros(7), effort=np.zeros(0)), 'sensor_msgs/msg/JointState'))
    recorder = BagRecorder(workdir / 'writer_only')
    recorder.add_topic(IMAGE, 'sensor_msgs/msg/Image')
    recorder.add_topic(JOINTS, 'sensor_msgs/msg/JointState')
    start = time.perf_counter()
    t = 0
    for _ in range(n_images):
        recorder.write(IMAGE, t, image)
        for _ in range(3):
            t += 1
            recorder.write(JOINTS, t, joint)
    recorder.close()
    elapsed = time.perf_counter() - start
    return dict(msgs=n_images * 4, bytes=recorder.bytes_written, seconds=elapsed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=4.0, help='publishing time per scenario')
    parser.add_argument('--quick', action='store_true', help='1 s per scenario, a writer baseline of 20 images')
    args = parser.parse_args()
    seconds, writer_images = (1.0, 20) if args.quick else (args.seconds, 200)
    domain = random.Random(os.getpid()).randrange(100, 200)
    with tempfile.TemporaryDirectory(prefix='record_bench_') as tmp:
        workdir = Path(tmp)
        base = writer_baseline(workdir, writer_images)
        w_mbs, w_rate = base['bytes'] / base['seconds'] / 1e6, base['msgs'] / base['seconds']
        print(f'writer baseline (BagRecorder in-process, no DDS): {w_mbs:8.1f} MB/s {w_rate:9.0f} msg/s')

        nominal = run_recorder('nominal', seconds, workdir, domain)
        print(f'nominal 30 Hz 640x480 images + 100 Hz joint states, {nominal["seconds"]:.1f} s:')
        print(f'  images {nominal["recorded_img"]}/{nominal["published_img"]} recorded, joint states '
              f'{nominal["recorded_js"]}/{nominal["published_js"]}; recorder-detected loss {nominal["gaps"]}, '
              f'dropped {nominal["dropped"]}; {nominal["bytes"] / nominal["seconds"] / 1e6:.1f} MB/s on disk')

        dds = run_counter(seconds, domain + 1)
        d_mbs, d_rate = dds['bytes'] / dds['seconds'] / 1e6, dds['received'] / dds['seconds']
        print(f'flood, DDS baseline (raw subscriber that only counts): received {dds["received"]}/'
              f'{dds["published"]} ({dds["published"] - dds["received"]} lost): {d_mbs:8.1f} MB/s {d_rate:9.0f} msg/s')

        flood = run_recorder('flood', seconds, workdir, domain + 2)
        f_mbs, f_rate = flood['bytes'] / flood['seconds'] / 1e6, flood['recorded'] / flood['seconds']
        print(f'flood, recorder: recorded {flood["recorded"]}/{flood["published"]} '
              f'({flood["published"] - flood["recorded"]} not recorded; recorder-detected loss {flood["gaps"]}, '
              f'dropped {flood["dropped"]}): {f_mbs:8.1f} MB/s {f_rate:9.0f} msg/s')
        print(f'ratios: recorder/DDS-baseline {f_mbs / d_mbs if d_mbs else float("nan"):.2f} (MB/s) '
              f'{f_rate / d_rate if d_rate else float("nan"):.2f} (msg/s); recorder/writer-baseline '
              f'{f_mbs / w_mbs:.2f} (MB/s) {f_rate / w_rate:.3f} (msg/s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
