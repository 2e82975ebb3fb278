"""The arm presets (config/arms/<name>.yaml, installed with jepa_bringup): one reader for the graph, calibration,
play collection and training."""
import os
import re
from pathlib import Path

import yaml

from jepa_common.paths import package_share

PRESET_DIR = 'arms'


def presets_dir() -> Path:
    """config/arms/ as installed with jepa_bringup (the arm graph's presets)."""
    return Path(package_share('jepa_bringup')) / 'config' / PRESET_DIR


def read_preset(name: str, directory: str | os.PathLike | None = None) -> dict:
    """The arm preset <directory>/<name>.yaml as a dict; ValueError naming what is wrong (an unknown name lists
    the presets there)."""
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
    preset['_path'] = str(path)
    return preset
