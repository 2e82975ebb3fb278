"""The scripted push skill (the `push_skill` task, the `scripted_skill` evaluation reference) on positions, the cube
read-out learned from play without labels, and the actor turning skill steps into sub-goal latents."""
import numpy as np
import pytest
import torch
from torch import nn

from jepa_bringup.episodes import make_goal, sim_camera
from jepa_common.kinematics import PANDA_HOME, ArmKinematics
from jepa_actor.actor import Actor, ActorConfig
from jepa_cost.cost import CostWeights
from jepa_actor.scripted_skill import PushSkill, PushSkillConfig
from jepa_world_model.readout import CubeReadout, ReadoutError, ReadoutSettings, default_readout_path, fit_cube_readout
from jepa_sim.panda_sim import PandaSim
from jepa_world_model.model import default_checkpoint_path, encoder_id, load_checkpoint

CONTACT = PushSkill().config.contact
FAST = ReadoutSettings(predictor_steps=800, readout_steps=600, hidden=64)


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def pushed(cube_xy: np.ndarray, hand: np.ndarray, contact: float = CONTACT) -> np.ndarray:
    """A toy contact: a low hand closer than `contact` to the cube's centre shoves it out to that distance."""
    offset = cube_xy - hand[:2]
    distance = np.linalg.norm(offset)
    if hand[2] > 0.06 or distance >= contact:
        return cube_xy
    return hand[:2] + contact * offset / max(distance, 1e-9)


def test_push_skill_goes_behind_the_cube_then_pushes_it_to_its_goal():
    skill = PushSkill()
    cube, goal = np.array([0.5, 0.0]), np.array([0.42, 0.06])
    hand = np.array([0.6, -0.1, 0.25])
    skill.reset(goal)
    phases = []
    for _ in range(200):
        target, speed = skill.target(hand, cube)
        hand = hand + np.clip(target - hand, -0.03 * speed, 0.03 * speed)
        cube = pushed(cube, hand)
        phases.append(skill.phase)
    assert np.linalg.norm(cube - goal) < 0.01
    # It came down behind the cube before it pushed (and went round again when the push turned the cube off
    # its line: the hand's steps are clipped per axis, so it does not move exactly along the line).
    first = {phase: phases.index(phase) for phase in ('approach', 'descend', 'push')}
    assert first['approach'] < first['descend'] < first['push']
    assert phases[-1] == 'push'


def test_push_skill_needs_a_goal():
    with pytest.raises(RuntimeError, match='reset'):
        PushSkill().target(np.zeros(3), np.zeros(2))


def synthetic_play(segments: int, seed: int, pushes: bool = True):
    """Play in a world whose latent is (10 x hand, 10 x cube, noise): in each segment the hand wanders above
    the resting cube, then (with pushes) comes down behind it and pushes it along a random direction.

    As in the babbling policy's play, where each push starts at approach height above the resting cube: an
    onset's label holds back to the previous contact, so frames with the hand high are labelled too. The
    read-out is not asked to extrapolate to hand poses that no onset's rest interval holds (it does not)."""
    rng = np.random.default_rng(seed)
    latents, hands, cubes, segment = [], [], [], []
    for s in range(segments):
        cube = rng.uniform([0.4, -0.2], [0.6, 0.2])
        angle = rng.uniform(-np.pi, np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        wander = np.r_[rng.uniform([0.3, -0.3], [0.7, 0.3]), rng.uniform(0.08, 0.3)]
        path = [wander + np.r_[rng.normal(0, 0.01, 2), 0.0] * k for k in range(20)]
        if pushes:
            start = np.r_[cube - 0.15 * direction, 0.035]
            path += [start + np.r_[direction, 0.0] * 0.01 * k for k in range(30)]
        for hand in path:
            cube = pushed(cube, hand)
            latents.append(np.r_[10 * hand, 10 * cube, rng.normal(0, 1e-3, 3)])
            hands.append(hand)
            cubes.append(cube.copy())
            segment.append(s)
    return np.array(latents), np.array(hands), np.zeros(len(hands)), np.array(segment), np.array(cubes)


def test_readout_learns_where_the_cube_is_from_contact_alone():
    latents, hands, opening, segment, cubes = synthetic_play(40, seed=0)
    readout = fit_cube_readout(latents, hands, opening, segment, 'toy-encoder', FAST)
    assert readout.fit.onsets >= 30  # of 40 pushes
    held_out, _, _, _, true_cubes = synthetic_play(20, seed=1)
    errors = np.linalg.norm(readout(held_out) - true_cubes, axis=1)
    assert np.median(errors) < 0.01, np.median(errors)


def test_readout_refuses_play_without_contact_and_bad_ticks():
    latents, hands, opening, segment, _ = synthetic_play(20, seed=2, pushes=False)
    with pytest.raises(ReadoutError, match='contact onsets'):
        fit_cube_readout(latents, hands, opening, segment, 'toy-encoder', FAST)
    hands[3, 1] = np.nan
    with pytest.raises(ReadoutError, match='NaN'):
        fit_cube_readout(latents, hands, opening, segment, 'toy-encoder', FAST)
    with pytest.raises(ReadoutError, match='hand'):
        fit_cube_readout(latents, hands[:5], opening, segment, 'toy-encoder', FAST)


def test_shipped_readout_reads_the_simulators_cube_from_the_shipped_encoder():
    """The shipped weights on the scenes the skill reads in an eval: each push episode's start (arm and cube
    from the reset seed) and its goal image (hand just behind the cube at its goal), through the graph's camera."""
    model = load_checkpoint(default_checkpoint_path())
    readout = CubeReadout.load(default_readout_path(), encoder_id(model))
    sim = PandaSim(camera=sim_camera())
    errors = []
    try:
        for seed in range(20):
            q, cube = sim.reset(seed)
            goal = make_goal('push', seed, sim.kinematics, q[:7], cube[:3])
            goal_image, _ = sim.render_state(goal.arm_q, goal.cube_position)
            for image, true_xy in ((sim.render(), cube[:2]), (goal_image, goal.cube_position[:2])):
                with torch.no_grad():
                    latent = model.encode(image[None])[0].numpy()
                errors.append(np.linalg.norm(readout(latent) - true_xy))
    finally:
        sim.close()
    errors = np.array(errors)
    # About 1 cm at the median on such scenes; a few goal images, the hand hovering over the cube, are read
    # several cm off.
    assert np.median(errors) < 0.02, np.round(np.sort(errors) * 100, 1)
    assert (errors < 0.05).sum() >= 30, np.round(np.sort(errors) * 100, 1)


def toy_readout(encoder_id: str = 'toy-encoder') -> CubeReadout:
    """Reads the cube out of the toy latent (10 x hand, 10 x cube)."""
    weights = np.zeros((5, 2))
    weights[3, 0] = weights[4, 1] = 0.1
    return CubeReadout(np.zeros(5), np.ones(5), [(weights, np.zeros(2))], encoder_id)


def test_readout_file_round_trip_and_its_latent_space(tmp_path):
    readout = toy_readout()
    readout.save(tmp_path / 'readout.npz')
    loaded = CubeReadout.load(tmp_path / 'readout.npz', 'toy-encoder')
    latent = np.r_[1.0, 2.0, 3.0, 4.5, -1.0]
    assert np.allclose(loaded(latent), [0.45, -0.1])
    with pytest.raises(ReadoutError, match='other-encoder'):
        CubeReadout.load(tmp_path / 'readout.npz', 'other-encoder')
    with pytest.raises(ReadoutError, match='latent of size 3'):
        loaded(np.zeros(3))
    (tmp_path / 'broken.npz').write_bytes(b'not a read-out')
    with pytest.raises(ReadoutError, match='broken.npz'):
        CubeReadout.load(tmp_path / 'broken.npz')


class HandAndCubeModel(nn.Module):
    """A world model whose latent is (10 x end effector, 10 x cube), exact for the hand, blind to contact, with
    the effector map (inverse-dynamics head) the energy and the skill read."""
    latent_dim, action_dim, model_id = 5, 4, 'hand-and-cube'

    def __init__(self):
        super().__init__()
        self.inverse_translation = nn.Linear(5, 3, bias=False)
        with torch.no_grad():
            self.inverse_translation.weight.copy_(torch.cat([0.1 * torch.eye(3), torch.zeros(3, 2)], dim=1))
        self.register_buffer('action_scale', torch.ones(4))

    def predict(self, z, action, latent_var=None):
        return z + torch.nn.functional.pad(action[..., :3] * 10, (0, 2))

    def rollout(self, z0, actions):
        return z0[:, None, :] + torch.cumsum(torch.nn.functional.pad(actions[..., :3] * 10, (0, 2)), dim=1)


def test_actor_pushes_through_skill_subgoals_with_the_arm_in_the_loop():
    kinematics = ArmKinematics()
    config = ActorConfig(horizon=4, samples=64, iterations=2, grad_steps=1, skill='push')
    weights = CostWeights(energy=1.0, latent=0.0, effort=0.05, joint_limits=1.0, workspace=1.0, critic=0.0)
    actor = Actor(HandAndCubeModel(), config, weights, kinematics, readout=toy_readout())
    q = kinematics.ik(np.array(PANDA_HOME), np.array([0.55, -0.1, 0.2]))
    cube, goal = np.array([0.5, 0.0]), np.array([0.42, 0.05])
    goal_latent = np.r_[10 * np.array([0.4, 0.1, 0.1]), 10 * goal]  # the goal image's hand is somewhere else
    start = np.linalg.norm(cube - goal)
    for _ in range(120):
        z = np.r_[10 * kinematics.fk(q), 10 * cube]
        decision = actor.act(z, goal_latent, q)
        # The sub-goal moves the hand by the skill's step and leaves the cube where the latent has it.
        assert np.allclose(decision.subgoal[3:], z[3:], atol=1e-5)
        assert np.linalg.norm(decision.subgoal[:3] - z[:3]) <= 10 * 0.03 * 3 ** 0.5 + 1e-4
        assert decision.action[3] == -1.0
        q, _ = kinematics.action_to_joint_target(q, decision.action)
        cube = pushed(cube, kinematics.fk(q))
    assert np.linalg.norm(cube - goal) < 0.25 * start, (cube, goal)


class HalfGainModel(HandAndCubeModel):
    """Predicts the hand moving half as far as it does: an effector map that misreads hand steps, as the shipped
    one does near the table."""

    def rollout(self, z0, actions):
        return super().rollout(z0, actions / 2)


@pytest.mark.parametrize('weights, expected_x', [({'energy': 1.0, 'hand': 0.0}, -0.03),
                                                 ({'energy': 0.0, 'hand': 1.0}, -0.02)])
def test_the_hand_term_takes_the_skills_step_where_the_world_model_misjudges_it(weights, expected_x):
    """2 cm in front of where the skill's approach wants the hand: the energy through a world model that halves
    hand steps asks for twice the step (clipped to the 3-cm bound), the kinematic hand term for the step itself."""
    kinematics = ArmKinematics()
    config = ActorConfig(horizon=4, samples=256, iterations=3, grad_steps=2, skill='push')
    cost = CostWeights(latent=0.0, effort=0.0, joint_limits=0.0, workspace=0.0, critic=0.0, **weights)
    actor = Actor(HalfGainModel(), config, cost, kinematics, readout=toy_readout())
    skill = PushSkill()
    skill.reset([0.42, 0.05])
    approach, _ = skill.target(np.zeros(3), [0.5, 0.0])
    q = kinematics.ik(np.array(PANDA_HOME), approach + [0.02, 0.0, 0.0])
    ee = kinematics.fk(q)
    z = np.r_[10 * ee, 10 * np.array([0.5, 0.0])]
    decision = actor.act(z, np.r_[10 * np.array([0.4, 0.1, 0.1]), 10 * np.array([0.42, 0.05])], q)
    assert actor.skill.phase == 'approach'
    assert decision.action[0] == pytest.approx(expected_x + (approach - ee)[0] + 0.02, abs=0.005)


def test_actor_skill_names_what_it_is_missing():
    actor = Actor(HandAndCubeModel(), ActorConfig(horizon=2, samples=8, iterations=1, skill='push'))
    with pytest.raises(ValueError, match='read-out.*joint state'):
        actor.act(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match='skill'):
        ActorConfig(skill='juggle')
    with pytest.raises(ValueError, match='levels'):
        ActorConfig(skill='push', levels=2)
    with pytest.raises(ValueError, match='levels'):
        actor.reconfigure(skill='', levels=3)
    assert actor.config.skill == 'push'  # a refused change leaves the actor as it was


def test_an_actor_for_a_new_model_of_the_same_latent_space_continues_the_task_in_progress():
    config = ActorConfig(horizon=2, samples=8, iterations=1, skill='push')
    previous = Actor(HandAndCubeModel(), config, readout=toy_readout())
    previous.skill.reset([0.4, 0.0])
    previous.skill.phase = 'push'
    model = HandAndCubeModel()
    model.model_id = 'hand-and-cube-adjusted'
    actor = Actor(model, config, readout=toy_readout())
    assert actor.skill.phase == 'approach' and actor.policy is not previous.policy
    actor.continue_from(previous)
    assert actor.skill is previous.skill and actor.skill.phase == 'push'
    # Mode-1 keeps what it was taught, now labelled with the model it serves.
    assert actor.policy is previous.policy and actor.distiller is previous.distiller
    assert actor.policy.model_id == 'hand-and-cube-adjusted'


def test_fit_readout_command_names_a_missing_bag(tmp_path, capsys):
    from jepa_world_model.fit_readout import main
    assert main(['--bag', str(tmp_path / 'no_such_play'), '--out', str(tmp_path / 'readout.npz')]) == 1
    assert 'no_such_play' in capsys.readouterr().err
    assert not (tmp_path / 'readout.npz').exists()


def test_a_steering_push_aims_from_where_the_cube_is_now():
    # The cube drifted 1 cm to the left of the approach's line (y = 0) while being pushed towards (0.6, 0).
    for steer, expected_y in ((False, 0.0), (True, 0.037 * 0.01 / np.hypot(0.1, 0.01))):
        skill = PushSkill(PushSkillConfig(steer=steer))
        skill.reset([0.6, 0.0])
        skill.phase, skill.direction = 'push', np.array([1.0, 0.0])
        target, _ = skill.target(np.array([0.45, 0.0, skill.config.push_height]), [0.5, 0.01])
        # Steering puts the hand's target on the cube's current line to the goal: to the cube's side of the old one.
        assert target[1] == pytest.approx(expected_y, abs=1e-9)
