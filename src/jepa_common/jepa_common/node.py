"""Entry-point helper shared by every node executable: init, spin, clean shutdown on Ctrl-C / SIGTERM."""
import signal
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def run_node(make_node: Callable[[], Node], args=None) -> int:
    """Create the node inside an rclpy context and spin it until shutdown.

    SIGTERM is turned into the same clean path as SIGINT so that launchers and Docker can stop nodes
    without leaving DDS shared-memory files behind. rclpy's own signal handler is not installed: it would
    shut the context down before the node's `close()` runs, and close() must still be able to publish
    (the safety gate's last word is a hold).
    """
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Jazzy's rclpy.init() is not yet a context manager (it is from Kilted on), hence try/finally.
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            close = getattr(node, 'close', None)
            if callable(close):
                close()
            executor.remove_node(node)
            node.destroy_node()
    finally:
        rclpy.try_shutdown()
    return 0
