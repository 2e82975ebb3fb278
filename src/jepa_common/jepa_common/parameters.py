"""Node parameters declared from config dataclasses: each setting's default, description and range live once.

A config dataclass (ROS-free, it validates itself in `__post_init__`) marks its fields with
`jepa_common.settings.setting(...)`;
a node calls `declare_config(node, Config)` to declare one parameter per field and build the config from the
values it was launched with. Every parameter is read-only unless its field says `live=True`, so `ros2 param
set` on a setting the node would ignore is refused with rclpy's reason instead of answering "successful";
a node with live settings applies them through `changed_config` in its on-set-parameters callback.
"""
import dataclasses
import os
import typing

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from jepa_common.kinematics import DEFAULT_WORKSPACE, PANDA_ARM_JOINTS, PANDA_EE_FRAME, PANDA_FINGER_JOINTS, \
    ArmKinematics
from jepa_common.settings import config_fields

_ARRAY_TYPES = {str: Parameter.Type.STRING_ARRAY, float: Parameter.Type.DOUBLE_ARRAY,
                int: Parameter.Type.INTEGER_ARRAY, bool: Parameter.Type.BOOL_ARRAY}


def descriptor(default, description: str, span: tuple | None = None, *, live: bool = False,
               **options) -> ParameterDescriptor:
    """The ParameterDescriptor of a parameter: read-only unless live; span -> an integer or floating-point
    range (inclusive) matching the default's type."""
    result = ParameterDescriptor(description=description, read_only=not live, **options)
    if span is not None:
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise TypeError(f'a range needs a numeric default, got {default!r}')
        if isinstance(default, int):
            result.integer_range = [IntegerRange(from_value=int(span[0]), to_value=int(span[1]), step=1)]
        else:
            result.floating_point_range = [FloatingPointRange(from_value=float(span[0]), to_value=float(span[1]),
                                                              step=0.0)]
    return result


def declare(node: Node, name: str, default, description: str, span: tuple | None = None, *, live: bool = False,
            element_type: type | None = None, **options):
    """Declare one parameter with its description (and range) and return its value. An empty-list default
    needs element_type (str, float, int or bool): rclpy cannot tell an empty list's type from its value, so the
    parameter is declared with dynamic typing, holding [] (set, so `ros2 param get` and the get_parameters
    service answer for it), and a value given for it is checked against element_type here."""
    if isinstance(default, (list, tuple)) and not default:
        if element_type not in _ARRAY_TYPES:
            raise TypeError(f'parameter {name}: an empty list default needs element_type (str, float, int, bool)')
        options['dynamic_typing'] = True
        value = node.declare_parameter(name, [], descriptor(default, description, span, live=live, **options)).value
        value = [] if value is None else list(value) if isinstance(value, (list, tuple)) else value
        if not isinstance(value, list) or not all(isinstance(v, element_type) or
                                                  (element_type is float and isinstance(v, int)) for v in value):
            raise ValueError(f'parameter {name} must be a list of {element_type.__name__}, got {value!r}')
        return [float(v) for v in value] if element_type is float else value
    if default is None:
        options.setdefault('dynamic_typing', True)
    value = node.declare_parameter(name, list(default) if isinstance(default, tuple) else default,
                                   descriptor(default, description, span, live=live, **options)).value
    return list(value) if isinstance(value, (list, tuple)) else value


def _element_type(cls, field: dataclasses.Field) -> type | None:
    hint = typing.get_type_hints(cls).get(field.name)
    args = typing.get_args(hint)
    return args[0] if args and args[0] in _ARRAY_TYPES else None


def declare_config(node: Node, cls, *, prefix: str = '', defaults=None):
    """Declare every setting() field of config dataclass cls as parameter prefix + name; -> cls built from the
    values the node was launched with. defaults: an instance whose values replace the class defaults (e.g.
    one derived from the arm preset). A value the config refuses raises ValueError naming the parameter."""
    base = defaults if defaults is not None else cls()
    values = {}
    for field in config_fields(cls):
        meta = field.metadata
        values[field.name] = declare(node, prefix + field.name, getattr(base, field.name), meta['description'],
                                     meta['span'], live=meta['live'], element_type=_element_type(cls, field))
    try:
        return dataclasses.replace(base, **values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{node.get_name()}: invalid parameters{" " + prefix if prefix else ""}: {exc}') from exc


def changed_config(config, parameters, *, prefix: str = ''):
    """(new config, names changed) for the parameters among `parameters` that are live settings of config;
    ValueError if the new config refuses them. Parameters outside the config are ignored here (rclpy has
    already refused read-only ones)."""
    live = {f.name for f in config_fields(type(config)) if f.metadata['live']}
    changes = {}
    for parameter in parameters:
        name = parameter.name[len(prefix):] if parameter.name.startswith(prefix) else None
        if name in live:
            current = getattr(config, name)
            value = parameter.value
            changes[name] = type(current)(value) if isinstance(current, (int, float, str)) and \
                not isinstance(current, bool) else value
    return (dataclasses.replace(config, **changes) if changes else config), tuple(changes)


def apply_changes(config, parameters, appliers: dict | None = None, *, prefix: str = ''):
    """(config to keep, answer) for an on-set-parameters callback: the live settings among `parameters` validated
    by the config; each changed one with an applier (name -> fn(new value) -> (ok, message), e.g. loading a
    checkpoint) applied, a failure refusing the change. On refusal the config returned is the current one."""
    try:
        new, changed = changed_config(config, parameters, prefix=prefix)
    except ValueError as exc:
        return config, result(str(exc))
    for name in changed:
        if name in (appliers or {}):
            ok, message = appliers[name](getattr(new, name))
            if not ok:
                return config, result(message)
    return new, result()


def result(reason: str = '') -> SetParametersResult:
    """An on-set-parameters answer: successful when there is no reason to refuse."""
    return SetParametersResult(successful=not reason, reason=reason)


def declare_kinematics(node: Node) -> ArmKinematics:
    """The arm preset's parameters, which the graph passes to every node that needs the arm -> ArmKinematics."""
    urdf_path = declare(node, 'urdf_path', '', "arm URDF for joint limits and kinematics; '' = the Panda")
    arm_joints = declare(node, 'arm_joints', list(PANDA_ARM_JOINTS), 'arm joints, in the order actions use')
    finger_joints = declare(node, 'finger_joints', list(PANDA_FINGER_JOINTS), 'gripper joints; may be empty',
                            element_type=str)
    ee_frame = declare(node, 'ee_frame', '', "end-effector frame; '' = panda_grasptarget") or PANDA_EE_FRAME
    home = declare(node, 'home', [], "home joint positions (rad); [] = the preset's", element_type=float)
    workspace_min = declare(node, 'workspace_min', [lo for lo, _ in DEFAULT_WORKSPACE],
                            'workspace box corner x, y, z (m, base frame)')
    workspace_max = declare(node, 'workspace_max', [hi for _, hi in DEFAULT_WORKSPACE],
                            'workspace box corner x, y, z (m, base frame)')
    max_step = declare(node, 'max_step', 0.03, 'largest end-effector step of one action (m): the action bound',
                       (0.001, 0.2))
    return ArmKinematics(os.path.expanduser(urdf_path) if urdf_path else None, arm_joints=arm_joints,
                         finger_joints=finger_joints, ee_frame=ee_frame, home=home or None, max_step=max_step,
                         workspace=tuple(zip(workspace_min, workspace_max)))
