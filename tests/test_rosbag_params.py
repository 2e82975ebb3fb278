"""recorder_node's parameters (in-process node, nothing recorded) and the replay's defaults, ROS-free where they
can be: every recorder parameter is declared from RecorderConfig with a description, read-only; relative topic
names resolve in the recorder's namespace and are recorded without it; the replay waits for discovery by
default."""
import pytest
from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter

from jepa_rosbag.recorder import RecorderConfig, RecorderError
from jepa_rosbag.recorder import bag_topic
from jepa_rosbag.recorder_node import RecorderNode
from jepa_rosbag.replay import DISCOVERY_TIMEOUT_S, parser, wait_for_discovery


@pytest.fixture
def context(rclpy_context):
    return rclpy_context


def test_recorder_parameters_are_described_read_only_and_topics_resolve_in_its_namespace(context, tmp_path):
    node = RecorderNode([Parameter('output', value=str(tmp_path / 'bag')),
                         Parameter('topics', value=['joint_states', 'camera/image_raw', '/clock'])],
                        context=context, namespace='/arm1')
    try:
        names = [f.name for f in RecorderConfig.__dataclass_fields__.values()]
        for name, descriptor in zip(names, node.describe_parameters(names)):
            assert descriptor.description and descriptor.read_only, name
            if descriptor.type in (ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_INTEGER):
                assert descriptor.floating_point_range or descriptor.integer_range, name
        # Subscribed in /arm1, recorded under the names a bag of the root namespace has.
        assert node.bag_names == {'/arm1/joint_states': '/joint_states',
                                  '/arm1/camera/image_raw': '/camera/image_raw', '/clock': '/clock'}
    finally:
        node.close()
        node.destroy_node()


@pytest.mark.parametrize('overrides, message', [({'storage': 'bag'}, 'storage must be one of mcap, sqlite3'),
                                                ({'topics': ['joint_states', '/joint_states']},
                                                 'share names in the bag')])
def test_recorder_refuses_settings_it_cannot_record_with(context, tmp_path, overrides, message):
    parameters = [Parameter('output', value=str(tmp_path / 'bag'))] + [Parameter(k, value=v)
                                                                       for k, v in overrides.items()]
    with pytest.raises(RecorderError, match=message):
        RecorderNode(parameters, context=context, namespace='/arm1')


def test_bag_topic_drops_the_recorders_namespace_only():
    assert bag_topic('/arm1/joint_states', '/arm1') == '/joint_states'
    assert bag_topic('/arm10/joint_states', '/arm1') == '/arm10/joint_states'
    assert bag_topic('/joint_states', '/') == '/joint_states'


class FakePublisher:
    def __init__(self, matched_at: float | None, clock):
        self.matched_at, self.clock = matched_at, clock

    def get_subscription_count(self) -> int:
        return int(self.matched_at is not None and self.clock.t >= self.matched_at)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_replay_waits_by_default_until_the_graphs_subscribers_have_matched():
    defaults = parser().parse_args(['bag'])
    assert defaults.discovery_timeout == DISCOVERY_TIMEOUT_S > 0 and not defaults.no_wait
    assert parser().parse_args(['bag', '--no-wait']).no_wait

    clock = FakeClock()
    # The graph shows one subscriber of joint_states from 0.3 s on (the replay learns the graph), matched at
    # 1.0 s; nobody subscribes to the camera: nothing to wait for there.
    publishers = {'/joint_states': FakePublisher(1.0, clock), '/camera/image_raw': FakePublisher(None, clock)}
    known = lambda topic: int(topic == '/joint_states' and clock.t >= 0.3)  # noqa: E731
    assert wait_for_discovery(publishers, known, timeout=3.0, settle=0.5, now=lambda: clock.t,
                              sleep=clock.sleep) == []
    assert 1.0 <= clock.t < 1.2

    # No subscriber at all: the wait is the settle time, not the timeout.
    clock.t = 0.0
    assert wait_for_discovery({'/camera/image_raw': FakePublisher(None, clock)}, lambda t: 0, timeout=3.0,
                              settle=0.5, now=lambda: clock.t, sleep=clock.sleep) == []
    assert 0.5 <= clock.t < 0.6

    # A subscriber that never matches (incompatible QoS): bounded by the timeout, and named.
    clock.t = 0.0
    assert wait_for_discovery({'/joint_states': FakePublisher(None, clock)}, lambda t: 1, timeout=3.0, settle=0.5,
                              now=lambda: clock.t, sleep=clock.sleep) == ['/joint_states']
    assert 3.0 <= clock.t < 3.1
