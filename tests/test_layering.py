"""The house's rules, read from the code with ast: one room per module of the architecture, no package imports
one above it, and the rooms' cores are ROS-free (usable from a notebook without rclpy).

Imports are collected from every statement, function-level ones included (they run too).
"""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / 'src'
# Low to high: a package may import its own modules and those of packages before it, never after.
LAYERS = [
    {'jepa_interfaces'},
    {'jepa_common'},
    {'jepa_sim', 'jepa_safety', 'jepa_rosbag'},
    {'jepa_world_model'},
    {'jepa_perception'},
    {'jepa_cost'},
    {'jepa_short_term_memory'},
    {'jepa_actor'},
    {'jepa_configurator'},
    {'jepa_bringup'},
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
# The architecture's six modules: each is a package with its node beside its core.
ROOMS = {'perception': 'jepa_perception', 'world model': 'jepa_world_model', 'cost': 'jepa_cost',
         'short-term memory': 'jepa_short_term_memory', 'actor': 'jepa_actor',
         'configurator': 'jepa_configurator'}
# Modules that are ROS wiring, not a core: rclpy is theirs to use. Every other module of a room is core.
ROS_SIDE = {
    'jepa_common': {'node', 'parameters', 'qos', 'joint_states'},
    # Memory bags hold real CDR: rclpy's serializer writes them.
    'jepa_short_term_memory': {'bags'},
}


def modules(package: str):
    return sorted((SRC / package / package).rglob('*.py'))


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module)
    return found


def test_every_source_package_has_a_layer():
    packages = {p.parent.name for p in SRC.glob('jepa_*/package.xml')}
    assert packages == set(RANK), f'add new packages to LAYERS: {sorted(packages ^ set(RANK))}'


@pytest.mark.parametrize('room', sorted(ROOMS))
def test_each_module_of_the_architecture_is_a_package_with_a_node(room):
    package = ROOMS[room]
    names = {p.stem for p in modules(package)}
    assert any(n.endswith('_node') for n in names), f'{room}: {package} has no node'
    assert names - {n for n in names if n.endswith('_node')} - {'__init__'} - ROS_SIDE.get(package, set()), \
        f'{room}: {package} has no ROS-free core beside its node'


@pytest.mark.parametrize('package', sorted(RANK), ids=str)
def test_no_package_imports_one_above_it(package):
    above = []
    for path in modules(package):
        for name in imports(path):
            top = name.split('.')[0]
            if top in RANK and RANK[top] > RANK[package]:
                above.append(f'{path.relative_to(SRC)} imports {name}')
    assert not above, '\n'.join(above)


@pytest.mark.parametrize('package', sorted(set(ROOMS.values())) + ['jepa_common'], ids=str)
def test_cores_do_not_import_rclpy(package):
    offenders = []
    for path in modules(package):
        if path.stem.endswith('_node') or path.stem in ROS_SIDE.get(package, set()):
            continue
        ros = {name for name in imports(path) if name.split('.')[0] == 'rclpy'}
        if ros:
            offenders.append(f'{path.relative_to(SRC)}: {sorted(ros)}')
    assert not offenders, 'core modules importing rclpy:\n' + '\n'.join(offenders)


@pytest.mark.parametrize('package', sorted(set(RANK) - {'jepa_interfaces'}))
def test_no_module_imports_a_node_module_of_another_package(package):
    """Nodes are not libraries: what another package needs lives in a core or ROS-side module."""
    offenders = []
    for path in modules(package):
        for name in imports(path):
            parts = name.split('.')
            if parts[0] in RANK and parts[0] != package and parts[-1].endswith('_node'):
                offenders.append(f'{path.relative_to(SRC)} imports {name}')
    assert not offenders, '\n'.join(offenders)
