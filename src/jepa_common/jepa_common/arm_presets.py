"""The arm presets (config/arms/<name>.yaml, installed with jepa_bringup): one reader for the graph, calibration,
play collection and training."""
import os
import re
from pathlib import Path

import yaml

from jepa_common.paths import package_share

PRESET_DIR = 'arms'
# A preset's URDF may name a file of the installed pybullet_data package (the simulated arms PyBullet ships).
PYBULLET_DATA_SCHEME = 'pybullet_data://'


def resolve_urdf_path(path: str) -> str:
    """A URDF path as a preset writes it, as a file name: `~` is the home directory, `pybullet_data://PATH` is
    PATH inside the installed pybullet_data package; '' stays '' (the simulator's Panda)."""
    path = str(path or '')
    if path.startswith(PYBULLET_DATA_SCHEME):
        import pybullet_data
        return os.path.join(pybullet_data.getDataPath(), path[len(PYBULLET_DATA_SCHEME):])
    return os.path.expanduser(path)


def presets_dir() -> Path:
    """config/arms/ as installed with jepa_bringup (the arm graph's presets)."""
    return Path(package_share('jepa_bringup')) / 'config' / PRESET_DIR


def read_preset(name: str, directory: str | os.PathLike | None = None) -> dict:
    """The arm preset <directory>/<name>.yaml as a dict, its kinematics.urdf resolved to a file name
    (resolve_urdf_path); ValueError naming what is wrong (an unknown name lists the presets there)."""
    directory = Path(directory) if directory else presets_dir()
    path = directory / f'{name}.yaml'
    if not re.fullmatch(r'[\w-]+', str(name)) or not path.is_file():
        available = sorted(p.stem for p in directory.glob('*.yaml'))
        raise ValueError(f'unknown arm preset {name!r}; presets in {directory}: {", ".join(available) or "none"}')
    try:
        preset = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f'arm preset {path} cannot be read: {error}') from error
    if not isinstance(preset, dict):
        raise ValueError(f'arm preset {path} must be a mapping')
    kinematics = preset.get('kinematics')
    if isinstance(kinematics, dict) and isinstance(kinematics.get('urdf'), str):
        kinematics['urdf'] = resolve_urdf_path(kinematics['urdf'])
    preset['_path'] = str(path)
    return preset
