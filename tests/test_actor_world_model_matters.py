"""Where we say the agent plans through its world model, its predictions must decide what it does.

For every task profile the graph ships (jepa_configurator.configurator.TASK_PROFILES with config/agent.yaml's
overrides, and the actor's settings), the actor decides on real scenes once with the shipped world model and once
with the same model whose predictions are replaced by noise. A profile that plans through the model must decide
differently; a profile whose decisions do not move is labelled as not planning through it (push_skill, the
scripted_skill reference: the hand-written push skill and the arm's kinematics decide its actions).
"""
import copy

import numpy as np
import pytest
import torch

from jepa_bringup.sim_episodes import SimWorkbench, agent_params, graph_readout, graph_settings
from jepa_common.kinematics import ArmKinematics
from jepa_actor.actor import Actor
from jepa_configurator.configurator import TASK_PROFILES, TASKS
from jepa_world_model.high_level import HighLevelModel, default_high_level_path
from jepa_world_model.model import default_checkpoint_path, load_checkpoint

# Each shipped task profile that acts: does it plan through the world model? (A new profile must be labelled.)
PLANS_THROUGH_WORLD_MODEL = {'reach': True, 'push': True, 'push_one_level': True, 'push_skill': False}
# The scene each profile is decided on: the evaluation task whose goals it is given.
EPISODE_TASK = {'reach': 'reach', 'push': 'push', 'push_one_level': 'push', 'push_skill': 'push'}
SEEDS = (0, 1, 2)


def noisy_predictions(model, seed: int = 0):
    """A copy of the model whose rollouts are noise of the latents' own scale: it perceives as before (same
    encoder, same effector map), but what it predicts is worthless."""
    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    predict = noisy.rollout

    def rollout(z0, actions, latent_vars=None):
        predicted = predict(z0, actions, latent_vars)
        noise = torch.randn(predicted.shape, generator=generator).to(predicted)
        return noise * z0.std() + z0.mean()

    noisy.rollout = rollout
    return noisy


@pytest.fixture(scope='module')
def scenes():
    """(task, seed) -> (latent, goal latent, joint state) of real rendered evaluation scenes."""
    torch.set_num_threads(1)
    model = load_checkpoint(default_checkpoint_path())
    bench = SimWorkbench(model)
    try:
        out = {}
        for task in set(EPISODE_TASK.values()):
            for seed in SEEDS:
                _, goal_latent = bench.start_episode(task, seed)
                out[task, seed] = (bench.encode(bench.sim.render()), goal_latent, bench.q_arm.copy())
    finally:
        bench.close()
    return model, out


def decisions(model, profile: str, scenes: dict, readout) -> np.ndarray:
    """The first action the profile's actor takes in each scene (a fresh actor per scene: no warm start)."""
    config, weights = graph_settings(profile)
    actions = []
    for seed in SEEDS:
        z, goal, q = scenes[EPISODE_TASK[profile], seed]
        # levels 2: the shipped higher level, whose own predictions stay; the control level's are the model's.
        high_level = HighLevelModel.load(default_high_level_path(default_checkpoint_path())) \
            if config.levels == 2 else None
        actor = Actor(model, config, weights, ArmKinematics(), readout=readout if config.skill else None,
                      high_level=high_level)
        actions.append(actor.act(z, goal, q, 'mode2').action)
    return np.array(actions)


def test_every_shipped_acting_profile_is_labelled():
    assert set(TASKS) - {'idle'} == set(PLANS_THROUGH_WORLD_MODEL)


@pytest.mark.parametrize('profile', sorted(PLANS_THROUGH_WORLD_MODEL))
def test_decisions_follow_the_world_model_where_we_say_it_plans(profile, scenes):
    model, states = scenes
    readout = graph_readout(model)
    shipped = decisions(model, profile, states, readout)
    perturbed = decisions(noisy_predictions(model), profile, states, readout)
    # The arm's part of the action (metres): how far the first commanded step moved.
    moved = np.abs(shipped[:, :3] - perturbed[:, :3]).max()
    if PLANS_THROUGH_WORLD_MODEL[profile]:
        assert moved > 1e-3, f'{profile}: noise for predictions changed the first step by only {moved:.2e} m'
    else:
        np.testing.assert_array_equal(shipped, perturbed)


def test_surprise_while_idle_adjusts_nothing():
    # The agent does not act in idle (an eval's references drive the arm, resets teleport it): nothing it planned
    # missed, so nothing it learned may change.
    overrides = agent_params().get('configurator', {}).get('task_adjust', {})
    assert [a for a in overrides.get('idle', TASK_PROFILES['idle'].adjust) if a] == []
