"""Short-term memory episodes <-> rosbag2 bags on the agent's own topics (/jepa/latent, /jepa/action,
/jepa/cost, /jepa/prediction, /jepa/goal_latent: fully qualified, as a graph in the root namespace names them), so a
memory dump and a `jepa record` bag read the same.

Writing and reading go through jepa_rosbag (the stack's recorder and reader); messages are serialized by
rclpy, so the bags hold real CDR with the jepa_interfaces definitions embedded.
"""
from pathlib import Path
from typing import Iterable

import numpy as np
from jepa_rosbag.reader import BagError, BagReader
from jepa_rosbag.recorder import BagRecorder, RecorderError
from rclpy.serialization import serialize_message

from jepa_common.conversions import latent_to_msg, msg_to_latent, sec_to_stamp, stamp_to_sec
from jepa_short_term_memory.memory import COST_FIELDS, TOPICS, MemoryConfig, ShortTermMemory, TransitionAssembler

__all__ = ['BagError', 'read_memory', 'write_memory', 'write_play']

# The memory's topics as bags name them.
BAG_TOPICS = {kind: '/' + name for kind, name in TOPICS.items()}
MSG_TYPES = {BAG_TOPICS['latent']: 'jepa_interfaces/msg/LatentState',
             BAG_TOPICS['action']: 'jepa_interfaces/msg/ActionStamped',
             BAG_TOPICS['cost']: 'jepa_interfaces/msg/CostTerms',
             BAG_TOPICS['prediction']: 'jepa_interfaces/msg/LatentState',
             BAG_TOPICS['goal']: 'jepa_interfaces/msg/LatentState'}


def write_messages(path: str | Path, messages: Iterable[tuple[str, object, int]]) -> int:
    """Write (topic, rclpy message, log time ns) to a new mcap bag at path; returns the count."""
    return write_play(path, ((topic, int(log_time), serialize_message(msg)) for topic, msg, log_time in messages),
                      MSG_TYPES)


def memory_messages(memory: ShortTermMemory, model_id: str = '') -> list[tuple[str, object, int]]:
    """The messages that, replayed through a TransitionAssembler, give back the memory's episodes."""
    from jepa_interfaces.msg import ActionStamped, CostTerms
    out = []
    ns = lambda seconds, offset=0: max(0, int(round(seconds * 1e9)) + offset)  # noqa: E731
    for episode in memory.episodes():
        first = episode['stamps'][0]
        if np.all(np.isfinite(episode['goals'][0])):
            # Just before the first state, so a reader starts the episode with its goal.
            out.append((BAG_TOPICS['goal'], latent_to_msg(episode['goals'][0], sec_to_stamp(first), model_id),
                        ns(first, -1)))
        for i, stamp in enumerate(episode['stamps']):
            header_stamp = sec_to_stamp(stamp)
            out.append((BAG_TOPICS['latent'], latent_to_msg(episode['states'][i], header_stamp, model_id), ns(stamp)))
            terms = episode['cost_terms'][i]
            if np.all(np.isfinite(terms)):
                cost = CostTerms(total=float(terms.sum()), **{f: float(v) for f, v in zip(COST_FIELDS, terms)})
                cost.header.stamp = header_stamp
                out.append((BAG_TOPICS['cost'], cost, ns(stamp, 1)))
            if np.all(np.isfinite(episode['actions'][i])):
                action = ActionStamped(space='ee_delta', data=episode['actions'][i].astype(np.float32).tolist())
                action.header.stamp = header_stamp
                out.append((BAG_TOPICS['action'], action, ns(stamp, 2)))
            if np.all(np.isfinite(episode['predicted'][i])):
                # Stamped like the world model's: with the stamp of the state predicted from.
                out.append((BAG_TOPICS['prediction'], latent_to_msg(episode['predicted'][i], header_stamp, model_id),
                            ns(stamp, 3)))
        last = episode['next_stamps'][-1]
        out.append((BAG_TOPICS['latent'], latent_to_msg(episode['next_states'][-1], sec_to_stamp(last), model_id),
                    ns(last)))
    return sorted(out, key=lambda m: m[2])  # stable: ties keep the order above


def write_memory(path: str | Path, memory: ShortTermMemory, model_id: str = '') -> int:
    """Write the memory's episodes to a new bag; returns the number of transitions written."""
    write_messages(path, memory_messages(memory, model_id))
    return len(memory)


def write_play(path: str | Path, messages: Iterable[tuple[str, int, bytes]], types: dict[str, str]) -> int:
    """Write serialized messages (bag topic, log time ns, CDR bytes; a PlayRing's as received) to a new mcap bag at
    path, each topic with its message type (`types`: bag topic -> type name), as a recorder would; -> the count."""
    try:
        recorder = BagRecorder(path)
        count = 0
        try:
            for topic, log_time, data in messages:
                recorder.add_topic(topic, types[topic])
                recorder.write(topic, log_time, data)
                count += 1
        finally:
            recorder.close()
    except RecorderError as exc:
        raise BagError(str(exc)) from exc
    return count


def cost_terms_of(msg) -> np.ndarray:
    # Bags carry the CostTerms definition they were written with; a term that definition lacks (`latent`,
    # before the energy was split in two) was not part of the cost then: 0, so the intrinsic total is kept.
    return np.array([getattr(msg, f, 0.0) for f in COST_FIELDS], dtype=np.float32)


def read_memory(paths: Iterable[str | Path], capacity: int = 1_000_000, max_gap: float = MemoryConfig.max_gap,
                log=print) -> ShortTermMemory:
    """Rebuild transitions from bags (written by write_memory or `jepa record`); bad messages are logged
    and skipped. Each bag starts new episodes. The returned memory's `model_ids` names the models whose
    latents the bags hold."""
    memory = ShortTermMemory(capacity)
    assembler = TransitionAssembler(max_gap=max_gap)
    model_ids = set()

    for path in paths:
        memory.add(assembler.new_episode())
        with BagReader(path) as bag:
            topics = [t for t in BAG_TOPICS.values() if t in bag.topics]
            messages = [(m.topic, m.message) for m in bag.messages(topics)]
        for topic, msg in messages:
            try:
                if topic == BAG_TOPICS['latent']:
                    model_ids.add(msg.model_id)
                    memory.add(assembler.latent(stamp_to_sec(msg.header.stamp), msg_to_latent(msg).reshape(-1),
                                          msg.model_id))
                elif topic == BAG_TOPICS['goal']:
                    memory.add(assembler.goal(msg_to_latent(msg).reshape(-1)))
                elif topic == BAG_TOPICS['prediction']:
                    assembler.prediction(stamp_to_sec(msg.header.stamp), msg_to_latent(msg).reshape(-1))
                elif topic == BAG_TOPICS['action']:
                    assembler.action(stamp_to_sec(msg.header.stamp), np.asarray(msg.data, dtype=np.float32))
                elif topic == BAG_TOPICS['cost']:
                    assembler.cost(stamp_to_sec(msg.header.stamp), cost_terms_of(msg))
            except ValueError as exc:
                log(f'{path}: skipping a bad {topic} message: {exc}')
    memory.add(assembler.flush())
    memory.model_ids = model_ids
    return memory
