"""ROS-free parts of `jepa eval`: seeded goals, the oracle/random reference policies, the graph's camera."""
import numpy as np
import pytest
import yaml

from jepa_bringup.episodes import PUSH_DISTANCE, REACH_REGION, OraclePolicy, RandomPolicy, final_distance, make_goal, \
    sim_camera
from jepa_bringup.evaluate import graph_camera
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
        assert PUSH_DISTANCE[0] - 0.03 <= np.linalg.norm(push.target[:2] - cube[:2]) <= PUSH_DISTANCE[1] + 1e-9
    assert not np.allclose(make_goal('reach', 0, kinematics, q, cube).target,
                           make_goal('reach', 1, kinematics, q, cube).target)


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
