"""Where installed package data lives, for system-ROS (colcon) and pip-only (.venv) installs alike."""
import os
import sys

from ament_index_python.packages import get_package_share_directory


def package_share(package: str) -> str:
    """The package's share directory. A pip-only install has no setup.bash to export AMENT_PREFIX_PATH;
    there the venv prefix is the install prefix (scripts/setup_venv.sh registers our packages there)."""
    if not os.environ.get('AMENT_PREFIX_PATH'):
        os.environ['AMENT_PREFIX_PATH'] = sys.prefix
    return get_package_share_directory(package)
