import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from rosharness import RosGraph  # noqa: E402


@pytest.fixture
def ros_graph(tmp_path):
    """Real DDS in an isolated domain: start node processes, probe them from this process."""
    graph = RosGraph(tmp_path)
    yield graph
    graph.shutdown()


@pytest.fixture
def rclpy_context():
    """An rclpy context of this test's own, for nodes built in-process."""
    import rclpy
    from rclpy.context import Context
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a loaded 2-core machine OpenMP's spinning
    threads slow them down many times over."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
