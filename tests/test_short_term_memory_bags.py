"""Short-term memory <-> rosbag2 (real mcap bags through rosbags, messages serialized by rclpy)."""
import json

import numpy as np
import pytest

from jepa_short_term_memory.bags import BagError, read_memory, write_memory
from jepa_short_term_memory.memory import COST_FIELDS, ShortTermMemory, TransitionAssembler
from test_agent_core import one_thread  # noqa: F401  (fixture: torch on one thread)


def filled_memory():
    memory, assembler = ShortTermMemory(), TransitionAssembler()
    rng = np.random.default_rng(0)
    for goal_value, start in ((0.0, 0.0), (1.0, 10.0)):
        memory.add(assembler.goal(np.full(8, goal_value, np.float32)))
        for i in range(6):
            stamp = start + 0.1 * i
            t = assembler.latent(stamp, rng.normal(size=8).astype(np.float32), 'm@1')
            if t is not None:
                memory.add(t)
            assembler.cost(stamp, rng.random(len(COST_FIELDS)).astype(np.float32))
            assembler.prediction(stamp, rng.normal(size=8).astype(np.float32))
            if i != 3:  # one state without an action
                assembler.action(stamp, rng.uniform(-0.03, 0.03, 4).astype(np.float32))
    memory.add(assembler.flush())
    return memory


def test_memory_round_trips_through_a_bag(tmp_path):
    memory = filled_memory()
    assert write_memory(tmp_path / 'episodes', memory, 'm@1') == 10
    restored = read_memory([tmp_path / 'episodes'])
    original, back = memory.episodes(), restored.episodes()
    assert len(back) == len(original) == 2
    for a, b in zip(original, back):
        for key in ('stamps', 'states', 'next_states', 'cost_terms', 'predicted', 'goals'):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-6, err_msg=key)
        np.testing.assert_array_equal(np.isnan(b['actions']), np.isnan(a['actions']))
        np.testing.assert_allclose(np.nan_to_num(b['actions']), np.nan_to_num(a['actions']), rtol=1e-6)
    with pytest.raises(BagError, match='exists'):
        write_memory(tmp_path / 'episodes', memory)


def test_corrupt_bag_is_a_clear_error(tmp_path):
    bag = tmp_path / 'broken'
    bag.mkdir()
    (bag / 'metadata.yaml').write_text('rosbag2_bagfile_information: [not, valid')
    with pytest.raises(BagError, match='broken'):
        read_memory([bag])


def test_train_critic_cli_fits_the_cost_to_go_of_recorded_episodes(tmp_path, capsys):
    """A chain of states with cost 1 per step until the goal: the critic trained from the bag ranks the
    states by their distance to the goal."""
    import torch

    from jepa_cost.cost import Critic
    from jepa_configurator.train_critic import main
    rng = np.random.default_rng(1)
    embed = rng.normal(size=(6, 8)).astype(np.float32)
    memory, assembler = ShortTermMemory(), TransitionAssembler()
    stamp = 1.0
    for episode in range(12):
        memory.add(assembler.goal(embed[-1] + 0.001 * episode))  # a new episode each time
        for i, s in enumerate(list(range(episode % 5, 6)) + [5, 5]):
            # Held at the goal, a camera's noise still changes the latent a little: a bit-identical latent is a
            # frozen frame, which the memory leaves out.
            memory.add(assembler.latent(stamp, embed[s] + 1e-4 * i, 'chain@0'))
            assembler.cost(stamp, np.array([float(s != 5), 0, 0, 0, 0], np.float32))
            stamp += 0.1
        memory.add(assembler.flush())
        stamp += 5.0
    write_memory(tmp_path / 'chain', memory, 'chain@0')
    assert main(['--bag', str(tmp_path / 'chain'), '--out', str(tmp_path / 'critic.pt'), '--epochs', '150']) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary['model_id'] == 'chain@0' and summary['transitions'] + summary['skipped'] == len(memory)
    assert summary['skipped'] == 0
    critic = Critic.load(tmp_path / 'critic.pt', latent_dim=8, model_id='chain@0')
    with torch.no_grad():
        values = critic(torch.from_numpy(embed), torch.from_numpy(embed[-1])).numpy()
    assert np.all(np.diff(values) < 0), values  # farther from the goal = more cost to go
    assert main(['--bag', str(tmp_path / 'missing'), '--out', str(tmp_path / 'c2.pt')]) == 1
    assert 'missing' in capsys.readouterr().err


CHAIN = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)


def chain_memory(episodes=40, seed=1, noise=0.0):
    """Episodes along a chain of 6 states towards the last one (the goal), held there for 2 steps, cost 1 per step
    off the goal plus `noise` x a standard normal draw: a cost-to-go a critic can learn, up to the noise."""
    rng = np.random.default_rng(seed)
    memory, assembler = ShortTermMemory(), TransitionAssembler()
    stamp = 1.0
    for _ in range(episodes):
        memory.add(assembler.goal(CHAIN[-1]))
        for s in list(range(rng.integers(0, 5), 6)) + [5, 5]:
            # A camera's noise: a bit-identical latent would be a frozen frame, which the memory leaves out.
            memory.add(assembler.latent(stamp, CHAIN[s] + 1e-4 * rng.normal(size=8).astype(np.float32), 'chain@0'))
            assembler.cost(stamp, np.array([float(s != 5) + noise * rng.normal(), 0, 0, 0, 0, 0, 0], np.float32))
            stamp += 0.1
        memory.add(assembler.flush())
        stamp += 5.0
    return memory


def test_a_retrained_critic_replaces_the_one_in_service_only_when_it_predicts_better(tmp_path, one_thread):
    """The configurator's critic retraining: held-out, most recent transitions judge it against the critic in
    service (no critic: a cost-to-go of 0) by the world model's keep-if-better margin."""
    import torch

    from jepa_configurator.adjust_world_model import AdjustmentError
    from jepa_configurator.configurator import adjust_from_memory
    from jepa_configurator.train_critic import critic_from_bags, relabel_critic, retrain_critic
    from jepa_cost.cost import Critic
    quiet = lambda m: None  # noqa: E731
    # No critic in service, and episodes whose cost-to-go can be learned: the retrained critic is kept.
    write_memory(tmp_path / 'chain', chain_memory(), 'chain@0')
    summary = retrain_critic([str(tmp_path / 'chain')], str(tmp_path / 'first.pt'), log=quiet)
    assert summary['retrained_from'] == '' and summary['windows'] >= 5
    assert summary['improvement'] > 3 * summary['standard_error']
    assert summary['held_out_error_after'] < 0.5 * summary['held_out_error_before']
    critic = Critic.load(tmp_path / 'first.pt', latent_dim=8, model_id='chain@0')
    with torch.no_grad():
        values = critic(torch.from_numpy(CHAIN), torch.from_numpy(CHAIN[-1])).numpy()
    assert np.all(np.diff(values) < 0), values  # farther from the goal = more cost to go
    # Nor does a critic in service that knows nothing hold a better one back.
    Critic(8, model_id='chain@0').save(tmp_path / 'untrained.pt')
    summary = retrain_critic([str(tmp_path / 'chain')], str(tmp_path / 'better.pt'), str(tmp_path / 'untrained.pt'),
                             log=quiet)
    assert summary['retrained_from'] == str(tmp_path / 'untrained.pt') and (tmp_path / 'better.pt').exists()

    # A critic in service that has already learned what noisy episodes of the same chain can teach: retraining
    # it on more of them cannot beat it by more than noise, so it stays, and nothing is written.
    write_memory(tmp_path / 'noisy', chain_memory(seed=2, noise=0.5), 'chain@0')
    write_memory(tmp_path / 'more', chain_memory(seed=3, noise=0.5), 'chain@0')
    critic_from_bags([str(tmp_path / 'noisy')], str(tmp_path / 'in_service.pt'), epochs=600, log=quiet)
    with pytest.raises(AdjustmentError, match='retrained critic.*stays'):
        retrain_critic([str(tmp_path / 'more')], str(tmp_path / 'second.pt'), str(tmp_path / 'in_service.pt'),
                       log=quiet)
    assert not (tmp_path / 'second.pt').exists()
    # The same verdict as the configurator's adjustment after surprise reports it.
    result = adjust_from_memory(str(tmp_path / 'more'), ['critic'], '', tmp_path / 'agent', 'x',
                                critic_init=str(tmp_path / 'in_service.pt'), log=quiet)
    assert set(result) == {'critic_kept'} and 'stays' in result['critic_kept']
    # Too few held-out transitions to tell an improvement from noise: refused before training.
    write_memory(tmp_path / 'short', chain_memory(episodes=10), 'chain@0')
    with pytest.raises(AdjustmentError, match='need 5'):
        retrain_critic([str(tmp_path / 'short')], str(tmp_path / 'third.pt'), log=quiet)

    # A critic that stays while the world model is adjusted follows it: the same weights, the new model's id.
    relabelled = relabel_critic(str(tmp_path / 'in_service.pt'), str(tmp_path / 'relabelled.pt'), 'chain@1')
    assert relabelled['model_id'] == 'chain@1'
    before = Critic.load(tmp_path / 'in_service.pt')
    after = Critic.load(tmp_path / 'relabelled.pt', latent_dim=8, model_id='chain@1')
    z = torch.from_numpy(CHAIN)
    with torch.no_grad():
        assert torch.equal(before(z, z[-1]), after(z, z[-1]))


def surprising_memory(model_id, reverse_from=None, n=120, latent_dim=16):
    """A memory of transitions the model mispredicts: the next state moves along a fixed direction by the
    action's x; from transition `reverse_from` on, the other way (the world changed again)."""
    memory, assembler = ShortTermMemory(), TransitionAssembler()
    rng = np.random.default_rng(1)
    direction = rng.normal(size=latent_dim).astype(np.float32)
    state = np.zeros(latent_dim, np.float32)
    for i in range(n + 1):
        memory.add(assembler.latent(0.1 * i, state, model_id))
        action = np.r_[rng.uniform(-0.03, 0.03, 3), 1.0].astype(np.float32)
        assembler.action(0.1 * i, action)
        sign = -1 if reverse_from is not None and i >= reverse_from else 1
        state = (state + sign * direction * action[0] * 30).astype(np.float32)
    memory.add(assembler.flush())
    return memory


def test_world_model_adjustment_fine_tunes_only_the_predictor_and_keeps_only_an_improvement(tmp_path, one_thread):
    import torch
    from jepa_configurator.adjust_world_model import AdjustmentError, FineTuning, adjust_world_model
    from jepa_world_model.model import WorldModel, WorldModelConfig, load_checkpoint, save_checkpoint
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(latent_dim=16, encoder_channels=(4, 4, 4, 4), predictor_hidden=32,
                                        z_hidden=16, inverse_hidden=16))
    checkpoint = tmp_path / 'wm.pt'
    save_checkpoint(model, checkpoint, provenance={'data': 'play'})
    write_memory(tmp_path / 'surprise', surprising_memory(model.model_id), model.model_id)

    summary = adjust_world_model([str(tmp_path / 'surprise')], str(checkpoint), str(tmp_path / 'adjusted.pt'),
                                 FineTuning(steps=150, lr=3e-3), log=lambda m: None)
    assert summary['held_out_error_after'] < 0.5 * summary['held_out_error_before']
    assert summary['adjusted_from'] == model.model_id != summary['model_id']
    adjusted = load_checkpoint(tmp_path / 'adjusted.pt')
    assert adjusted.model_id == summary['model_id']
    before, after = model.state_dict(), adjusted.state_dict()
    changed = {k.split('.')[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {'predictor'}  # the encoder, and with it the latent space, is untouched
    provenance = torch.load(tmp_path / 'adjusted.pt', weights_only=True)['provenance']
    assert provenance['data'] == 'play' and provenance['adjustments'][0]['adjusted_from'] == model.model_id

    # Latents of another model, or fine-tuning that does not carry over to the held-out, most recent
    # transitions (there the world behaves the other way): refused, and nothing is written.
    write_memory(tmp_path / 'other', surprising_memory('other@0'), 'other@0')
    with pytest.raises(AdjustmentError, match='other@0'):
        adjust_world_model([str(tmp_path / 'other')], str(checkpoint), str(tmp_path / 'x.pt'), log=lambda m: None)
    write_memory(tmp_path / 'reversed', surprising_memory(model.model_id, reverse_from=90), model.model_id)
    with pytest.raises(AdjustmentError, match='stays'):
        adjust_world_model([str(tmp_path / 'reversed')], str(checkpoint), str(tmp_path / 'y.pt'),
                           FineTuning(steps=150, lr=3e-3), log=lambda m: None)
    assert not (tmp_path / 'x.pt').exists() and not (tmp_path / 'y.pt').exists()


def test_adjust_world_model_cli_reports_a_refusal_by_name(tmp_path, capsys, one_thread):
    from jepa_configurator.adjust_world_model import main
    from jepa_world_model.model import WorldModel, WorldModelConfig, save_checkpoint
    model = WorldModel(WorldModelConfig(latent_dim=16, encoder_channels=(4, 4, 4, 4), predictor_hidden=32,
                                        z_hidden=16, inverse_hidden=16))
    save_checkpoint(model, tmp_path / 'wm.pt')
    write_memory(tmp_path / 'other', surprising_memory('other@0'), 'other@0')
    args = ['--bag', str(tmp_path / 'other'), '--checkpoint', str(tmp_path / 'wm.pt'), '--out', str(tmp_path / 'x.pt')]
    assert main(args) == 1
    assert 'jepa adjust-world-model: ' in capsys.readouterr().err and not (tmp_path / 'x.pt').exists()
    write_memory(tmp_path / 'mine', surprising_memory(model.model_id), model.model_id)
    args = ['--bag', str(tmp_path / 'mine'), '--checkpoint', str(tmp_path / 'wm.pt'), '--out', str(tmp_path / 'y.pt'),
            '--lr', '3e-3', '--steps', '100']
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)['out'] == str(tmp_path / 'y.pt')
