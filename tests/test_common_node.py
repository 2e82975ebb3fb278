"""jepa_common.node.run_node, the entry point of every node executable, in a process of its own: a stop signal
that comes while the main thread holds a lock still stops the node cleanly, and SIGUSR1 prints every thread's
stack without stopping it."""
import signal
import subprocess
import sys

import pytest

# The first time the main thread looks at run_node's stop event, a SIGINT comes while that thread holds the event's
# lock: Python runs the handler right there, between two bytecodes. A handler that took that lock (Event.set()
# does) would wait for the main thread, that is for itself, forever.
STOP_WHILE_LOCKED = '''
import os, signal, sys, threading, types
from rclpy.node import Node
import jepa_common.node as node_module


class SignalWhileLocked(threading.Event):
    fired = False

    def _signal(self):
        if threading.current_thread() is threading.main_thread() and not SignalWhileLocked.fired:
            SignalWhileLocked.fired = True
            with self._cond:
                os.kill(os.getpid(), signal.SIGINT)
                print("SIGINT handled while the main thread held the stop event's lock", flush=True)

    def wait(self, timeout=None):
        self._signal()
        return super().wait(timeout)

    def is_set(self):
        self._signal()
        return super().is_set()


node_module.threading = types.SimpleNamespace(Event=SignalWhileLocked, Thread=threading.Thread)
sys.exit(node_module.run_node(lambda: Node('stop_probe')))
'''

PLAIN_NODE = '''
import sys
from rclpy.node import Node
from jepa_common.node import run_node


def make():
    node = Node('stack_probe')
    print('node made', flush=True)
    return node


sys.exit(run_node(make))
'''


@pytest.mark.integration
def test_a_stop_signal_while_the_main_thread_holds_a_lock_stops_the_node(ros_graph):
    probe = ros_graph.run([sys.executable, '-c', STOP_WHILE_LOCKED], 'stop_probe')
    try:
        code = probe.proc.wait(20)
    except subprocess.TimeoutExpired:  # the fixture's shutdown kills it
        code = None
    assert code == 0, f'exit {code} after its SIGINT:\n{probe.output()[-3000:]}'
    assert "held the stop event's lock" in probe.output()


@pytest.mark.integration
def test_sigusr1_prints_every_threads_stack_and_the_node_runs_on(ros_graph):
    probe = ros_graph.run([sys.executable, '-c', PLAIN_NODE], 'stack_probe')
    ros_graph.spin_until(lambda: 'node made' in probe.output(), 20, 'the node')
    probe.proc.send_signal(signal.SIGUSR1)
    ros_graph.spin_until(lambda: 'in run_node' in probe.output(), 10, "the main thread's stack")
    assert probe.alive()
    assert probe.stop() == 0
