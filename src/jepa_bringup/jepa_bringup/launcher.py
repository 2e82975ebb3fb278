"""`jepa launch sim|arm [name:=value ...]`: start a graph of config/graph.yaml without `ros2 launch`.

For the pip install, which has no launch/launch_ros. Each node runs as its own process with the ROS arguments
`ros2 launch` would give it (`--ros-args -r __node:=NAME [-r __ns:=/NS] --params-file F -p k:=v -r from:=to`); its
output is printed with a `[name]` prefix (`[/NS/name]` in a namespaced graph: `jepa launch sim namespace:=arm1`).
Ctrl-C (or SIGTERM) sends SIGINT to every node, waits, then escalates to SIGTERM and SIGKILL. A node that exits
on its own is reported with its exit code and last lines of output; it is restarted if the graph allows it
(`respawn`, with a doubling back-off), and if it is `required` (the safety gate, the simulator, the arm stand-in)
the whole graph is stopped: nothing may command the arm without the gate.
The exit status is 0 only if no node crashed, no required node exited and every node stopped when asked.
Nodes of packages that are not on PyPI (robot_state_publisher and tf2_ros, which give RViz the robot model and
TF) are left out with a one-line notice where they are not installed.
"""
import argparse
import collections
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from jepa_bringup.description import DescriptionError, materialize
from jepa_bringup.graph import GraphError, GraphFile, NodeSpec, parse_assignments

MAX_RESPAWN_DELAY = 30.0
# A node that ran this long before crashing starts again from the first back-off step.
STABLE_RUN_TIME = 30.0
TAIL_LINES = 20
CLEAN_STOP_CODES = (0, -signal.SIGINT, 128 + signal.SIGINT)
# s for a node that would not stop to print its threads' stacks (SIGUSR1) before it is killed.
STACK_DUMP_S = 1.0
_PR_SET_PDEATHSIG = 1


def ros_arguments(spec: NodeSpec) -> list[str]:
    """The command-line ROS arguments that give a node its name, params files, overrides and remaps."""
    args = ['--ros-args', '-r', f'__node:={spec.name}']
    if spec.namespace:
        args += ['-r', f'__ns:={spec.namespace}']
    for params_file in spec.params_files:
        args += ['--params-file', params_file]
    for key, value in spec.parameters.items():
        args += ['-p', f'{key}:={parameter_text(materialize(value))}']
    for src, dst in spec.remaps:
        args += ['-r', f'{src}:={dst}']
    return args


def parameter_text(value) -> str:
    """A parameter value as `-p` parses it (YAML): strings that would read as another type are quoted."""
    if isinstance(value, list) and not value:
        raise GraphError('a ROS parameter cannot be an empty list')
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text[:-len('...')].strip() if text.endswith('...') else text


def find_executable(spec: NodeSpec) -> str:
    """`lib/<package>/<executable>` under the package's install prefix (colcon, and the venv via
    scripts/setup_venv.sh), else the venv's bin/, else PATH."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    candidates = []
    try:
        candidates.append(Path(get_package_prefix(spec.package)) / 'lib' / spec.package / spec.executable)
    except PackageNotFoundError:
        pass
    candidates.append(Path(sys.prefix) / 'bin' / spec.executable)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(spec.executable)
    if found:
        return found
    raise GraphError(f'executable {spec.executable!r} of package {spec.package!r} (node {spec.name!r}) not found; '
                     f'is {spec.package} installed (make setup / colcon build)?')


def node_command(spec: NodeSpec) -> list[str]:
    """The node's command line: executable, its own arguments, ROS arguments. Values read from a URDF are read
    here, when the node is about to start."""
    try:
        return [find_executable(spec), *materialize(spec.args), *ros_arguments(spec)]
    except DescriptionError as error:
        raise GraphError(f'node {spec.name!r}: {error}') from error


def installed(specs: list[NodeSpec]) -> tuple[list[NodeSpec], list[NodeSpec]]:
    """(the nodes to start, the nodes left out): a node that requires a ROS install is left out where its
    executable is not found; any other missing executable is an error (GraphError)."""
    start, left_out = [], []
    for spec in specs:
        try:
            find_executable(spec)
        except GraphError:
            if not spec.requires_ros_install:
                raise
            left_out.append(spec)
        else:
            start.append(spec)
    return start, left_out


def left_out_notice(left_out: list[NodeSpec]) -> str:
    packages = sorted({s.package for s in left_out})
    return (f'not starting {", ".join(s.name for s in left_out)}: {" and ".join(packages)} are not on PyPI (a ROS '
            f'install has them), so RViz gets no robot model and no TF to place the plan and the camera with '
            f'(docs/launch.md, "RViz")')


def respawn_backoff(first_delay: float, crashes_in_a_row: int) -> float:
    """Seconds before restarting a node: the graph's respawn_delay, doubled for each further crash in a row."""
    return min(first_delay * 2 ** (crashes_in_a_row - 1), MAX_RESPAWN_DELAY)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f'killed by {signal.Signals(-code).name}'
        except ValueError:
            return f'killed by signal {-code}'
    return f'exit code {code}'


try:
    # Looked up here, not in the forked child: the child runs no more Python than two system calls.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def child_setup(nice: int):
    """What the child runs before exec: if the launcher itself is killed, get SIGTERM (run_node stops cleanly on
    it); and take the node's niceness (the graph's `nice`), so bookkeeping nodes yield the cores to the
    command path."""
    def setup() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if nice:
            os.nice(nice)
    return setup


class NodeProcess:
    """One node of the graph: its process (restarted as the graph allows) and the tail of its output."""

    def __init__(self, spec: NodeSpec, command: list[str], printer: 'Printer'):
        self.spec = spec
        self.command = command
        self.printer = printer
        self.label = f'{spec.namespace}/{spec.name}' if spec.namespace else spec.name
        self.proc: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.started_at = 0.0
        self.crashes_in_a_row = 0
        self.restart_at: float | None = None
        self.starts = 0

    def start(self, env: dict) -> None:
        self.proc = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, process_group=0,
                                     preexec_fn=child_setup(self.spec.nice))
        self.started_at = time.monotonic()
        self.restart_at = None
        self.starts += 1
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream) -> None:
        for raw in iter(stream.readline, b''):
            line = raw.decode(errors='replace').rstrip('\n')
            self.tail.append(line)
            self.printer.line(self.label, line)
        stream.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.running():
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def finish_output(self) -> None:
        if self.reader is not None:
            self.reader.join(timeout=2.0)


class Printer:
    """Serializes output lines of all nodes onto our stdout, each prefixed with its node name."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        with self.lock:
            try:
                self.stream.write(f'[{name}] {text}\n')
                self.stream.flush()
            except (OSError, ValueError):
                # Our stdout is gone (closed pipe): keep draining the nodes' pipes so they never block.
                pass

    def launcher(self, text: str) -> None:
        self.line('jepa launch', text)


class Launcher:
    def __init__(self, specs: list[NodeSpec], sigint_timeout: float = 10.0, sigterm_timeout: float = 5.0,
                 printer: Printer | None = None):
        self.printer = printer or Printer()
        specs, left_out = installed(specs)
        if left_out:
            self.printer.launcher(left_out_notice(left_out))
        self.nodes = [NodeProcess(s, node_command(s), self.printer) for s in specs]
        self.sigint_timeout = sigint_timeout
        self.sigterm_timeout = sigterm_timeout
        self.stop_requests = 0
        self.failed = False
        self.env = dict(os.environ, PYTHONUNBUFFERED='1')
        # Pip installs have no setup.bash; nodes find package data through the venv prefix.
        self.env.setdefault('AMENT_PREFIX_PATH', sys.prefix)

    def request_stop(self, signum=None, frame=None) -> None:
        self.stop_requests += 1

    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.request_stop)
        try:
            for node in self.nodes:
                node.start(self.env)
                self.printer.launcher(f'started {node.spec.name} (pid {node.proc.pid}): {" ".join(node.command)}')
            while not self.stop_requests and self._supervise():
                time.sleep(0.1)
        finally:
            self._stop_all()
        return 1 if self.failed else 0

    def _supervise(self) -> bool:
        """One pass over the nodes: report exits, restart what may be restarted. False: stop the graph."""
        now = time.monotonic()
        for node in self.nodes:
            if node.proc is None or node.restart_at is not None or node.proc.poll() is None:
                continue
            node.finish_output()
            code = node.proc.returncode
            ran = now - node.started_at
            tail = '\n'.join(f'    {line}' for line in node.tail) or '    (no output)'
            self.printer.launcher(f'{node.spec.name} exited ({describe_exit(code)}) after {ran:.1f} s; '
                                  f'its last output:\n{tail}')
            if code != 0:
                self.failed = True
            if node.spec.required:
                self.failed = True
                node.proc = None
                self.printer.launcher(f'{node.spec.name} is required: stopping the whole graph')
                return False
            if node.spec.respawn:
                node.crashes_in_a_row = 1 if ran >= STABLE_RUN_TIME else node.crashes_in_a_row + 1
                delay = respawn_backoff(node.spec.respawn_delay, node.crashes_in_a_row)
                node.restart_at = now + delay
                self.printer.launcher(f'restarting {node.spec.name} in {delay:.1f} s')
            else:
                node.proc = None
        for node in self.nodes:
            if node.restart_at is not None and now >= node.restart_at:
                node.tail.clear()
                node.start(self.env)
                self.printer.launcher(f'restarted {node.spec.name} (pid {node.proc.pid}, start #{node.starts})')
        if not any(node.proc is not None for node in self.nodes):
            self.printer.launcher('no node is left running')
            return False
        return True

    def _stop_all(self) -> None:
        """SIGINT to every node, then SIGTERM, then SIGKILL to those still running after each grace period;
        just before SIGKILL, SIGUSR1, on which a node run by jepa_common.node.run_node prints every thread's stack:
        the log then says where a node that would not stop was stuck. Another Ctrl-C during the wait skips to the
        next step."""
        steps = ((signal.SIGINT, self.sigint_timeout), (signal.SIGTERM, self.sigterm_timeout),
                 (signal.SIGUSR1, STACK_DUMP_S), (signal.SIGKILL, 5.0))
        for signum, grace in steps:
            running = [n for n in self.nodes if n.running()]
            if not running:
                break
            if signum != signal.SIGINT:
                self.failed = True
                self.printer.launcher(f'{", ".join(n.spec.name for n in running)} still running: '
                                      f'sending {signum.name}'
                                      + (" (its threads' stacks follow)" if signum == signal.SIGUSR1 else ''))
            for node in running:
                node.signal(signum)
            requests = self.stop_requests
            end = time.monotonic() + grace
            while time.monotonic() < end and any(n.running() for n in running) and self.stop_requests == requests:
                time.sleep(0.05)
        for node in self.nodes:
            if node.proc is None:
                continue
            node.proc.wait()
            node.finish_output()
            code = node.proc.returncode
            if node.restart_at is None and code not in CLEAN_STOP_CODES:
                self.failed = True
                self.printer.launcher(f'{node.spec.name} did not stop cleanly ({describe_exit(code)})')
        self.printer.launcher('all nodes stopped' + (' (with failures, see above)' if self.failed else ''))


def _print_arguments(graph_file: GraphFile, graph: str) -> None:
    print(f'{graph}: {graph_file.description(graph)}\nArguments (name:=value):')
    for arg in graph_file.arguments(graph).values():
        choices = f' [{", ".join(arg.choices)}]' if arg.choices else ''
        print(f'  {arg.name}{choices}  default: {arg.default!r}\n      {arg.description}')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='jepa launch', description='Start a graph of config/graph.yaml (sim, arm), one process per node. '
        'Ctrl-C stops every node.')
    parser.add_argument('graph', help='graph name (sim, arm, ...)')
    parser.add_argument('arguments', nargs='*', metavar='name:=value', help='launch arguments')
    parser.add_argument('--graph-file', help='graph description (default: the installed config/graph.yaml)')
    parser.add_argument('--show-args', action='store_true', help='list the graph\'s launch arguments and exit')
    parser.add_argument('--print', dest='print_only', action='store_true',
                        help='print the node command lines and exit without starting anything')
    parser.add_argument('--sigint-timeout', type=float, default=10.0,
                        help='seconds a node gets to stop after SIGINT before SIGTERM (default 10)')
    parser.add_argument('--sigterm-timeout', type=float, default=5.0,
                        help='seconds after SIGTERM before SIGKILL (default 5)')
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    try:
        graph_file = GraphFile(args.graph_file)
        if args.show_args:
            _print_arguments(graph_file, args.graph)
            return 0
        values = graph_file.argument_values(args.graph, parse_assignments(args.arguments))
        specs = graph_file.resolve(args.graph, values)
        if not specs:
            raise GraphError(f'graph {args.graph!r} has no node to start with these arguments')
        if args.print_only:
            specs, left_out = installed(specs)
            if left_out:
                print(f'jepa launch: {left_out_notice(left_out)}', file=sys.stderr)
            for spec in specs:
                print(' '.join(node_command(spec)))
            return 0
        launcher = Launcher(specs, args.sigint_timeout, args.sigterm_timeout)
    except GraphError as error:
        print(f'jepa launch: {error}', file=sys.stderr)
        return 2
    launcher.printer.launcher(f'graph {args.graph} from {graph_file.path}: '
                              + ', '.join(f'{k}:={v}' for k, v in values.items()))
    return launcher.run()


if __name__ == '__main__':
    sys.exit(main())
