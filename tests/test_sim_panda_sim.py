"""PandaSim (real PyBullet, DIRECT): seeded resets, camera, limits, render_state isolation, tracking."""
import numpy as np
import pytest

from jepa_sim.panda_sim import CUBE_REGION, CameraConfig, PandaSim


@pytest.fixture(scope='module')
def sim():
    sim = PandaSim()
    yield sim
    sim.close()


def test_seeded_reset_is_deterministic(sim):
    q1, cube1 = sim.reset(7)
    sim.send_joint_targets(q1 + 0.1)
    sim.step(100)
    q2, cube2 = sim.reset(7)
    assert np.allclose(sim.joint_positions(), q1) and np.allclose(sim.cube_pose(), cube1)
    q3, cube3 = sim.reset(8)
    assert np.allclose(q1, q2) and np.allclose(cube1, cube2)
    assert not np.allclose(cube1, cube3) and not np.allclose(q1, q3)


def test_reset_places_cube_in_front_of_arm_and_tool_down(sim):
    for seed in range(5):
        q, cube = sim.reset(seed)
        assert CUBE_REGION[0][0] <= cube[0] <= CUBE_REGION[0][1]
        assert CUBE_REGION[1][0] <= cube[1] <= CUBE_REGION[1][1]
        assert cube[2] == pytest.approx(0.025, abs=1e-3)
        ee = sim.ee_pose()
        assert 0.1 < ee[2] < 0.45
        # Tool pointing down: quaternion of diag(1, -1, -1) is +-(1, 0, 0, 0).
        assert abs(ee[3]) == pytest.approx(1.0, abs=0.02)
    q_home, cube_home = sim.reset(0, randomize_arm=False, randomize_cube=False)
    assert np.allclose(q_home[:7], sim.kinematics.home) and cube_home[:2] == pytest.approx([0.5, 0.0])


def test_cube_rests_on_table(sim):
    _, cube = sim.reset(3)
    sim.step(240)
    assert np.allclose(sim.cube_pose()[:3], cube[:3], atol=2e-3)


def test_camera_shape_dtype_and_content(sim):
    sim.reset(1)
    image = sim.render()
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert image.std() > 10  # not a blank frame
    # The red cube is visible somewhere.
    red = (image[:, :, 0] > 150) & (image[:, :, 1] < 80) & (image[:, :, 2] < 80)
    assert red.sum() >= 2


def test_camera_config_resolution():
    sim = PandaSim(camera=CameraConfig(width=96, height=48, fov_deg=50))
    try:
        assert sim.render().shape == (48, 96, 3)
        k = sim.camera.intrinsics()
        assert k[0, 2] == 48 and k[1, 2] == 24 and k[0, 0] == pytest.approx(24 / np.tan(np.radians(25)))
    finally:
        sim.close()


def test_targets_clipped_to_limits_and_tracked(sim):
    sim.reset(0, randomize_arm=False, randomize_cube=False)
    wanted = sim.joint_positions()
    wanted[3] = 1.0  # panda_joint4 upper limit is 0
    wanted[0] += 0.3
    wanted[7:] = [0.1, -0.1]
    commanded = sim.send_joint_targets(wanted)
    assert commanded[3] == 0.0 and commanded[7] == 0.04 and commanded[8] == 0.0
    assert commanded[0] == pytest.approx(wanted[0])
    sim.step(480)  # joint4 travels 2.36 rad at <= 2.175 rad/s
    assert np.allclose(sim.joint_positions(), commanded, atol=0.01)
    with pytest.raises(ValueError, match='NaN'):
        sim.send_joint_targets(np.full(9, np.nan))
    with pytest.raises(ValueError, match='9 joint targets'):
        sim.send_joint_targets(np.zeros(7))


def test_velocity_limits_respected(sim):
    sim.reset(0, randomize_arm=False, randomize_cube=False)
    target = sim.joint_positions()
    target[0] += 1.5
    sim.send_joint_targets(target)
    peak = 0.0
    for _ in range(120):
        sim.step()
        peak = max(peak, abs(sim.joint_states().velocity[0]))
    assert peak <= sim.max_velocity[0] * 1.05


def test_joint_states_fields(sim):
    states = sim.joint_states()
    assert states.names == sim.joint_names and len(states.names) == 9
    for values in (states.position, states.velocity, states.effort):
        assert values.shape == (9,) and np.all(np.isfinite(values))


def test_render_state_leaves_sim_unchanged(sim):
    sim.reset(4)
    sim.step(10)
    before_q, before_cube, before_image = sim.joint_positions(), sim.cube_pose(), sim.render()
    before_time = sim.time
    q_other = sim.kinematics.ik(sim.kinematics.home, [0.6, 0.2, 0.1], iterations=60)
    image, ee = sim.render_state(q_other, [0.35, -0.2, 0.025])
    assert ee == pytest.approx([0.6, 0.2, 0.1], abs=0.005)
    assert np.abs(image.astype(int) - before_image).sum() > 1000
    assert np.allclose(sim.joint_positions(), before_q) and np.allclose(sim.cube_pose(), before_cube)
    assert np.array_equal(sim.render(), before_image) and sim.time == before_time
    sim.step(24)
    assert np.allclose(sim.joint_positions()[:7], before_q[:7], atol=0.01)
    with pytest.raises(ValueError, match='cube pose'):
        sim.render_state(None, [0.1, 0.2])


def test_ee_delta_steps_through_the_follower_are_tracked(sim):
    """10 Hz ee_delta actions -> IK -> one-point trajectories: the arm ends each 0.1 s step near its target."""
    from jepa_sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint

    sim.reset(0, randomize_arm=False, randomize_cube=False)
    kin = sim.kinematics
    follower = TrajectoryFollower(sim.joint_names, sim.lower, sim.upper, sim.joint_positions())
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(40):
        q_arm = sim.joint_positions()[:7]
        q_target, fingers = kin.action_to_joint_target(q_arm, rng.uniform(-1, 1, 4) * [0.03, 0.03, 0.03, 1])
        follower.set_trajectory(sim.joint_names, [TrajectoryPoint(0.1, np.r_[q_target, fingers])], sim.time,
                                sim.joint_positions())
        for _ in range(24):
            sim.send_joint_targets(*follower.sample(sim.time))
            sim.step()
        errors.append(np.linalg.norm(kin.fk(sim.joint_positions()[:7]) - kin.fk(q_target)))
    assert np.mean(errors) < 0.002 and np.max(errors) < 0.005


@pytest.mark.parametrize('kwargs, message', [({'width': 0}, 'camera size'), ({'fov_deg': 200.0}, 'field of view'),
                                             ({'eye': CameraConfig.target}, 'distinct')])
def test_bad_camera_config_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CameraConfig(**kwargs)


def test_gui_without_display_is_refused_with_a_reason(monkeypatch):
    monkeypatch.delenv('DISPLAY', raising=False)
    with pytest.raises(RuntimeError, match='needs a display'):
        PandaSim(gui=True)
