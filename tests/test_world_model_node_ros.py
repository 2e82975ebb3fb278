"""world_model_node over real DDS: announces its checkpoint, predicts from latent + action, reports surprise
when the next latent arrives, answers batched Rollout requests, rejects bad input without dying, and loads a
new checkpoint on a parameter update."""
import array

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from jepa_interfaces.msg import ActionStamped, LatentState, Surprise
from jepa_interfaces.srv import Rollout
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from jepa_common.conversions import latent_to_msg, msg_to_latent
from jepa_world_model.model import read_checkpoint
from test_world_model_node_core import make_checkpoint

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _action(values, stamp: Time) -> ActionStamped:
    msg = ActionStamped(space='ee_delta', data=array.array('f', values))
    msg.header.stamp = stamp
    return msg


@pytest.mark.integration
def test_prediction_surprise_rollout_bad_input_and_reload(ros_graph, tmp_path):
    checkpoint = make_checkpoint(tmp_path / 'model.pt')
    _, model_id = read_checkpoint(checkpoint)
    node = ros_graph.start('world_model_node', 'world_model', params={'checkpoint': checkpoint, 'device': 'cpu'})
    versions = ros_graph.collect(String, '/world_model/model_version', LATCHED)
    predictions = ros_graph.collect(LatentState, '/jepa/prediction', 20)
    surprises = ros_graph.collect(Surprise, '/jepa/surprise', 20)
    diagnostics = ros_graph.collect(DiagnosticArray, '/diagnostics', 20)
    latent_pub = ros_graph.node.create_publisher(LatentState, '/jepa/latent', 10)
    action_pub = ros_graph.node.create_publisher(ActionStamped, '/jepa/action', 10)
    ros_graph.spin_until(lambda: versions, 30, 'the model version announcement')
    assert versions[-1].data == checkpoint
    ros_graph.spin_until(lambda: latent_pub.get_subscription_count() and action_pub.get_subscription_count(),
                         20, 'subscribers on /jepa/latent and /jepa/action')

    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal((2, 16)).astype(np.float32)
    latent_pub.publish(latent_to_msg(z0, Time(sec=10, nanosec=0), model_id))
    ros_graph.spin_for(0.2)
    action_pub.publish(_action([0.02, 0.0, -0.01, 1.0], Time(sec=10, nanosec=30_000_000)))
    ros_graph.spin_until(lambda: predictions, 20, 'a prediction')
    assert (predictions[0].header.stamp.sec, predictions[0].header.stamp.nanosec) == (10, 0)
    assert predictions[0].model_id == model_id and list(predictions[0].shape) == [16]
    predicted = msg_to_latent(predictions[0])
    latent_pub.publish(latent_to_msg(z1, Time(sec=10, nanosec=100_000_000), model_id))
    ros_graph.spin_until(lambda: surprises, 20, 'a surprise')
    surprise = surprises[0]
    assert (surprise.predicted_from.sec, surprise.predicted_from.nanosec) == (10, 0)
    assert surprise.header.stamp.nanosec == 100_000_000
    assert surprise.error == pytest.approx(float(np.mean((predicted - z1) ** 2)), rel=1e-4)
    assert surprise.normalized_error > 0

    request = Rollout.Request(start=latent_to_msg(z0, Time(sec=10), model_id), batch=8, horizon=5, action_dim=4)
    request.actions = array.array('f', rng.uniform(-0.03, 0.03, 8 * 5 * 4).astype(np.float32).tobytes())
    response = ros_graph.call(Rollout, '/world_model/rollout', request)
    assert response.success, response.message
    assert list(response.predicted.shape) == [8, 5, 16] and response.predicted.model_id == model_id
    rolled = msg_to_latent(response.predicted)
    assert np.all(np.isfinite(rolled)) and not np.allclose(rolled[0], rolled[1])

    # Bad input: wrong action count, a latent of another model, NaN, wrong action space.
    request.horizon = 6
    bad = ros_graph.call(Rollout, '/world_model/rollout', request)
    assert not bad.success and '160 action values' in bad.message

    def report():
        statuses = [s for d in diagnostics for s in d.status if s.name == '/world_model: predictor']
        return {v.key: v.value for v in statuses[-1].values} if statuses else {}
    ros_graph.spin_until(lambda: report().get('rollouts') == '1', 10, 'diagnostics counting the rollout')
    values = report()
    assert int(values['predictions']) >= 1 and int(values['surprises']) == 1 and values['model_id'] == model_id
    assert float(values['rollout_latency_p50_ms']) > 0
    latent_pub.publish(latent_to_msg(z1, Time(sec=11), 'other.pt@0123456789'))
    latent_pub.publish(latent_to_msg(np.full(16, np.nan, np.float32), Time(sec=12), model_id))
    bad_action = _action([0.0, 0.0, 0.0, 0.0], Time(sec=12))
    bad_action.space = 'joint_delta'
    action_pub.publish(bad_action)
    ros_graph.spin_for(1.0)
    output = node.output()
    assert "expected 'model.pt@" in output and 'NaN' in output and "action space 'joint_delta'" in output
    assert node.alive()

    # A new checkpoint through a parameter update: announced; a broken one is refused, the model kept.
    second = make_checkpoint(tmp_path / 'second.pt', seed=3)

    def set_checkpoint(path):
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=path)
        result = ros_graph.call(SetParameters, '/world_model/set_parameters',
                                SetParameters.Request(parameters=[Parameter(name='checkpoint', value=value)]))
        return result.results[0]

    assert set_checkpoint(second).successful
    ros_graph.spin_until(lambda: versions[-1].data == second, 20, 'the new model version')
    (tmp_path / 'broken.pt').write_bytes(b'garbage')
    refused = set_checkpoint(str(tmp_path / 'broken.pt'))
    assert not refused.successful and 'keeping the current model' in refused.reason
    request.horizon = 5
    again = ros_graph.call(Rollout, '/world_model/rollout', request)
    assert again.success is False and 'expected' in again.message  # start latent is of the old model
    request.start.model_id = ''
    again = ros_graph.call(Rollout, '/world_model/rollout', request)
    assert again.success and again.predicted.model_id == read_checkpoint(second)[1]
    assert node.stop() == 0
