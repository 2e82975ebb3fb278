"""Entry-point helper shared by every node executable: init, spin, clean shutdown on Ctrl-C / SIGTERM."""
import faulthandler
import signal
import sys
import threading
import time
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

# How often the main thread looks whether a stop signal came or the executor ended.
STOP_POLL_S = 0.05


def run_node(make_node: Callable[[], Node], args=None) -> int:
    """Create the node, spin it until SIGINT/SIGTERM, then call its optional `close()` and shut down.

    rclpy's own signal handler is not installed: it shuts the context down inside the signal, before the
    node's `close()` could run, and `close()` must still be able to publish (the safety gate's last word is
    a hold). Instead the executor spins in a worker thread while the main thread waits in Python, where
    signals are handled at once (a main thread blocked inside rcl's wait would see them only when the next
    callback fires). SIGTERM takes the same path as SIGINT, so launchers and Docker stop nodes cleanly and
    leave no DDS shared-memory files behind.

    The signal handlers only note the signal; the main thread polls for it. A Python signal handler runs in the
    main thread between two of its bytecodes, also while that thread holds a lock: a handler that took one
    (threading.Event.set() takes the event's condition lock, which the main thread holds for a moment on every
    Event.wait) would then wait for the main thread, that is for itself, and the node would never stop.

    SIGUSR1 prints every thread's Python stack to stderr and the node runs on: what a node that does not stop
    is doing (the test harness asks before it kills one).
    """
    signals: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _: signals.append(number))
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Jazzy's rclpy.init() is not yet a context manager (it is from Kilted on), hence try/finally.
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    failure: list[BaseException] = []
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        # Set by the main thread on a signal, or by the spinner when the executor ended on its own.
        stop = threading.Event()

        def spin() -> None:
            # spin_once with a timeout, not spin(): the executor is shut down only once this loop has left it.
            # Shutting it down while another thread spins it races rclpy's cleanup of its guard conditions
            # (ros2/rclpy#968: a callback in flight then fails with "'NoneType' object has no attribute
            # 'trigger'", and a node that stopped cleanly exits with an error).
            try:
                while not stop.is_set() and executor.context.ok():
                    executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:
                pass
            except BaseException as exc:  # re-raised in the main thread after the clean shutdown
                # A node may end itself by shutting its context down (the recorder at its duration); what its
                # wait then raises is that ending, not a failure.
                if executor.context.ok():
                    failure.append(exc)
            finally:
                stop.set()

        spinner = threading.Thread(target=spin, name='executor', daemon=True)
        spinner.start()
        # Event.is_set() takes no lock.
        while not signals and not stop.is_set():
            time.sleep(STOP_POLL_S)
        stop.set()
        # The callback in flight finishes first; then no callback runs, so close() never races one; the
        # context is still valid, so close() can publish.
        spinner.join(timeout=5.0)
        executor.shutdown(timeout_sec=5.0)
        try:
            close = getattr(node, 'close', None)
            if callable(close):
                close()
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    if failure:
        raise failure[0]
    return 0
