"""The message type store bags of this stack are written and read with.

ROS 2 Jazzy's standard types come with rosbags; jepa_interfaces types are registered from their installed
.msg files so that every bag carries their full definitions (Foxglove and `ros2 bag` need them).
"""
import functools
import logging
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from jepa_common.paths import package_share

_log = logging.getLogger(__name__)


@functools.cache
def jepa_typestore() -> Typestore:
    """Jazzy's types plus jepa_interfaces/msg/*. Shared and cached: do not register more types into it."""
    store = get_typestore(Stores.ROS2_JAZZY)
    try:
        msg_dir = Path(package_share('jepa_interfaces')) / 'msg'
    except PackageNotFoundError:
        # Reading bags still works: our bags embed their definitions. Writing our types will be refused.
        _log.warning('jepa_interfaces is not installed; its message types are unknown to the bag type store')
        return store
    types = {}
    for path in sorted(msg_dir.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'jepa_interfaces/msg/{path.stem}'))
    store.register(types)
    return store
