"""The motor-babbling policy core (ROS-free): bounded, smooth, deterministic, and it pushes the cube."""
import numpy as np
import pytest

from jepa_bringup.collect import BabblingConfig, BabblingPolicy


def _play(seed: int, episodes: int = 6, steps: int = 250, tracking: float = 0.9):
    """Closed loop with an imperfect point-mass arm and a cube that is dragged along when the hand is on it."""
    policy = BabblingPolicy(seed=seed)
    rng = np.random.default_rng(seed + 1000)
    actions, ee_path, cube_moves = [], [], 0
    for episode in range(episodes):
        policy.reset(seed * 1000 + episode)
        ee = np.array([0.45, 0.0, 0.35])
        cube = np.array([rng.uniform(0.4, 0.6), rng.uniform(-0.15, 0.15), 0.025])
        for _ in range(steps):
            action = policy.act(ee, cube)
            actions.append(action)
            ee = ee + tracking * action[:3]
            ee_path.append(ee.copy())
            if np.linalg.norm(cube[:2] - ee[:2]) < 0.045 and ee[2] < 0.07:
                cube[:2] += action[:2]
                cube_moves += 1
    return np.array(actions), np.array(ee_path), cube_moves


def test_actions_are_finite_and_within_the_action_bounds():
    actions, _, _ = _play(seed=3)
    c = BabblingConfig()
    assert actions.dtype == np.float32 and actions.shape[1] == 4
    assert np.all(np.isfinite(actions))
    assert np.abs(actions[:, :3]).max() <= c.max_step + 1e-6
    assert actions[:, 3].min() >= -1.0 and actions[:, 3].max() <= 1.0
    # It actually moves (not a policy that always outputs zeros).
    assert np.linalg.norm(actions[:, :3], axis=1).mean() > 0.2 * c.max_step


def test_motion_is_smooth_and_stays_in_the_workspace():
    actions, ee_path, _ = _play(seed=5)
    c = BabblingConfig()
    change = np.abs(np.diff(actions, axis=0))
    # Consecutive translations differ by at most the rate limit (episode starts included: the policy
    # keeps its last action across a reset only within one episode, so skip the reset boundaries).
    within_episode = np.ones(len(change), dtype=bool)
    within_episode[249::250] = False
    assert change[within_episode, :3].max() <= c.max_action_change + 1e-6
    assert change[within_episode, 3].max() <= c.max_gripper_change + 1e-6
    low, high = np.array(c.workspace_low), np.array(c.workspace_high)
    assert np.all(ee_path >= low - 0.01) and np.all(ee_path <= high + 0.01)


def test_policy_visits_the_cube_low_and_moves_it():
    actions, ee_path, cube_moves = _play(seed=7)
    assert cube_moves > 0.05 * len(actions), f'cube moved in only {cube_moves} of {len(actions)} steps'
    # Both kinds of motion occur: low pushes near the table and high wandering.
    assert (ee_path[:, 2] < 0.07).mean() > 0.1
    assert (ee_path[:, 2] > 0.2).mean() > 0.1


@pytest.mark.parametrize('push_fraction, retreat_fraction', [(0.7, 0.4), (0.3, 0.75)])
def test_plans_come_in_the_configured_shares_and_pushes_aim_at_the_cube(push_fraction, retreat_fraction):
    config = BabblingConfig(push_fraction=push_fraction, retreat_fraction=retreat_fraction)
    policy = BabblingPolicy(config, seed=4)
    rng = np.random.default_rng(4)
    plans, pushes, retreats = 2000, 0, 0
    for _ in range(plans):
        # Anywhere in the simulator's cube region: most directions keep a push there inside the workspace and
        # the policy tries 16, so each plan is a push when its draw says so.
        cube = np.array([rng.uniform(0.4, 0.65), rng.uniform(-0.2, 0.2), 0.025])
        policy._next_plan(cube)
        if policy.mode != 'push':
            assert policy.mode == 'wander'
            continue
        pushes += 1
        low = [w.position[:2] - cube[:2] for w in policy._plan if w.position[2] < 0.07]
        retreats += len(low) == 3
        # Down push_behind from the cube's centre, then along the line through the centre to the cube (a
        # retreat stops at most 6 cm short of it) or beyond it.
        behind, towards = low[0], low[1]
        assert np.linalg.norm(behind) == pytest.approx(config.push_behind)
        direction = -behind / np.linalg.norm(behind)
        assert abs(direction[0] * towards[1] - direction[1] * towards[0]) < 1e-9
        assert (towards - behind) @ direction >= config.push_behind - 0.06 - 1e-9
    assert policy.pushes_started == pushes
    # Binomial shares of 2000 draws (and of the pushes among them) within about four standard deviations.
    assert pushes / plans == pytest.approx(push_fraction, abs=0.045)
    assert retreats / pushes == pytest.approx(retreat_fraction, abs=0.06)


def test_same_seed_same_actions_and_different_seed_different_actions():
    a, _, _ = _play(seed=11, episodes=1, steps=120)
    b, _, _ = _play(seed=11, episodes=1, steps=120)
    c, _, _ = _play(seed=12, episodes=1, steps=120)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_without_a_cube_pose_it_only_wanders():
    policy = BabblingPolicy(seed=1)
    ee = np.array([0.5, 0.0, 0.3])
    for _ in range(300):
        ee = ee + policy.act(ee, None)[:3]
    assert policy.pushes_started == 0


def test_action_follow_through_fit_recovers_the_lag_structure():
    from jepa_bringup.collect import CollectStats
    rng = np.random.default_rng(0)
    stats = CollectStats()
    actions = rng.uniform(-0.03, 0.03, (400, 3))
    for k in range(1, len(actions)):
        motion = 0.6 * actions[k] + 0.2 * actions[k - 1] + rng.normal(0, 1e-4, 3)
        stats.add_motion(motion, actions[k], actions[k - 1])
    a, b, r2 = stats.action_follow_through()
    assert a == pytest.approx(0.6, abs=0.01) and b == pytest.approx(0.2, abs=0.01) and r2 > 0.99


@pytest.mark.parametrize('retreat_fraction', [0.0, 1.0])
def test_pushes_go_through_the_cube_or_stop_at_it_and_back_away(retreat_fraction):
    config = BabblingConfig(retreat_fraction=retreat_fraction)
    cube = np.array([0.5, 0.0, 0.025])
    for seed in range(20):
        plan = BabblingPolicy(config, seed=seed)._push_plan(cube)
        low = [w.position for w in plan if w.position[2] < 0.07]
        behind, end = low[0], low[-1]
        direction = (cube - behind)[:2] / np.linalg.norm((cube - behind)[:2])
        if retreat_fraction == 0.0:
            # Down behind the cube, then through it: the last low point is beyond the cube.
            assert len(low) == 2 and (end - cube)[:2] @ direction >= config.push_through
        else:
            # Down behind, to the cube (at most 6 cm into it), then away from it at pushing height.
            near = low[1]
            assert len(low) == 3 and -config.push_behind < (near - cube)[:2] @ direction <= 0.0
            assert np.linalg.norm((end - cube)[:2]) > np.linalg.norm((near - cube)[:2]) + 0.03
            assert (end - near)[:2] @ direction < 0.0
