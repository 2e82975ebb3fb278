"""ROS packaging: every package.xml declares what its package's code imports, and the jepa_* packages do not
depend on each other in a cycle, so that `rosdep install --from-paths src` installs what the nodes need and
colcon builds the packages in an order that works.

Imports are read with ast from every .py file of a package (function-level imports included: they run too).
A module maps to the key package.xml must name: a ROS package by its own name, a Python library by its
rosdep key. A module missing from both tables fails the test, so a new import needs a decision here.
"""
import ast
import sys
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

SRC = Path(__file__).resolve().parents[1] / 'src'
PACKAGES = sorted(p.parent for p in SRC.glob('jepa_*/package.xml'))
PYTHON_PACKAGES = [p for p in PACKAGES if (p / 'setup.py').is_file()]

# ROS packages the code imports, declared under their own names (jepa_* ones are recognized by prefix).
ROS_PACKAGES = {'rclpy', 'ament_index_python', 'launch', 'launch_ros', 'builtin_interfaces', 'rcl_interfaces',
                'std_msgs', 'std_srvs', 'sensor_msgs', 'geometry_msgs', 'trajectory_msgs', 'diagnostic_msgs',
                'visualization_msgs', 'rosgraph_msgs'}
# Python libraries: module -> rosdep key (rosdistro's rosdep/python.yaml). A key ending in -pip names a PyPI
# package that has no rosdistro key: rosdep resolves it from a local source mapping it to pip, or skips it and
# requirements.txt installs it (jepa_sim/package.xml says so).
PYTHON_KEYS = {
    'numpy': 'python3-numpy',
    'yaml': 'python3-yaml',
    'cv2': 'python3-opencv',
    'torch': 'python3-torch',
    'matplotlib': 'python3-matplotlib',
    'tqdm': 'python3-tqdm',
    'PIL': 'python3-pil',
    'zstandard': 'python3-zstandard',
    # pinocchio is a ROS package (robotpkg / ros-jazzy-pinocchio); pip users get it as `pin`.
    'pinocchio': 'pinocchio',
    'pybullet': 'python3-pybullet-pip',
    'pybullet_data': 'python3-pybullet-pip',
    'rosbags': 'python3-rosbags-pip',
    'mcap': 'python3-mcap-pip',
    'pyarrow': 'python3-pyarrow-pip',
    # What rosbags itself reads with, imported for their error types (jepa_rosbag.reader), and installed with
    # rosbags: apsw (sqlite3 bags) and, before Python 3.14, backports.zstd; on 3.14 that is the standard
    # library's `compression`.
    'apsw': 'python3-rosbags-pip',
    'backports': 'python3-rosbags-pip',
    'compression': None,
}


def imported_modules(package: Path) -> set[str]:
    """Top-level names of the absolute imports in the package's Python code, the standard library left out."""
    modules = set()
    for path in (package / package.name).rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split('.')[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split('.')[0])
    return {m for m in modules if m not in sys.stdlib_module_names}


def declared(package: Path) -> set[str]:
    """The run and build dependencies of package.xml as colcon and rosdep read it (<depend> counts as all of
    them; test_depend and doc_depend are not needed to run the package)."""
    manifest = parse_package(package / 'package.xml')
    return {d.name for kind in (manifest.build_depends, manifest.buildtool_depends, manifest.build_export_depends,
                                manifest.exec_depends) for d in kind}


def key_of(module: str) -> str | None:
    if module.startswith('jepa_') or module in ROS_PACKAGES:
        return module
    if module in PYTHON_KEYS:
        return PYTHON_KEYS[module]
    raise KeyError(f'module {module!r}: add it to ROS_PACKAGES or PYTHON_KEYS with its rosdep key')


@pytest.mark.parametrize('package', PYTHON_PACKAGES, ids=lambda p: p.name)
def test_package_xml_declares_every_import(package):
    needed = {key_of(m) for m in imported_modules(package) if m != package.name} - {None}
    missing = sorted(needed - declared(package))
    assert not missing, f'{package.name}/package.xml lacks <depend>/<exec_depend> on {missing}'


@pytest.mark.parametrize('package', PACKAGES, ids=lambda p: p.name)
def test_package_xml_is_valid_and_names_its_folder(package):
    manifest = parse_package(package / 'package.xml')
    manifest.validate()
    assert manifest.name == package.name


def dependency_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """One cycle of the dependency graph (package -> packages it depends on), as a path, or None."""
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name):], name]
        if name in done:
            return None
        for dependency in edges.get(name, []):
            cycle = visit(dependency, path + (name,))
            if cycle:
                return cycle
        done.add(name)
        return None

    return next((cycle for name in sorted(edges) if (cycle := visit(name, ()))), None)


def test_jepa_packages_do_not_depend_on_each_other_in_a_cycle():
    names = {p.name for p in PACKAGES}
    cycle = dependency_cycle({p.name: sorted(declared(p) & names - {p.name}) for p in PACKAGES})
    assert cycle is None, f'package dependency cycle: {" -> ".join(cycle)}'


def test_the_checks_see_an_undeclared_import_and_a_cycle(tmp_path):
    """The helpers above on a made-up package importing a sibling it does not declare, and a made-up cycle."""
    package = tmp_path / 'jepa_a'
    (package / 'jepa_a').mkdir(parents=True)
    (package / 'jepa_a' / 'node.py').write_text('import os\nimport numpy\n\ndef f():\n    from jepa_b import x\n')
    (package / 'package.xml').write_text(
        '<package format="3"><name>jepa_a</name><version>0.1.0</version><description>a</description>'
        '<maintainer email="a@b.org">a</maintainer><license>Apache-2.0</license>'
        '<exec_depend>python3-numpy</exec_depend></package>')
    assert imported_modules(package) == {'numpy', 'jepa_b'}
    assert {key_of(m) for m in imported_modules(package)} - declared(package) == {'jepa_b'}
    with pytest.raises(KeyError, match='requests'):
        key_of('requests')
    assert dependency_cycle({'a': ['b'], 'b': ['c'], 'c': ['a']}) == ['a', 'b', 'c', 'a']
    assert dependency_cycle({'a': ['b', 'c'], 'b': ['c'], 'c': []}) is None
