"""The harness itself: a process in the test's own domain is heard; one in another domain is not."""
import pytest
from std_msgs.msg import String

from rosharness import RosGraph

# SIGINT reaches a spinning rclpy either as KeyboardInterrupt or, when rclpy's own handler shuts the context
# down first, as ExternalShutdownException: both are a clean stop.
TALKER = ('import rclpy, sys\n'
          'from rclpy.executors import ExternalShutdownException\n'
          'from std_msgs.msg import String\n'
          'rclpy.init()\n'
          'n = rclpy.create_node("talker")\n'
          'p = n.create_publisher(String, "chatter", 10)\n'
          'n.create_timer(0.1, lambda: p.publish(String(data="hello")))\n'
          'try:\n'
          '    rclpy.spin(n)\n'
          'except (KeyboardInterrupt, ExternalShutdownException):\n'
          '    pass\n'
          'rclpy.try_shutdown()\n')


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
