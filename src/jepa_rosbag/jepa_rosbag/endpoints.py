"""Endpoints of the recorder and replay: message classes by type name, and QoS between rclpy and rosbag2.

What publishers offered is recorded in the bag; the recorder's subscriptions and the replay's publishers
adapt to it. Only reliability and durability decide whether endpoints match, so those are what the
adaptation is about (the same rule `ros2 bag` follows).
"""
import importlib

from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

_NS = 1_000_000_000


def message_class(msgtype: str):
    """'pkg/msg/Name' -> the installed rclpy message class (ImportError / AttributeError when not installed)."""
    package, _, name = msgtype.rpartition('/')
    return getattr(importlib.import_module(package.replace('/', '.')), name)


def _time(duration: Duration) -> QosTime:
    return QosTime(duration.nanoseconds // _NS, duration.nanoseconds % _NS)


def qos_from_rclpy(profile: QoSProfile) -> Qos:
    """An offered profile as the graph reports it (rmw enum values are rosbags' enum values)."""
    return Qos(
        QosHistory(int(profile.history)), profile.depth,
        QosReliability(int(profile.reliability)), QosDurability(int(profile.durability)),
        _time(profile.deadline), _time(profile.lifespan),
        QosLiveliness(int(profile.liveliness)), _time(profile.liveliness_lease_duration),
        bool(profile.avoid_ros_namespace_conventions))


def _all(offered: list[Qos], attribute: str, value) -> bool:
    return bool(offered) and all(getattr(q, attribute) == value for q in offered)


def subscription_qos(offered: list[Qos], depth: int) -> QoSProfile:
    """Match every offering publisher: reliable only if all are, transient local only if all are."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if _all(offered, 'reliability', QosReliability.RELIABLE)
        else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if _all(offered, 'durability', QosDurability.TRANSIENT_LOCAL)
        else DurabilityPolicy.VOLATILE)


def publisher_qos(offered: list[Qos], depth: int) -> QoSProfile:
    """Offer what the recorded publishers offered: best effort if any was, latched if all were."""
    best_effort = any(q.reliability == QosReliability.BEST_EFFORT for q in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if _all(offered, 'durability', QosDurability.TRANSIENT_LOCAL)
        else DurabilityPolicy.VOLATILE,
        liveliness=LivelinessPolicy.AUTOMATIC)
