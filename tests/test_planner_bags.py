"""Short-term memory <-> rosbag2 (real mcap bags through rosbags, messages serialized by rclpy)."""
import json

import numpy as np
import pytest

from jepa_planner.bags import BagError, read_memory, write_memory
from jepa_planner.memory import COST_FIELDS, ShortTermMemory, TransitionAssembler
from test_planner_core import one_thread  # noqa: F401  (fixture: torch on one thread)


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

    from jepa_planner.cost import Critic
    from jepa_planner.train_critic import main
    rng = np.random.default_rng(1)
    embed = rng.normal(size=(6, 8)).astype(np.float32)
    memory, assembler = ShortTermMemory(), TransitionAssembler()
    stamp = 1.0
    for episode in range(12):
        memory.add(assembler.goal(embed[-1] + 0.001 * episode))  # a new episode each time
        for s in list(range(episode % 5, 6)) + [5, 5]:
            memory.add(assembler.latent(stamp, embed[s], 'chain@0'))
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
