"""Test harness: start real node executables as separate processes over real DDS, and talk to them from
an rclpy node inside the test process. Each test gets its own ROS_DOMAIN_ID so tests never hear each other.
"""
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

VENV_BIN = Path(sys.prefix) / 'bin'
REPO = Path(__file__).resolve().parents[1]
# Start from a random point so two pytest runs on one machine are unlikely to share domains.
_domains = itertools.cycle(range(1, 233))
for _ in range(random.Random(os.getpid()).randrange(232)):
    next(_domains)


def next_domain_id() -> int:
    return next(_domains)


def ros_env(domain_id: int) -> dict:
    env = dict(os.environ)
    # A child of this (already bootstrapped) interpreter must bootstrap itself again.
    env.pop('_ROS_WHEELS_BOOTSTRAP_COMPLETE', None)
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env['PYTHONUNBUFFERED'] = '1'
    env.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    return env


class NodeProcess:
    """A node executable (or any command) running in its own process, stopped with SIGINT."""

    def __init__(self, cmd: list[str], domain_id: int, log_dir: Path, name: str, extra_env: dict | None = None):
        self.name = name
        self.log_path = Path(log_dir) / f'{name}.log'
        env = ros_env(domain_id)
        env.update(extra_env or {})
        exe = cmd[0] if os.path.isabs(cmd[0]) or '/' in cmd[0] else str(VENV_BIN / cmd[0])
        self._log = open(self.log_path, 'w')
        self.stopped = False
        self.proc = subprocess.Popen([exe, *cmd[1:]], env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=REPO, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, and SIGKILL after `timeout`; -> the exit status. One that did not stop first prints every thread's
        stack into its log (run_node does on SIGUSR1): what kept it from stopping."""
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)
                time.sleep(2.0)
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def node_cmd(executable: str, node_name: str | None = None, params: dict | None = None,
             params_file: str | None = None, remaps: dict | None = None, extra_args: list[str] | None = None) -> list[str]:
    """Command line for a node executable with ROS arguments, as a launcher would build it."""
    args = [executable, *(extra_args or []), '--ros-args']
    if node_name:
        args += ['-r', f'__node:={node_name}']
    if params_file:
        args += ['--params-file', params_file]
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            value = 'true' if value else 'false'
        elif isinstance(value, (list, tuple)):
            value = '[' + ','.join(repr(v) if isinstance(v, str) else str(v) for v in value) + ']'
        args += ['-p', f'{key}:={value}']
    for src, dst in (remaps or {}).items():
        args += ['-r', f'{src}:={dst}']
    return args


class RosGraph:
    """One test's ROS world: a domain id, the processes started in it, and a probe node in this process."""

    def __init__(self, log_dir: Path):
        self.domain_id = next_domain_id()
        self.log_dir = Path(log_dir)
        self.processes: list[NodeProcess] = []
        self.context = Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.node = Node('test_probe', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        # One client per service: a new client has to discover the server again, which under load takes seconds.
        self.clients: dict[str, object] = {}

    def start(self, executable: str, name: str | None = None, **kwargs) -> NodeProcess:
        proc = NodeProcess(node_cmd(executable, node_name=name, **kwargs), self.domain_id, self.log_dir,
                           name or executable)
        self.processes.append(proc)
        return proc

    def run(self, cmd: list[str], name: str, extra_env: dict | None = None) -> NodeProcess:
        proc = NodeProcess(cmd, self.domain_id, self.log_dir, name, extra_env)
        self.processes.append(proc)
        return proc

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.05, max(0.0, end - time.monotonic())))

    def spin_until(self, predicate, timeout: float, what: str = 'condition') -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            self.executor.spin_once(timeout_sec=0.05)
            for p in self.processes:
                if not p.stopped and not p.alive():
                    raise AssertionError(f'{p.name} died while waiting for {what}:\n{p.output()[-3000:]}')
        if not predicate():
            logs = '\n'.join(f'--- {p.name}\n{p.output()[-2000:]}' for p in self.processes)
            raise AssertionError(f'timed out after {timeout}s waiting for {what}\n{logs}')

    def collect(self, msg_type, topic: str, qos=10) -> list:
        received = []
        self.node.create_subscription(msg_type, topic, received.append, qos)
        return received

    def call(self, srv_type, name: str, request, timeout: float = 20.0):
        if name not in self.clients:
            self.clients[name] = self.node.create_client(srv_type, name)
        client = self.clients[name]
        self.spin_until(client.service_is_ready, timeout, f'service {name}')
        future = client.call_async(request)
        self.spin_until(future.done, timeout, f'response of {name}')
        return future.result()

    def shutdown(self) -> None:
        codes = {p.name: p.stop() for p in self.processes if not p.stopped}
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        return codes
