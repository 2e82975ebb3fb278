"""Frame -> command latency the split adds when the inference graph runs on another host.

Two hosts on this machine: two network namespaces joined by a veth pair (needs root and iproute2's `ip`). The
robot's computer (namespace A) runs `jepa launch sim_host` (simulator, safety gate, short-term memory,
configurator); the inference host runs `jepa launch inference` (perception, world model, cost, actor), in the same
ROS_DOMAIN_ID, Fast DDS discovering across the link (ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET, multicast; or
--static-peers: LOCALHOST range plus ROS_STATIC_PEERS naming the other host, the unicast-only setting). Phases
alternate, --rounds times:

- one host: both graphs in namespace A (DDS within one host: shared memory and loopback),
- split: sim_host in A, inference in B (DDS over the veth).

In each phase an observer in namespace A waits for the first command, then for --seconds pairs every jepa/action
(stamped with the stamp of the camera frame it was chosen from; the actor publishes it right after the command,
on the same thread) with that frame's arrival in A: the wall time from the frame leaving the simulator to its
command reaching the robot's computer, both crossings of the link included. It also counts the commands the gate
forwarded to the arm and the bytes the veth carried. Prints p50 / p95 per phase and the split's ratio to one
host; --netem-delay-ms adds `tc qdisc netem` delay on both ends of the veth (a real link's; kernels without
sch_netem refuse it). --json writes every figure with provenance.

    sudo nice -n 19 .venv/bin/python bench/two_host_latency.py [--rounds 2] [--seconds 20] [--quick]

Without root or `ip` (or where the kernel refuses namespaces) it prints why and exits 0 without figures.
"""
import argparse
import collections
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from jepa_bringup.launcher import child_setup

REPO = Path(__file__).resolve().parents[1]
# The veth's two ends: each pair of namespaces is a network of its own, so every run may use the same addresses.
ADDRESSES = {'A': '10.213.0.1', 'B': '10.213.0.2'}
GRAPH_STOP_TIMEOUT = 15.0
# The nodes of the inference graph (graph.yaml `inference`).
INFERENCE_NODES = {'perception', 'world_model', 'cost', 'actor'}


def namespaces_unavailable() -> str | None:
    """Why two network namespaces cannot be made here, or None when they can (tried, then removed)."""
    if not sys.platform.startswith('linux'):
        return f'network namespaces are Linux only (this is {sys.platform})'
    if shutil.which('ip') is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return 'creating network namespaces needs root (CAP_SYS_ADMIN); run as root'
    probe = f'jepa2h_probe_{os.getpid()}'
    made = subprocess.run(['ip', 'netns', 'add', probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f'`ip netns add` failed here: {made.stderr.strip()}'
    subprocess.run(['ip', 'netns', 'del', probe], capture_output=True)
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(['ip', *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f'ip {" ".join(args)}: {result.stderr.strip()}')


class TwoHosts:
    """Namespaces A (the robot's computer) and B (the inference host), a veth pair between them (ADDRESSES, a
    /24), loopbacks up. Closing stops every process still inside them (those started here: nothing else can be
    in them) and deletes them, which deletes the veth too."""

    def __init__(self, tag: str = ''):
        suffix = f'{os.getpid() % 100000}{tag}'
        self.names = {'A': f'jepa2h_a{suffix}', 'B': f'jepa2h_b{suffix}'}
        # Interface names: at most 15 characters.
        self.links = {'A': f'j2h{suffix}a'[:15], 'B': f'j2h{suffix}b'[:15]}
        self.addresses = dict(ADDRESSES)
        self.processes: list[subprocess.Popen] = []
        self.made: list[str] = []

    def __enter__(self) -> 'TwoHosts':
        try:
            for side in 'AB':
                _ip('netns', 'add', self.names[side])
                self.made.append(self.names[side])
            _ip('link', 'add', self.links['A'], 'netns', self.names['A'], 'type', 'veth',
                'peer', 'name', self.links['B'], 'netns', self.names['B'])
            for side in 'AB':
                _ip('-n', self.names[side], 'addr', 'add', f'{self.addresses[side]}/24', 'dev', self.links[side])
                _ip('-n', self.names[side], 'link', 'set', 'lo', 'up')
                _ip('-n', self.names[side], 'link', 'set', self.links[side], 'up')
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def peer(self, side: str) -> str:
        return self.addresses['B' if side == 'A' else 'A']

    def popen(self, side: str, argv: list[str], env: dict, **kwargs) -> subprocess.Popen:
        """argv run inside namespace `side` (`ip netns exec` execs it: the Popen is the command itself)."""
        # Its own process group (stopped as one), and SIGTERM should this process die first (launchers then stop
        # their nodes): nothing outlives the run.
        proc = subprocess.Popen(['ip', 'netns', 'exec', self.names[side], *argv], env=env, start_new_session=True,
                                preexec_fn=child_setup(0), **kwargs)
        self.processes.append(proc)
        return proc

    def netem_delay(self, ms: float) -> None:
        for side in 'AB':
            try:
                _ip('netns', 'exec', self.names[side], 'tc', 'qdisc', 'add', 'dev', self.links[side], 'root',
                    'netem', 'delay', f'{ms}ms')
            except RuntimeError as error:
                raise RuntimeError(f'{error} (this kernel has no sch_netem: run without --netem-delay-ms)') from None

    def tx_bytes(self, side: str) -> int:
        """Bytes namespace `side` has sent over the veth."""
        shown = subprocess.run(['ip', '-n', self.names[side], '-j', '-s', 'link', 'show', 'dev', self.links[side]],
                               capture_output=True, text=True, check=True).stdout
        return int(json.loads(shown)[0]['stats64']['tx']['bytes'])

    def stop_processes(self) -> None:
        """SIGINT to what was started here (launchers stop their nodes), then SIGKILL to whatever is left inside
        the namespaces, by process id."""
        for proc in self.processes:
            if proc.poll() is None:  # not reaped yet: its process group id is still its own
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + GRAPH_STOP_TIMEOUT
        for proc in self.processes:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for name in self.made:
            pids = subprocess.run(['ip', 'netns', 'pids', name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in self.processes:
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()

    def close(self) -> None:
        self.stop_processes()
        for name in reversed(self.made):
            subprocess.run(['ip', 'netns', 'del', name], capture_output=True)
        self.made.clear()


def host_env(hosts: TwoHosts, side: str, domain: int, static_peers: bool) -> dict:
    """The environment of a process on host `side`: the shared domain, discovery over the subnet (multicast) or,
    with static_peers, on localhost plus the other host named as a unicast peer."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED='1')
    # A child must set up its own ROS library path, not inherit this interpreter's bootstrap marker.
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)
    env.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    env.pop('ROS_STATIC_PEERS', None)
    if static_peers:
        env.update(ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', ROS_STATIC_PEERS=hosts.peer(side))
    else:
        env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'SUBNET'
    return env


def launch(hosts: TwoHosts, side: str, graph: str, env: dict, log: Path) -> subprocess.Popen:
    """`jepa launch GRAPH` on host `side`, its output to `log`."""
    argv = [sys.executable, '-m', 'jepa_bringup.cli', 'launch', graph, '--sigint-timeout', '5',
            '--sigterm-timeout', '3']
    with open(log, 'w') as out:
        return hosts.popen(side, argv, env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


def observe(seconds: float, wait: float) -> dict:
    """In this process's namespace: wait up to `wait` s for the first command through the graph, then measure
    for `seconds` s. frame -> command: wall time from a camera frame's arrival here to the arrival of the
    jepa/action stamped with its stamp. The time of the first command is the wall clock's (time.time)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from trajectory_msgs.msg import JointTrajectory

    from jepa_common.qos import RELIABLE, SENSOR
    from jepa_interfaces.msg import ActionStamped

    rclpy.init()
    node = rclpy.create_node('two_host_observer')
    frames: collections.OrderedDict[int, float] = collections.OrderedDict()
    latencies: list[float] = []
    counts = collections.Counter()
    # Wall-clock time (time.time, comparable across processes) of the first command; measuring after it.
    state = {'first_command': None, 'measuring': False}

    def stamp_ns(stamp) -> int:
        return stamp.sec * 1_000_000_000 + stamp.nanosec

    def on_image(msg: Image) -> None:
        frames[stamp_ns(msg.header.stamp)] = time.perf_counter()
        while len(frames) > 200:
            frames.popitem(last=False)
        counts['frames'] += state['measuring']

    def on_action(msg: ActionStamped) -> None:
        arrived = time.perf_counter()
        if state['first_command'] is None:
            state['first_command'] = time.time()
        if not state['measuring']:
            return
        counts['commands'] += 1
        frame = frames.get(stamp_ns(msg.header.stamp))
        if frame is not None:
            latencies.append((arrived - frame) * 1e3)

    def on_gate_output(msg: JointTrajectory) -> None:
        # A hold has no points; a forwarded command has one.
        counts['gate_forwarded'] += bool(msg.points) and state['measuring']

    node.create_subscription(Image, 'camera/image_raw', on_image, SENSOR)
    node.create_subscription(ActionStamped, 'jepa/action', on_action, RELIABLE)
    node.create_subscription(JointTrajectory, 'arm_controller/joint_trajectory', on_gate_output, RELIABLE)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + wait
    while state['first_command'] is None and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    seen: set[str] = set()

    def look() -> None:
        seen.update(n for n in node.get_node_names() if n != 'two_host_observer')
    if state['first_command'] is not None:
        state['measuring'] = True
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
            look()
        # Discovery runs per participant: a node may be heard of here well after the commands it helps make
        # (seconds on a loaded machine), so the graph is watched a while longer for the inference nodes.
        end = time.monotonic() + wait
        while not INFERENCE_NODES <= seen and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
            look()
    look()
    nodes = sorted(seen)
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown()
    return {'first_command_time': state['first_command'], 'seconds': seconds, 'frames': counts['frames'],
            'commands': counts['commands'], 'gate_forwarded': counts['gate_forwarded'],
            'latencies_ms': latencies, 'nodes': nodes}


def run_phase(hosts: TwoHosts, split: bool, domain: int, seconds: float, wait: float, log_dir: Path,
              static_peers: bool = False) -> dict:
    """Start sim_host in A and inference in A (one host) or B (split), observe in A, stop both graphs. Returns
    the observer's figures plus the bytes each namespace sent over the veth during the phase."""
    name = 'split' if split else 'one_host'
    inference_side = 'B' if split else 'A'
    sent_before = {side: hosts.tx_bytes(side) for side in 'AB'}
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    launch(hosts, 'A', 'sim_host', host_env(hosts, 'A', domain, static_peers), log_dir / f'{name}_sim_host.log')
    launch(hosts, inference_side, 'inference', host_env(hosts, inference_side, domain, static_peers),
           log_dir / f'{name}_inference.log')
    observer = hosts.popen('A', [sys.executable, str(Path(__file__).resolve()), '--observe', str(seconds),
                                 '--wait', str(wait)], host_env(hosts, 'A', domain, static_peers),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = observer.communicate(timeout=wait + seconds + 60)
    finally:
        hosts.stop_processes()
    if observer.returncode != 0 or not out.strip():
        raise RuntimeError(f'the observer failed ({observer.returncode}):\n{err[-3000:]}')
    result = json.loads(out.strip().splitlines()[-1])
    first = result.pop('first_command_time')
    result['first_command_s'] = None if first is None else first - launched
    result['veth_sent_bytes'] = {side: hosts.tx_bytes(side) - sent_before[side] for side in 'AB'}
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Every process of the phase (launchers wait for their nodes): what the phase cost the machine.
    result['cpu_s'] = cpu.ru_utime + cpu.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
    result['phase'] = name
    return result


def summary(latencies: list[float]) -> dict:
    if not latencies:
        return {'n': 0, 'p50_ms': None, 'p95_ms': None, 'mean_ms': None}
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {'n': len(ordered), 'p50_ms': statistics.median(ordered), 'p95_ms': p95,
            'mean_ms': statistics.fmean(ordered)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=2, help='one-host / split phase pairs (default 2)')
    parser.add_argument('--seconds', type=float, default=20.0, help='measured seconds per phase (default 20)')
    parser.add_argument('--wait', type=float, default=90.0,
                        help='seconds a phase may take from launch to the first command (default 90)')
    parser.add_argument('--domain', type=int, default=None,
                        help='ROS_DOMAIN_ID inside the namespaces (default: ROS_DOMAIN_ID, else 42; the namespaces '
                        'are isolated from this machine\'s other DDS traffic either way)')
    parser.add_argument('--static-peers', action='store_true',
                        help='discover by ROS_STATIC_PEERS (unicast) with the LOCALHOST range instead of SUBNET '
                        'multicast')
    parser.add_argument('--netem-delay-ms', type=float, default=0.0,
                        help='one-way delay added on each end of the veth with tc netem (default 0: none)')
    parser.add_argument('--json', type=Path, help='write every figure and the provenance here')
    parser.add_argument('--logs', type=Path, default=Path('runs/two_host_latency'),
                        help='folder for the graphs\' output (default runs/two_host_latency)')
    parser.add_argument('--quick', action='store_true', help='one round of 3 s phases')
    parser.add_argument('--observe', type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.observe is not None:
        print(json.dumps(observe(args.observe, args.wait)))
        return 0
    for name in ('rounds', 'seconds', 'wait'):
        if not getattr(args, name) > 0:
            parser.error(f'--{name} must be > 0, got {getattr(args, name)}')
    if args.netem_delay_ms < 0:
        parser.error(f'--netem-delay-ms must be >= 0, got {args.netem_delay_ms}')
    domain = args.domain if args.domain is not None else int(os.environ.get('ROS_DOMAIN_ID') or 42)
    if not 0 <= domain <= 232:
        parser.error(f'--domain must be 0..232, got {domain}')
    rounds, seconds = (1, 3.0) if args.quick else (args.rounds, args.seconds)
    reason = namespaces_unavailable()
    if reason:
        print(f'two hosts on one machine: not measured: {reason}')
        return 0

    from jepa_bringup.provenance import machine_load, provenance
    record = provenance([sys.executable, *sys.argv])
    record.update(rounds=rounds, seconds_per_phase=seconds, domain=domain, netem_delay_ms=args.netem_delay_ms,
                  discovery='LOCALHOST + ROS_STATIC_PEERS' if args.static_peers else 'SUBNET (multicast)')
    args.logs.mkdir(parents=True, exist_ok=True)
    discovery = record['discovery']
    print(f'two hosts: namespaces joined by a veth; ROS_DOMAIN_ID {domain}; discovery {discovery}; '
          f'netem delay {args.netem_delay_ms} ms each way; {rounds} round(s) of {seconds:.0f} s per phase; '
          f'commit {record["git"]["commit"][:12]}{" (dirty)" if record["git"]["dirty"] else ""}; '
          f'{record["machine"]["cores"]} cores; load {os.getloadavg()[0]:.2f}')
    phases = []
    with TwoHosts() as hosts:
        if args.netem_delay_ms:
            try:
                hosts.netem_delay(args.netem_delay_ms)
            except RuntimeError as error:
                print(f'two_host_latency: --netem-delay-ms: {error}', file=sys.stderr)
                return 2
        for round_ in range(rounds):
            for split in (False, True):
                result = run_phase(hosts, split, domain, seconds, args.wait, args.logs, args.static_peers)
                result['round'] = round_
                phases.append(result)
                figures = summary(result['latencies_ms'])
                first = result['first_command_s']
                if first is None:
                    print(f'round {round_} {result["phase"]:8s}: no command within {args.wait:.0f} s '
                          f'(graph logs in {args.logs})')
                    continue
                print(f'round {round_} {result["phase"]:8s}: first command {first:5.1f} s after launch; '
                      f'frame -> command p50 {figures["p50_ms"]:6.1f} p95 {figures["p95_ms"]:6.1f} ms over '
                      f'{figures["n"]} commands; gate forwarded {result["gate_forwarded"]}; veth A->B '
                      f'{result["veth_sent_bytes"]["A"] / 1e6:.1f} MB, B->A '
                      f'{result["veth_sent_bytes"]["B"] / 1e6:.1f} MB; {result["cpu_s"]:.0f} s CPU')
    pooled = {name: summary([v for p in phases if p['phase'] == name for v in p['latencies_ms']])
              for name in ('one_host', 'split')}
    record['load_end'] = machine_load()
    record.update(phases=phases, pooled=pooled)
    one, split = pooled['one_host'], pooled['split']
    if one['n'] and split['n']:
        ratios = {k: split[k] / one[k] for k in ('p50_ms', 'p95_ms')}
        record['split_over_one_host'] = ratios
        print(f'frame -> command, one host: p50 {one["p50_ms"]:.1f} p95 {one["p95_ms"]:.1f} ms (n {one["n"]}); '
              f'split over the veth: p50 {split["p50_ms"]:.1f} p95 {split["p95_ms"]:.1f} ms (n {split["n"]})')
        print(f'split / one host: p50 {ratios["p50_ms"]:.2f}x, p95 {ratios["p95_ms"]:.2f}x; added p50 '
              f'{split["p50_ms"] - one["p50_ms"]:+.1f} ms')
    else:
        print('frame -> command: not measured in both phases (see above)')
    print(f'load {record["load_start"]["loadavg_1_5_15"][0]:.2f} -> {record["load_end"]["loadavg_1_5_15"][0]:.2f}')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))
    return 0 if one['n'] and split['n'] else 1


if __name__ == '__main__':
    sys.exit(main())
