"""ROS-free parts of `jepa eval`: seeded goals, the oracle/random reference policies, the graph's camera, the
report's summary and provenance."""
import hashlib
import json

import numpy as np
import pytest
import yaml

from jepa_bringup.episodes import PUSH_CLIP_SLACK, PUSH_DISTANCE, PUSH_REGION, RADII, REACH_REGION, REACH_STEPS, \
    DistanceTrace, OraclePolicy, RandomPolicy, episode_steps, final_distance, make_goal, sim_camera, summarize, \
    verdict
from jepa_bringup.evaluate import condition_seeds, graph_camera
from jepa_bringup.provenance import files_sha256, provenance
from jepa_common.kinematics import PANDA_HOME, ArmKinematics


@pytest.fixture(scope='module')
def kinematics():
    return ArmKinematics()


def test_goals_are_seeded_and_inside_their_regions(kinematics):
    q, cube = np.array(PANDA_HOME), np.array([0.5, 0.0, 0.025])
    for seed in range(5):
        a, b = make_goal('reach', seed, kinematics, q, cube), make_goal('reach', seed, kinematics, q, cube)
        np.testing.assert_allclose(a.target, b.target)
        for (lo, hi), value in zip(REACH_REGION, a.target):
            assert lo - 0.01 <= value <= hi + 0.01  # the IK reaches the sampled point within a centimetre
        push = make_goal('push', seed, kinematics, q, cube)
        assert PUSH_DISTANCE[0] - 1e-9 <= np.linalg.norm(push.target[:2] - cube[:2]) <= PUSH_DISTANCE[1] + 1e-9
    assert not np.allclose(make_goal('reach', 0, kinematics, q, cube).target,
                           make_goal('reach', 1, kinematics, q, cube).target)


def test_a_reach_goal_shows_the_posture_the_action_interface_gives_at_its_target(kinematics):
    # The arm starts away from home: a one-off IK solve from there leaves elbow and wrist where straight
    # ee_delta steps (the agent's and the oracle's interface) do not; the goal image must show one it can reach.
    q = np.array(PANDA_HOME) + np.array([0.3, 0.2, -0.3, 0.2, 0.2, -0.2, 0.4])
    cube = np.array([0.5, 0.0, 0.025])
    for seed in range(3):
        goal = make_goal('reach', seed, kinematics, q, cube)
        assert np.linalg.norm(kinematics.fk(goal.arm_q) - goal.target) < 1e-3
        arm, oracle = q.copy(), OraclePolicy(goal, kinematics.max_step)
        for _ in range(200):
            arm, _ = kinematics.action_to_joint_target(arm, oracle.act(kinematics.fk(arm), cube))
        assert np.max(np.abs(arm - goal.arm_q)) < 0.01
        one_off = kinematics.ik(q, goal.target)
        assert np.max(np.abs(one_off - goal.arm_q)) > 0.02   # the old goal posture, which this test tells apart


def test_push_goals_near_the_table_edge_stay_far_enough_and_on_the_table(kinematics):
    # A cube in a corner of the region: clipping would pull many goals close; they are redrawn instead.
    q, cube = np.array(PANDA_HOME), np.array([0.36, -0.27, 0.025])
    for seed in range(40):
        push = make_goal('push', seed, kinematics, q, cube)
        assert np.linalg.norm(push.target[:2] - cube[:2]) >= PUSH_DISTANCE[0] - PUSH_CLIP_SLACK
        for (lo, hi), value in zip(PUSH_REGION, push.target[:2]):
            assert lo <= value <= hi


def test_push_goals_come_from_the_distance_range_asked_for_and_a_bad_range_is_refused(kinematics, monkeypatch,
                                                                                      capsys):
    """`jepa eval --push-distance 0.05,0.25` (success against goal distance): the seeds' goals spread over the
    range; a range outside the limits, reversed or malformed is named before anything starts."""
    from jepa_bringup import evaluate
    q, cube = np.array(PANDA_HOME), np.array([0.5, 0.0, 0.025])
    wide = [np.linalg.norm(make_goal('push', seed, kinematics, q, cube, push_distance=(0.05, 0.25)).target[:2]
                           - cube[:2]) for seed in range(60)]
    assert 0.05 - PUSH_CLIP_SLACK <= min(wide) < 0.08 and 0.22 < max(wide) <= 0.25 + 1e-9
    assert min(wide) < PUSH_DISTANCE[0] - PUSH_CLIP_SLACK and max(wide) > PUSH_DISTANCE[1]
    for bad in ((0.2, 0.1), (0.01, 0.1), (0.1, 0.4), ('near', 'far'), (0.1,)):
        with pytest.raises(ValueError, match='push distance'):
            make_goal('push', 0, kinematics, q, cube, push_distance=bad)

    def run(*args, **kwargs):
        raise AssertionError('no evaluation may start')
    monkeypatch.setattr(evaluate, 'run', run)
    for argv, message in ((['--task', 'push', '--push-distance', '0.25,0.05'], 'near <= far'),
                          (['--task', 'push', '--push-distance', '0.05'], 'two numbers'),
                          (['--push-distance', '0.05,0.25'], 'give --task push')):
        with pytest.raises(SystemExit):
            evaluate.main(argv)
        assert message in capsys.readouterr().err


def test_episode_time_is_fixed_for_reach_and_grows_with_the_push_distance(kinematics):
    q, cube = np.array(PANDA_HOME), np.array([0.5, 0.0, 0.025])
    assert episode_steps(make_goal('reach', 0, kinematics, q, cube), cube) == REACH_STEPS
    pushes = [make_goal('push', seed, kinematics, q, cube) for seed in range(20)]
    by_distance = sorted(pushes, key=lambda g: np.linalg.norm(g.target[:2] - cube[:2]))
    steps = [episode_steps(g, cube) for g in by_distance]
    assert steps == sorted(steps) and steps[0] < steps[-1]


def test_summary_reports_every_radius_and_the_distance_distribution():
    results = [{'success': d < 0.025, 'final_distance_m': d} for d in (0.005, 0.015, 0.022, 0.028, 0.04, 0.2)]
    summary = summarize(results, {'plan_latency': [40.0, 60.0], 'e2e_wall_latency': []})
    assert summary['success_rate'] == pytest.approx(3 / 6)
    assert [summary['success_at_radius'][f'{r:g}'] for r in RADII] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    assert summary['final_distance_m']['p50'] == pytest.approx(0.025)
    assert summary['plan_latency_ms']['p50'] == pytest.approx(50.0)
    assert summary['e2e_wall_latency_ms'] == {'p50': None, 'p95': None}


def push_outcome(distances, steps_after: int = 0) -> str:
    """The outcome of a push whose distance to the goal went through `distances` (the first is the start, the others
    one per control step), held at the last one for `steps_after` more steps; the end, measured after the last step
    with the arm held, repeats it (as the referee's does)."""
    start, *steps = [*distances, *[distances[-1]] * steps_after]
    trace = DistanceTrace('push', start)
    for d in steps:
        trace.add(d)
    return trace.record(steps[-1])['outcome']


def test_a_push_that_missed_is_sorted_by_where_it_went_wrong():
    moving = list(np.linspace(0.12, 0.05, 60))  # still closing in at the end
    assert push_outcome([0.12, 0.06, 0.02]) == 'success'
    assert push_outcome([0.12, 0.02, 0.04]) == 'reached, then left'
    assert push_outcome([0.12, 0.06, 0.05], steps_after=20) == 'stalled short'
    assert push_outcome(moving) == 'other'
    assert push_outcome([0.12, 0.121, 0.119]) == 'untouched'
    assert push_outcome([0.12, 0.10, 0.15]) == 'pushed away'
    assert push_outcome([0.12, 0.10, 0.09], steps_after=20) == 'other'  # 9 cm short: not "near"
    # Stalled: no change over the last 2 s (20 control steps), not 1.9 s and the end's repeat of the last step.
    closing_in = [0.12, *np.linspace(0.10, 0.056, 12), 0.05]
    assert push_outcome(closing_in, steps_after=19) == 'other'
    assert push_outcome(closing_in, steps_after=20) == 'stalled short'
    trace = DistanceTrace('reach', 0.2)
    trace.add(0.01)
    assert trace.record(0.03) == {'closest_distance_m': 0.01}
    results = [{'success': False, 'final_distance_m': 0.05, 'outcome': 'stalled short'},
               {'success': True, 'final_distance_m': 0.01, 'outcome': 'success'}]
    assert summarize(results, {})['outcomes'] == {'success': 1, 'reached, then left': 0, 'stalled short': 1,
                                                   'pushed away': 0, 'untouched': 0, 'other': 0}
    assert 'outcomes' not in summarize([{'success': True, 'final_distance_m': 0.01}], {})
    # What the evaluations log per episode.
    assert [verdict(r) for r in results] == ['fail (stalled short)', 'success']
    assert verdict({'success': False, 'final_distance_m': 0.2}) == 'fail'


def test_fresh_mode1_seeds_are_new_and_references_share_the_agents_seeds():
    assert list(condition_seeds('mode2', 0, 50, 20)) == list(range(50))
    assert list(condition_seeds('mode1', 0, 50, 20)) == list(range(50))
    assert list(condition_seeds('mode1_fresh', 0, 50, 20)) == list(range(50, 100))
    for reference in ('scripted_skill', 'random', 'oracle'):
        assert list(condition_seeds(reference, 0, 50, 20)) == list(range(20))


def test_provenance_names_the_commit_the_machine_and_the_files(tmp_path):
    record = provenance(['jepa', 'eval', '--episodes', '1'])
    assert len(record['git']['commit']) == 40 and isinstance(record['git']['dirty'], bool)
    assert record['machine']['cores'] >= 1 and record['machine']['cpu']
    assert len(record['load_start']['loadavg_1_5_15']) == 3
    assert record['command'] == ['jepa', 'eval', '--episodes', '1']
    checkpoint = tmp_path / 'model.pt'
    checkpoint.write_bytes(b'weights')
    files = files_sha256({'actor.checkpoint': checkpoint, 'actor.critic_path': '', 'cost.checkpoint': tmp_path / 'no'})
    assert files['actor.checkpoint']['sha256'] == hashlib.sha256(b'weights').hexdigest()
    assert files['actor.critic_path']['sha256'] is None
    assert files['cost.checkpoint']['problem'] == 'not a file'


def test_unknown_task_is_refused(kinematics):
    with pytest.raises(ValueError, match='unknown task'):
        make_goal('stack', 0, kinematics, np.array(PANDA_HOME), np.zeros(3))


def test_oracle_reaches_where_random_does_not(kinematics):
    """Integrate the actions as ideal end-effector motion: the oracle converges, random actions do not."""
    q, cube = np.array(PANDA_HOME), np.array([0.5, 0.0, 0.025])
    goal = make_goal('reach', 3, kinematics, q, cube)
    start = kinematics.fk(q)
    for policy, should_succeed in ((OraclePolicy(goal, 0.03), True), (RandomPolicy(3, 0.03), False)):
        ee = start.copy()
        for _ in range(60):
            ee = ee + policy.act(ee, cube)[:3]
        assert (final_distance(goal, ee, cube) < 0.01) == should_succeed


def test_oracle_push_goes_behind_the_cube_first(kinematics):
    q, cube = np.array(PANDA_HOME), np.array([0.5, 0.0, 0.025])
    goal = make_goal('push', 2, kinematics, q, cube)
    oracle = OraclePolicy(goal, 0.03)
    ee = kinematics.fk(q)
    path = []
    for _ in range(80):
        ee = ee + oracle.act(ee, cube)[:3]
        path.append(ee)
    # It comes down only behind the cube (opposite the push direction), never onto it.
    first_low = next(p for p in path if p[2] < 0.06)
    behind = cube[:2] - goal.push_direction * 0.06
    assert np.linalg.norm(first_low[:2] - behind) < 0.03


def test_sim_camera_is_sim_yaml_with_the_calibrated_params_file_on_top(tmp_path):
    # What `jepa eval ... sim_camera:=FILE` gives the graph's sim node must also frame the eval's video overlay.
    shipped = sim_camera()
    calibrated = tmp_path / 'sim_camera.yaml'
    calibrated.write_text(yaml.safe_dump({'sim': {'ros__parameters': {'camera_eye': [1.0, -0.6, 0.9]}}}))
    camera = sim_camera(calibrated)
    assert camera.eye == (1.0, -0.6, 0.9)
    assert (camera.target, camera.width, camera.fov_deg) == (shipped.target, shipped.width, shipped.fov_deg)
    assert graph_camera(['task:=idle', f'sim_camera:={calibrated}']) == camera
    assert graph_camera(['task:=idle']) == shipped


@pytest.mark.parametrize('content', ['sim: [1, 2', 'arm:\n  ros__parameters: {}\n'])
def test_an_unreadable_sim_camera_file_is_named(tmp_path, content):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(content)
    with pytest.raises(ValueError, match='bad.yaml'):
        sim_camera(bad)
    with pytest.raises(ValueError, match='missing.yaml'):
        sim_camera(tmp_path / 'missing.yaml')


def test_a_written_report_is_reprinted_and_plotted_without_running_anything(tmp_path, capsys):
    from jepa_bringup.evaluate import main
    results = [{'success': d < 0.025, 'final_distance_m': d} for d in (0.01, 0.04)]
    condition = summarize(results, {'plan_latency': [40.0], 'e2e_wall_latency': [60.0]})
    report = {'provenance': {'git': {'commit': 'abc', 'dirty': False}},
              'tasks': {'push': {'task': 'push', 'success_radius_m': 0.025, 'conditions': {'mode2': condition}}}}
    path = tmp_path / 'report.json'
    path.write_text(json.dumps(report))
    assert main(['--from-json', str(path), '--plot', str(tmp_path / 'curves.png')]) == 0
    out = capsys.readouterr().out
    assert 'push   mode2' in out and '50%' in out
    assert (tmp_path / 'curves.png').stat().st_size > 1000
    path.write_text('{"tasks": 3}')
    with pytest.raises(SystemExit):
        main(['--from-json', str(path)])
    assert 'not a report of jepa eval' in capsys.readouterr().err


def test_an_aborted_evaluation_keeps_the_episodes_measured_before_it(monkeypatch):
    """A service that stops answering mid-run (the simulator hung once, 57 episodes in) must not cost the
    episodes already measured: the report holds them, and names the abort."""
    from jepa_bringup import evaluate as evaluation

    class Referee:
        perception_reports: list = []

    def episode(referee, condition, task, seed, video):
        if seed == 102:
            raise TimeoutError('timed out after 30 s waiting for a response from /sim/render_state')
        return {'seed': seed, 'success': seed % 2 == 0, 'final_distance_m': 0.01, 'start_distance_m': 0.1,
                'latencies': []}

    monkeypatch.setattr(evaluation, 'run_episode', episode)
    with pytest.raises(evaluation.EvaluationAborted, match='render_state') as aborted:
        evaluation.evaluate(Referee(), 'reach', 5, 100, ['mode2'], None, None)
    report = aborted.value.report
    assert report['conditions']['mode2']['episodes'] == 2 and report['seeds']['mode2'] == [100, 104]


def test_eval_sets_agent_node_parameters_before_the_first_episode_and_names_what_is_refused(monkeypatch, capsys):
    """`jepa eval --set actor.subgoal_samples=512`: parsed as YAML, handed to the node, read back into the report;
    a malformed item or a node outside the agent is refused before anything starts, a refused value names itself."""
    from jepa_bringup import evaluate

    assert evaluate.node_settings_of(['actor.subgoal_samples=512', 'actor.planner=cem', 'cost.weights.energy=0.5']) \
        == {'actor': {'subgoal_samples': 512, 'planner': 'cem'}, 'cost': {'weights.energy': 0.5}}

    def run(*args, **kwargs):
        raise AssertionError('no evaluation may start')
    monkeypatch.setattr(evaluate, 'run', run)
    for item, message in (('actor.subgoal_samples', 'expected NODE.NAME=VALUE'), ('subgoal_samples=5', 'NODE.NAME'),
                          ('sim.arm_tracking=0.5', "'sim' is not one of the agent's nodes")):
        with pytest.raises(SystemExit):
            evaluate.main(['--set', item])
        assert message in capsys.readouterr().err

    class Referee:
        def __init__(self):
            self.held = {'actor': {'subgoal_samples': 256, 'horizon': 8}}

        def set_node_parameters(self, node, values):
            unknown = sorted(set(values) - set(self.held[node]))
            if unknown:
                raise RuntimeError(f'{node} refused {unknown}')
            self.held[node].update(values)

        def node_parameters(self, node):
            return dict(self.held[node])

    referee = Referee()
    assert evaluate.apply_node_settings(referee, {'actor': {'subgoal_samples': 512}}, log=lambda _: None) == \
        {'actor': {'subgoal_samples': 512}}
    assert referee.held['actor'] == {'subgoal_samples': 512, 'horizon': 8}
    with pytest.raises(evaluate.SettingRefused, match=r"--set: actor refused \['subgoal_sampels'\]"):
        evaluate.apply_node_settings(referee, {'actor': {'subgoal_sampels': 512}}, log=lambda _: None)
