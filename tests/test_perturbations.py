"""Perturbations of the simulated world (jepa_sim.perturbation) on the real simulator, ROS-free: each named one
acts (the camera's image moves, the arm stops short, the cube is heavier and grippier, the cube is another
colour), and Perturbation() restores the nominal world; `jepa eval --perturb` refuses what it does not know."""
import numpy as np
import pybullet as p
import pytest

from jepa_sim.panda_sim import PandaSim
from jepa_sim.perturbation import CUBE_FRICTION, CUBE_MASS, PERTURBATIONS, Perturbation, named_perturbation
from jepa_sim.trajectory_follower import TrajectoryFollower, TrajectoryPoint


@pytest.fixture(scope='module')
def sim():
    sim = PandaSim()
    yield sim
    sim.close()


@pytest.fixture
def nominal(sim):
    """The module's simulator, put back to the nominal world after the test."""
    yield sim
    sim.perturb(Perturbation())


def horizontal_shift(before: np.ndarray, after: np.ndarray, largest: int = 30) -> int:
    """How many pixels to the left the scene moved from `before` to `after` (the best-matching shift)."""
    a, b = before.astype(int), after.astype(int)
    width = a.shape[1]

    def mismatch(dx):
        return np.abs(a[:, dx:] - b[:, :width - dx]).mean() if dx >= 0 else np.abs(a[:, :dx] - b[:, -dx:]).mean()
    return min(range(-largest, largest + 1), key=mismatch)


def test_camera_moved_slides_the_image_at_the_same_state(nominal):
    nominal.reset(1)
    before = nominal.render()
    nominal.perturb(named_perturbation(['camera_moved']))
    camera, base = nominal.camera, nominal.nominal_camera
    assert np.linalg.norm(np.subtract(camera.eye, base.eye)) == pytest.approx(0.03)
    view, base_view = np.subtract(camera.target, camera.eye), np.subtract(base.target, base.eye)
    angle = np.degrees(np.arccos(view @ base_view / np.linalg.norm(view) / np.linalg.norm(base_view)))
    assert angle == pytest.approx(4.0, abs=1e-6)
    after = nominal.render()
    # 3 cm and 4 degrees to the right, at ~1 m with a 40-degree view 96 pixels high: the scene slides ~12 px left.
    assert np.abs(after.astype(int) - before).mean() > 10
    assert 9 <= horizontal_shift(before, after) <= 15
    nominal.perturb(Perturbation())
    assert np.array_equal(nominal.render(), before)


def test_sluggish_arm_follows_two_thirds_of_each_step(nominal):
    """3-cm ee_delta steps through the follower, as sim_node follows them: a nominal arm ends each 0.1-s step at
    its target, a sluggish one 65 % of the way."""
    kin = nominal.kinematics
    shares = {}
    for tracking in (1.0, named_perturbation(['sluggish_arm']).arm_tracking):
        nominal.reset(0, randomize_arm=False, randomize_cube=False)
        follower = TrajectoryFollower(nominal.joint_names, nominal.lower, nominal.upper, nominal.joint_positions(),
                                      tracking=tracking)
        for _ in range(3):
            q = nominal.joint_positions()
            start = kin.fk(q[:7])
            q_target, fingers = kin.action_to_joint_target(q[:7], np.array([0.03, 0.0, 0.0, 1.0]))
            follower.set_trajectory(nominal.joint_names, [TrajectoryPoint(0.1, np.r_[q_target, fingers])],
                                    nominal.time, q)
            for _ in range(24):
                nominal.send_joint_targets(*follower.sample(nominal.time))
                nominal.step()
            step = kin.fk(q_target) - start
            moved = kin.fk(nominal.joint_positions()[:7]) - start
            shares.setdefault(tracking, []).append(moved @ step / (step @ step))
    assert np.allclose(shares[1.0], 1.0, atol=0.03)
    assert np.allclose(shares[0.65], 0.65, atol=0.03)


def test_heavy_cube_is_heavier_and_grippier_in_pybullet(nominal):
    def dynamics():
        mass, friction, inertia = p.getDynamicsInfo(nominal.cube, -1, physicsClientId=nominal.client)[:3]
        return mass, friction, inertia[0]

    mass, friction, inertia = dynamics()
    assert (mass, friction) == pytest.approx((CUBE_MASS, CUBE_FRICTION))
    nominal.perturb(named_perturbation(['heavy_cube']))
    assert dynamics() == pytest.approx((4 * mass, 2 * friction, 4 * inertia))
    nominal.perturb(Perturbation())
    assert dynamics() == pytest.approx((mass, friction, inertia))


def test_recoloured_cube_is_blue_in_the_image(nominal):
    def pixels(image):
        r, g, b = (image[:, :, c].astype(int) for c in range(3))
        return int(((r > 150) & (g < 80) & (b < 80)).sum()), int(((b > 150) & (r < 80) & (g < 120)).sum())

    nominal.reset(1)
    red, blue = pixels(nominal.render())
    assert red >= 5 and blue == 0
    nominal.perturb(named_perturbation(['recoloured_cube']))
    assert pixels(nominal.render()) == (0, red)


def test_named_perturbations_combine_and_refuse_what_they_cannot_mean():
    both = named_perturbation(['sluggish_arm', 'heavy_cube'], {'arm_tracking': 0.4})
    assert (both.arm_tracking, both.cube_mass_scale, both.cube_rgb) == (0.4, 4.0, Perturbation.cube_rgb)
    assert set(PERTURBATIONS) == {'camera_moved', 'sluggish_arm', 'heavy_cube', 'recoloured_cube'}
    for names, overrides, message in ((['nonsense'], None, 'known: camera_moved'),
                                      ([], {'mass': 2.0}, 'unknown perturbation settings'),
                                      (['sluggish_arm'], {'arm_tracking': 0.0}, 'arm_tracking'),
                                      ([], {'camera_shift': 0.03}, 'camera_shift')):
        with pytest.raises(ValueError, match=message):
            named_perturbation(names, overrides)


def test_eval_refuses_an_unknown_perturbation_naming_the_known_ones_and_reads_settings(monkeypatch, capsys):
    from jepa_bringup import episodes, evaluate

    def run(*args, **kwargs):
        raise AssertionError('no evaluation may start')
    monkeypatch.setattr(evaluate, 'run', run)
    for argv, message in ((['--perturb', 'camera_moved,nonsense'], 'known: camera_moved, sluggish_arm, heavy_cube, '
                                                                    'recoloured_cube'),
                          (['--perturb-set', 'arm_tracking'], 'FIELD=NUMBER'),
                          (['--perturb', 'camera_moved', '--arm', 'xarm6'], 'not an --arm preset')):
        with pytest.raises(SystemExit):
            evaluate.main(argv)
        assert message in capsys.readouterr().err
    assert episodes.perturbation_settings(['arm_tracking=0.4', 'camera_shift=0.05,0,0']) == \
        {'arm_tracking': 0.4, 'camera_shift': [0.05, 0.0, 0.0]}


def test_eval_sets_the_named_perturbation_on_the_sim_and_records_what_it_holds():
    """What `jepa eval --perturb` hands the simulator node, and what its report records (the values read back)."""
    from jepa_bringup.evaluate import perturb_world

    class Referee:
        def __init__(self, started):
            self.held = started

        def set_node_parameters(self, node, values):
            assert node == 'sim'
            self.held = dict(values)

        def node_parameters(self, node):
            return {'gui': False, **self.held}

    record = perturb_world(Referee({}), {'names': ['sluggish_arm'], 'settings': {'arm_tracking': 0.5}},
                           log=lambda _: None)
    assert record['names'] == ['sluggish_arm'] and record['settings'] == {'arm_tracking': 0.5}
    assert record['sim_parameters'] == Perturbation(arm_tracking=0.5).parameters()
    # Without --perturb the simulator keeps the world it was started with (a params file's), and the report says
    # which.
    started = Perturbation(cube_mass_scale=3.0).parameters()
    record = perturb_world(Referee(started), {'names': [], 'settings': {}}, log=lambda _: None)
    assert record == {'names': [], 'settings': {}, 'sim_parameters': started}
