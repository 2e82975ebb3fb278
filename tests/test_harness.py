"""The harness itself: a process in the test's own domain is heard; one in another domain is not."""
import pytest
from std_msgs.msg import String

from rosharness import RosGraph

# The talker stops the way every jepa node does (run_node): with rclpy's own signal handler and a plain
# rclpy.spin, SIGINT can land in the executor's cleanup race (ros2/rclpy#968) and the process exits 1.
TALKER = ('import sys\n'
          'from rclpy.node import Node\n'
          'from std_msgs.msg import String\n'
          'from jepa_common.node import run_node\n'
          'class Talker(Node):\n'
          '    def __init__(self):\n'
          '        super().__init__("talker")\n'
          '        publisher = self.create_publisher(String, "chatter", 10)\n'
          '        self.create_timer(0.1, lambda: publisher.publish(String(data="hello")))\n'
          'sys.exit(run_node(Talker))\n')


@pytest.mark.integration
def test_process_in_same_domain_is_heard_and_other_domain_is_not(ros_graph, tmp_path):
    import sys
    heard = ros_graph.collect(String, 'chatter')
    talker = ros_graph.run([sys.executable, '-c', TALKER], 'talker')
    ros_graph.spin_until(lambda: len(heard) >= 3, 15, 'chatter messages')
    assert heard[0].data == 'hello'
    assert talker.stop() == 0

    other = RosGraph(tmp_path / 'other')
    try:
        other_heard = other.collect(String, 'chatter')
        ros_graph.run([sys.executable, '-c', TALKER], 'talker2')
        other.spin_for(3.0)
        assert other_heard == []
    finally:
        other.shutdown()
