"""Which arm a bag holds and where: the topics, joint names and kinematics training decodes a bag with. ROS-free.

`BagLayout()` is the simulated Panda's: /camera/image_raw, /joint_states, panda_joint1..7 and two fingers, the
Panda URDF the simulator uses. `layout_from_preset(name)` is an arm preset's (config/arms/<name>.yaml, the file the
`arm` graph and `jepa collect --arm` read): the camera topic (camera.image_topic), the joints (joints.arm,
joints.gripper, in the agent's order) and the kinematics (kinematics.urdf, ee_frame, home). The arm graph runs in
the root namespace and the recorder drops its own namespace, so a preset's relative topic
camera/camera/color/image_raw is /camera/camera/color/image_raw in the bag.

A preset's URDF file may be absent where the bag is trained on: a bag that recorded /robot_description (a driver's
robot_state_publisher latches it) then gives the kinematics itself (dataset.decode_bag).

A checkpoint trained on another arm than the simulated Panda records its layout (provenance['arm']): the commands
that decode bags for an existing checkpoint (eval-model, surprise, fit-readout, train --resume) decode with it when
no --arm is given, and refuse an --arm of another arm (`layout_for_checkpoint`).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from jepa_common.arm_presets import read_preset
from jepa_common.kinematics import PANDA_ARM_JOINTS, PANDA_EE_FRAME, PANDA_FINGER_JOINTS

IMAGE_TOPIC = '/camera/image_raw'
JOINT_TOPIC = '/joint_states'
ACTION_TOPIC = '/jepa/action'
EE_TOPIC = '/sim/ee_pose'
CUBE_TOPIC = '/sim/cube_pose'
DESCRIPTION_TOPIC = '/robot_description'


def bag_topic(topic: str) -> str:
    """The name a topic of the root namespace has in a bag: relative names made absolute."""
    return '/' + str(topic).lstrip('/')


@dataclass(frozen=True)
class BagLayout:
    """Topics, joints and kinematics of one arm's bags. `urdf` '' is the simulator's Panda URDF; `home` () is the
    kinematics' default (the Panda's ready pose)."""
    arm: str = ''                                   # the preset's name; '' = the simulated Panda, no preset
    image_topic: str = IMAGE_TOPIC
    joint_topic: str = JOINT_TOPIC
    arm_joints: tuple = PANDA_ARM_JOINTS
    gripper_joints: tuple = PANDA_FINGER_JOINTS
    urdf: str = ''
    ee_frame: str = PANDA_EE_FRAME
    home: tuple = ()

    def __post_init__(self):
        for name in ('image_topic', 'joint_topic'):
            object.__setattr__(self, name, bag_topic(getattr(self, name)))
        object.__setattr__(self, 'arm_joints', tuple(str(j) for j in self.arm_joints))
        object.__setattr__(self, 'gripper_joints', tuple(str(j) for j in self.gripper_joints))
        object.__setattr__(self, 'home', tuple(float(v) for v in self.home))
        object.__setattr__(self, 'urdf', os.path.expanduser(self.urdf) if self.urdf else '')
        if not self.arm_joints:
            raise ValueError('a bag layout needs at least one arm joint')
        joints = self.joints
        repeated = sorted({j for j in joints if joints.count(j) > 1})
        if repeated:
            raise ValueError(f'joints {repeated} are named twice in {self.describe()}')
        if self.home and len(self.home) != len(self.arm_joints):
            raise ValueError(f'{self.describe()}: home has {len(self.home)} values for {len(self.arm_joints)} arm '
                             'joints')

    @property
    def joints(self) -> tuple:
        """Arm then gripper joints: the order of Ticks.proprio's columns."""
        return (*self.arm_joints, *self.gripper_joints)

    @property
    def is_default(self) -> bool:
        return self == BagLayout()

    def describe(self) -> str:
        return f'arm preset {self.arm}' if self.arm else 'the simulated Panda (no --arm)'

    def same_arm(self, other: 'BagLayout') -> bool:
        """Whether `other` is the same arm: preset, joints and end-effector frame (the URDF's path and the camera topic
        may differ from one machine or recording to the next)."""
        fields = ('arm', 'arm_joints', 'gripper_joints', 'ee_frame')
        return all(getattr(self, name) == getattr(other, name) for name in fields)

    def to_dict(self) -> dict:
        values = asdict(self)
        values.update(arm_joints=list(self.arm_joints), gripper_joints=list(self.gripper_joints), home=list(self.home))
        return values

    def kinematics(self, urdf_path: str | None = None):
        """ArmKinematics of this arm, from `urdf_path` if given (a bag's robot_description), else `urdf`."""
        from jepa_common.kinematics import ArmKinematics
        return ArmKinematics(urdf_path or self.urdf or None, arm_joints=self.arm_joints,
                             finger_joints=self.gripper_joints, ee_frame=self.ee_frame, home=self.home or None)

    def with_overrides(self, urdf: str | None = None, image_topic: str | None = None) -> 'BagLayout':
        """This layout with the URDF and / or camera topic replaced (the arm graph's urdf:= and camera_topic:=)."""
        changes = {k: v for k, v in (('urdf', urdf), ('image_topic', image_topic)) if v}
        return replace(self, **changes) if changes else self


def _entry(preset: dict, key: str, kind):
    entry = preset
    for part in key.split('.'):
        if not isinstance(entry, dict) or part not in entry:
            raise ValueError(f'arm preset {preset.get("_path", "?")} has no entry {key!r}')
        entry = entry[part]
    if entry is None and kind is list:
        entry = []
    if not isinstance(entry, kind):
        raise ValueError(f'arm preset {preset.get("_path", "?")}: {key} must be a {kind.__name__}, got {entry!r}')
    return entry


def layout_from_preset(preset: dict | str, urdf: str | None = None, image_topic: str | None = None,
                       directory: str | os.PathLike | None = None) -> BagLayout:
    """The layout of the bags of an arm preset (a name, read from `directory`, or its dict), with the overrides
    the arm graph takes as urdf:= and camera_topic:=."""
    if isinstance(preset, str):
        preset = read_preset(preset, directory)
    name = Path(preset.get('_path', 'preset.yaml')).stem
    layout = BagLayout(arm=name, image_topic=_entry(preset, 'camera.image_topic', str),
                       arm_joints=tuple(_entry(preset, 'joints.arm', list)),
                       gripper_joints=tuple(_entry(preset, 'joints.gripper', list)),
                       urdf=_entry(preset, 'kinematics.urdf', str) or '',
                       ee_frame=_entry(preset, 'kinematics.ee_frame', str),
                       home=tuple(_entry(preset, 'kinematics.home', list)))
    return layout.with_overrides(urdf, image_topic)


def add_arm_arguments(parser: argparse.ArgumentParser, for_checkpoint: bool = False) -> None:
    """--arm, --urdf and --camera-topic: the arm the bags hold, for every command that decodes bags (for_checkpoint:
    one that decodes them for an existing checkpoint, whose arm is the default: layout_for_checkpoint)."""
    default = 'the arm the checkpoint was trained on' if for_checkpoint else 'the simulated Panda'
    arm = parser.add_argument_group(f'the arm the bags hold (default: {default})')
    arm.add_argument('--arm', default=None, metavar='PRESET',
                     help='arm preset (config/arms/PRESET.yaml: franka_fr3, panda, ur5e, kinova_gen3, ...): camera '
                          'topic, joint names and URDF kinematics of the bags, as `jepa collect --arm` recorded them')
    arm.add_argument('--urdf', default=None, metavar='FILE',
                     help="the arm's URDF in place of the preset's kinematics.urdf (the arm graph's urdf:=)")
    arm.add_argument('--camera-topic', default=None, metavar='TOPIC',
                     help="the camera image topic in place of the preset's camera.image_topic (the arm graph's "
                          'camera_topic:=)')


def arm_layout(args: argparse.Namespace) -> BagLayout:
    """The layout the bags are decoded with (add_arm_arguments' options): --arm's preset (ValueError naming an
    unknown one), or the simulated Panda's; --urdf and --camera-topic replace what either names."""
    return _with_overrides(layout_from_preset(args.arm) if args.arm else BagLayout(), args)


def _with_overrides(layout: BagLayout, args: argparse.Namespace) -> BagLayout:
    return layout.with_overrides(args.urdf and os.path.abspath(os.path.expanduser(args.urdf)), args.camera_topic)


def layout_for_checkpoint(args: argparse.Namespace, provenance: dict, checkpoint) -> tuple[BagLayout, str]:
    """(layout, note) to decode bags for the checkpoint `checkpoint` whose provenance is `provenance`, from
    add_arm_arguments' options. A checkpoint that records no arm (the simulated Panda's, or older) takes
    arm_layout(args). One that records its arm's layout: without --arm that layout, with --urdf and --camera-topic
    replacing what it names, and a note saying so; with --arm the preset's layout if it is the same arm, else
    ValueError naming both arms and the --arm to pass."""
    recorded = provenance.get('arm')
    if recorded is None:
        return arm_layout(args), ''
    try:
        learned = BagLayout(**recorded)
    except (TypeError, ValueError) as error:
        raise ValueError(f'{checkpoint}: its provenance records an arm layout this code cannot read ({error}): '
                         f'{recorded!r}') from error
    if not args.arm:
        note = f'decoding the bags as {learned.describe()}, the arm {checkpoint} was trained on'
        return _with_overrides(learned, args), note
    layout = arm_layout(args)
    if not layout.same_arm(learned):
        hint = f'pass --arm {learned.arm}, or ' if learned.arm else ''
        raise ValueError(f'{checkpoint} was trained on bags of {learned.describe()}, not of {layout.describe()}: '
                         f'{hint}leave --arm out to decode them as the arm it was trained on')
    return layout, ''
