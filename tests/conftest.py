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
