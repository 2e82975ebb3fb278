"""rosbag2 metadata.yaml (version 9, as Jazzy writes it) for bags made of several split files.

rosbags' Writer writes one storage file per bag; the recorder and `reindex` write the bag-level
metadata.yaml themselves, atomically, so that it always lists only complete, closed files.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rosbags.interfaces import Qos
from rosbags.rosbag2.metadata import dump_qos_v9

METADATA_VERSION = 9
ROS_DISTRO = 'jazzy'


@dataclass
class SplitFile:
    """One closed storage file of a bag."""
    path: str  # relative to the bag directory
    start_ns: int
    end_ns: int
    message_count: int


@dataclass
class TopicEntry:
    """One topic of a bag with the profiles its publishers offered."""
    name: str
    msgtype: str
    type_hash: str
    offered_qos: list[Qos] = field(default_factory=list)
    message_count: int = 0
    serialization_format: str = 'cdr'


def metadata_dict(storage_id: str, splits: list[SplitFile], topics: list[TopicEntry], *,
                  compression_format: str = '', compression_mode: str = '',
                  custom_data: dict[str, str] | None = None) -> dict:
    counted = [s for s in splits if s.message_count]
    start = min((s.start_ns for s in counted), default=0)
    end = max((s.end_ns for s in counted), default=0)
    return {'rosbag2_bagfile_information': {
        'version': METADATA_VERSION,
        'storage_identifier': storage_id,
        'duration': {'nanoseconds': end - start},
        'starting_time': {'nanoseconds_since_epoch': start},
        'message_count': sum(s.message_count for s in splits),
        'topics_with_message_count': [{
            'topic_metadata': {
                'name': t.name,
                'type': t.msgtype,
                'serialization_format': t.serialization_format,
                'offered_qos_profiles': dump_qos_v9(t.offered_qos),
                'type_description_hash': t.type_hash,
            },
            'message_count': t.message_count,
        } for t in topics],
        'compression_format': compression_format,
        'compression_mode': compression_mode,
        'relative_file_paths': [s.path for s in splits],
        'files': [{
            'path': s.path,
            'starting_time': {'nanoseconds_since_epoch': s.start_ns if s.message_count else 0},
            'duration': {'nanoseconds': s.end_ns - s.start_ns if s.message_count else 0},
            'message_count': s.message_count,
        } for s in splits],
        'custom_data': custom_data or None,
        'ros_distro': ROS_DISTRO,
    }}


def write_metadata(bag_dir: Path, storage_id: str, splits: list[SplitFile], topics: list[TopicEntry],
                   **kwargs) -> Path:
    """Write <bag_dir>/metadata.yaml atomically (a crash leaves the previous version, never half a file)."""
    path = Path(bag_dir) / 'metadata.yaml'
    tmp = path.with_suffix('.yaml.tmp')
    with open(tmp, 'w', encoding='utf8') as stream:
        yaml.safe_dump(metadata_dict(storage_id, splits, topics, **kwargs), stream, sort_keys=False)
        stream.flush()
        os.fsync(stream.fileno())
    tmp.replace(path)
    return path
