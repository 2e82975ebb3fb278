"""Where a reported figure came from (ROS-free): the code, the learned files, the machine and its load, the date.

Every report of `jepa eval` carries this, so that a figure can be traced to the commit, checkpoints and settings
that produced it and to the load the machine was under while it was measured.
"""
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

from jepa_common.digest import file_sha256


def git_state(where: str | Path = Path(__file__).resolve().parent) -> dict:
    """The commit of the source tree this code runs from, and whether tracked files differ from it; 'unknown'
    outside a git checkout (an installed package)."""
    def git(*args: str) -> str:
        return subprocess.run(['git', '-C', str(where), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    try:
        return {'commit': git('rev-parse', 'HEAD'), 'dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}
    except (OSError, subprocess.SubprocessError):
        return {'commit': 'unknown', 'dirty': None}


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_load() -> dict:
    """1-, 5- and 15-minute load averages and the cores this process may run on."""
    one, five, fifteen = os.getloadavg()
    return {'loadavg_1_5_15': [one, five, fifteen], 'usable_cores': len(os.sched_getaffinity(0))}


def files_sha256(files: dict[str, str | Path]) -> dict:
    """{name: {'path', 'sha256'}} for each named file ('' or missing: recorded as such, not hashed)."""
    out = {}
    for name, path in files.items():
        if not path:
            out[name] = {'path': '', 'sha256': None}
        elif not Path(path).is_file():
            out[name] = {'path': str(path), 'sha256': None, 'problem': 'not a file'}
        else:
            out[name] = {'path': str(path), 'sha256': file_sha256(path)}
    return out


def provenance(command: list[str]) -> dict:
    """What is known before a run starts: code, command line, machine, load, date. The caller adds the files
    and parameters it used, and the load at the end."""
    import torch
    return {
        'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'git': git_state(),
        'command': command,
        'machine': {'cpu': cpu_model(), 'cores': os.cpu_count(), 'host': platform.node(),
                    'python': sys.version.split()[0], 'torch': torch.__version__},
        'load_start': machine_load(),
    }
