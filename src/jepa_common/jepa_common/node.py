"""Entry-point helper shared by every node executable: init, spin, clean shutdown on Ctrl-C / SIGTERM."""
import signal
import sys
import threading
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def run_node(make_node: Callable[[], Node], args=None) -> int:
    """Create the node, spin it until SIGINT/SIGTERM, then call its optional `close()` and shut down.

    rclpy's own signal handler is not installed: it shuts the context down inside the signal, before the
    node's `close()` could run, and `close()` must still be able to publish (the safety gate's last word is
    a hold). Instead the executor spins in a worker thread while the main thread waits in Python, where
    signals are handled at once (a main thread blocked inside rcl's wait would see them only when the next
    callback fires). SIGTERM takes the same path as SIGINT, so launchers and Docker stop nodes cleanly and
    leave no DDS shared-memory files behind.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # Jazzy's rclpy.init() is not yet a context manager (it is from Kilted on), hence try/finally.
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    failure: list[BaseException] = []
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)

        def spin() -> None:
            try:
                executor.spin()
            except ExternalShutdownException:
                pass
            except BaseException as exc:  # re-raised in the main thread after the clean shutdown
                failure.append(exc)
            finally:
                stop.set()

        spinner = threading.Thread(target=spin, name='executor', daemon=True)
        spinner.start()
        while not stop.wait(0.5):
            pass
        # No callback runs once the executor is down, so close() never races one; the context is still
        # valid, so close() can publish.
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
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
