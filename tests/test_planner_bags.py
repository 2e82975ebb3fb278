"""Short-term memory <-> rosbag2 (real mcap bags through rosbags, messages serialized by rclpy)."""
import numpy as np
import pytest

from jepa_planner.bags import BagError, read_memory, write_memory
from jepa_planner.memory import COST_FIELDS, ShortTermMemory, TransitionAssembler


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
