"""Config dataclass fields that are node parameters (ROS-free): `setting(default, description, span, live)`.

The description, range and liveness live beside the default, once; jepa_common.parameters declares them on a
node. A config dataclass validates its values in `__post_init__`.
"""
import copy
import dataclasses


def setting(default, description: str, span: tuple | None = None, *, live: bool = False):
    """A config dataclass field that is also a node parameter: its description, (lo, hi) range when numeric,
    and whether a running node applies changes to it (live) or refuses them (read-only)."""
    metadata = {'description': description, 'span': span, 'live': live}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: copy.copy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_spans(config) -> None:
    """ValueError naming the first setting() field of a config dataclass that lies outside its span."""
    for field in config_fields(type(config)):
        span, value = field.metadata['span'], getattr(config, field.name)
        if span is not None and not span[0] <= value <= span[1]:
            raise ValueError(f'{field.name} must be in [{span[0]}, {span[1]}], got {value!r}')


def config_fields(cls) -> tuple[dataclasses.Field, ...]:
    """The fields of a config dataclass that are parameters (declared with setting())."""
    return tuple(f for f in dataclasses.fields(cls) if 'description' in f.metadata)
