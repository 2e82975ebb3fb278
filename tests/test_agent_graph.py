"""The whole simulated graph (`jepa launch sim`: simulator, gate and the six agent modules, each its own
process) comes up, every module's node and topics are alive, and the agent moves the arm toward a goal it is
shown as an image."""
import numpy as np
import pytest
from jepa_interfaces.msg import CostTerms, LatentState, Surprise

from jepa_bringup.episodes import Goal
from jepa_bringup.evaluate import Referee, perception_summary
from jepa_common.kinematics import ArmKinematics

AGENT_NODES = {'sim', 'safety', 'perception', 'world_model', 'cost', 'short_term_memory', 'actor', 'configurator'}


@pytest.mark.integration
def test_full_graph_is_alive_and_the_agent_reaches_toward_a_goal_image(ros_graph):
    graph = ros_graph.run(['jepa', 'launch', 'sim', 'task:=idle'], 'jepa_launch_sim')
    referee = Referee(ArmKinematics(), context=ros_graph.context)
    try:
        referee.wait_for_graph(120.0)
        # Names arrive by discovery, which can trail the nodes' services and topics by a few seconds.
        ros_graph.spin_until(lambda: AGENT_NODES <= set(ros_graph.node.get_node_names()), 10,
                             f'the nodes {sorted(AGENT_NODES)} in the ROS graph')

        referee.set_task('idle')
        referee.reset(seed=3)
        # A nearby goal (8-9 cm): this checks the closed loop (image -> latent -> plan -> gate -> arm), not
        # how far the planner can reach; `jepa eval` measures that.
        target = referee.ee + np.array([0.0, -0.06, 0.06])
        arm_q = referee.kinematics.ik(referee.q, target)
        goal = Goal('reach', referee.kinematics.fk(arm_q), arm_q, referee.cube.copy())
        start = np.linalg.norm(referee.ee - goal.target)
        streams = {}
        for topic, msg_type in (('/jepa/latent', LatentState), ('/jepa/prediction', LatentState),
                                ('/jepa/surprise', Surprise), ('/jepa/cost', CostTerms)):
            streams[topic] = []
            referee.create_subscription(msg_type, topic, streams[topic].append, 10)
        plans_before = len(referee.plans)
        referee.set_task('reach', referee.render_goal(goal), 'mode2')
        best = start
        for _ in range(40):  # 4 s of sim time
            referee.sleep_sim(0.1)
            best = min(best, np.linalg.norm(referee.ee - goal.target))
        referee.set_task('idle')
        for topic, received in streams.items():
            assert received, f'nothing on {topic}'
        assert len(referee.plans) - plans_before >= 10, 'the actor replans every control step'
        assert best < 0.6 * start, f'the arm did not move toward the goal: {start:.3f} m -> best {best:.3f} m'
        # What the eval reports of perception: its latency reports, CPU time within wall time.
        summary = perception_summary(referee.perception_reports)
        assert summary['reports'] >= 1, 'no latency report from perception on /diagnostics'
        assert 0 < summary['cpu_ms']['p50'] <= summary['latency_ms']['p50'] <= summary['latency_ms']['p95']
        assert graph.alive()
    finally:
        referee.close()
