"""The graph description (config/graph.yaml) resolved into the node processes to start. ROS-free.

`GraphFile(path).resolve('sim', {'gui': 'true'})` returns one `NodeSpec` per node to run: executable, node name,
namespace, command-line arguments, params files, parameter overrides, remaps and restart policy.
`launch/*.launch.py` and `jepa launch` both build their processes from these specs, so the two launchers cannot
drift apart. The file format is documented at the top of config/graph.yaml.

Every graph takes the launch argument `namespace` (NAMESPACE_ARGUMENT): `namespace:=arm1` puts every node of the
graph under /arm1, so two graphs (two arms) run side by side in one ROS domain, each with its own topics and
services (the nodes use relative names). /clock is global in ROS; a namespaced graph's nodes have it remapped
to <namespace>/clock, so that two simulators, each the clock of its own world, do not interleave their times.
A params file applies to a node under its fully qualified name only, so a namespaced graph's nodes get copies
of their params files keyed by /<namespace>/<node> (namespaced_params_file).
"""
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from jepa_bringup.description import SIM_PARAMS_FILE, DescriptionError, UrdfValue, camera_transform_arguments
from jepa_common.arm_presets import PRESET_DIR, read_preset

GRAPH_FILE_NAME = 'graph.yaml'
PRESET_ARGUMENT = 'arm'
TRUE_WORDS = ('true', '1', 'yes', 'on')
FALSE_WORDS = ('false', '0', 'no', 'off')
_SUBSTITUTION = re.compile(r'\$\((\w+)\s+([^()\s]+)\s*\)')
# The launch argument every graph takes: the ROS namespace of all its nodes ('' = the root namespace).
NAMESPACE_ARGUMENT = 'namespace'
_NAMESPACE = re.compile(r'(/[A-Za-z_][A-Za-z0-9_]*)+')
CLOCK_TOPIC = '/clock'
_GRAPH_KEYS = {'description', 'arguments', 'defaults', 'include', 'remap', 'parameters', 'nodes'}
_NODE_KEYS = {'name', 'package', 'executable', 'args', 'params', 'parameters', 'remap', 'if', 'unless', 'respawn',
              'respawn_delay', 'required', 'nice', 'requires_ros_install'}
# Substitutions read from the URDF file a launch argument names when the node starts (jepa_bringup/description.py).
_URDF_SUBSTITUTIONS = set(UrdfValue.READERS)
# Scheduling niceness a node may be given: lower priority only, which needs no privileges.
NICE_RANGE = (0, 19)


class GraphError(ValueError):
    """The graph file or the launch arguments given to it are wrong; the message says what and where."""


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] | None = None


@dataclass
class NodeSpec:
    """One node process of a resolved graph."""
    name: str
    package: str
    executable: str
    # Fully qualified ROS namespace ('/arm1'); '' = the root namespace.
    namespace: str = ''
    # Command-line arguments before the ROS ones (static_transform_publisher takes its transform this way).
    args: list = field(default_factory=list)
    params_files: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    remaps: list[tuple[str, str]] = field(default_factory=list)
    respawn: bool = False
    respawn_delay: float = 1.0
    required: bool = False
    nice: int = 0
    # Its package is not on PyPI (robot_state_publisher, tf2_ros): `jepa launch` leaves the node out where it is
    # not installed instead of failing.
    requires_ros_install: bool = False


def default_graph_file() -> str:
    """config/graph.yaml as installed (colcon share dir, or the venv's share dir in the pip install)."""
    from jepa_common.paths import package_share
    return os.path.join(package_share('jepa_bringup'), 'config', GRAPH_FILE_NAME)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """['gui:=true', 'mode:=policy'] -> {'gui': 'true', 'mode': 'policy'} (the `ros2 launch` syntax)."""
    values = {}
    for item in items:
        name, sep, value = item.partition(':=')
        if not sep or not name or not re.fullmatch(r'\w+', name):
            raise GraphError(f'expected a launch argument as name:=value, got {item!r}')
        values[name] = value
    return values


def ros_namespace(value: str) -> str:
    """A namespace launch argument as a fully qualified ROS namespace: 'arm1' -> '/arm1', '' or '/' -> ''."""
    text = str(value).strip()
    if text in ('', '/'):
        return ''
    namespace = '/' + text.strip('/')
    if not _NAMESPACE.fullmatch(namespace):
        raise GraphError(f'launch argument {NAMESPACE_ARGUMENT} must be a ROS namespace (names of letters, digits '
                         f'and underscores, not starting with a digit, separated by /), got {value!r}')
    return namespace


def namespaced_params_file(path: str, namespace: str) -> str:
    """A copy of params file `path` whose node-name keys ('sim') name the nodes in `namespace` ('/arm1/sim'); keys
    that are already absolute ('/arm1/sim', wildcards such as '/**') are kept. The copy lives in a per-user
    folder of the temp directory, named by its content, so resolving a graph twice writes it once."""
    try:
        text = Path(path).read_text()
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as error:
        raise GraphError(f'cannot read params file {path}: {error}') from error
    if not isinstance(data, dict):
        raise GraphError(f'params file {path} must map node names to their ros__parameters')
    renamed = {(key if str(key).startswith('/') else f'{namespace}/{key}'): value for key, value in data.items()}
    digest = hashlib.sha256(f'{namespace}\n{text}'.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f'jepa_params_{os.getuid()}'
    folder.mkdir(mode=0o700, exist_ok=True)
    copy = folder / f'{Path(path).stem}_{digest}.yaml'
    if not copy.is_file():
        partial = copy.with_name(f'{copy.name}.{os.getpid()}.tmp')
        partial.write_text(f'# {path} for the nodes in namespace {namespace} (jepa_bringup.graph)\n'
                           + yaml.safe_dump(renamed, sort_keys=False))
        partial.replace(copy)
    return str(copy)


def as_bool(name: str, value: str) -> bool:
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise GraphError(f'launch argument {name} must be true or false, got {value!r}')


class GraphFile:
    """A parsed graph file. Params files and arm presets are looked up next to it (config/, config/arms/)."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path or default_graph_file()).resolve()
        try:
            data = yaml.safe_load(self.path.read_text())
        except OSError as error:
            raise GraphError(f'cannot read graph file {self.path}: {error}') from error
        except yaml.YAMLError as error:
            raise GraphError(f'graph file {self.path} is not valid YAML: {error}') from error
        if not isinstance(data, dict) or not isinstance(data.get('graphs'), dict) or not data['graphs']:
            raise GraphError(f'graph file {self.path} needs a `graphs:` mapping with at least one graph')
        self.config_dir = self.path.parent
        self._arguments = self._parse_arguments(data.get('arguments') or {})
        self._graphs = data['graphs']
        for name in self._graphs:
            self._check_graph(name, ())

    @property
    def graph_names(self) -> list[str]:
        return list(self._graphs)

    def description(self, graph: str) -> str:
        return str(self._graph(graph).get('description', ''))

    def arguments(self, graph: str) -> dict[str, Argument]:
        """The launch arguments of a graph (its own and those of the graphs it includes), defaults applied."""
        names: list[str] = []
        defaults: dict[str, str] = {}
        for part in self._parts(graph):
            names += [n for n in part.get('arguments') or [] if n not in names]
        for part in reversed(self._parts(graph)):  # the including graph's defaults win
            defaults.update({k: str(v) for k, v in (part.get('defaults') or {}).items()})
        arguments = {n: Argument(n, defaults.get(n, self._arguments[n].default), self._arguments[n].description,
                                 self._arguments[n].choices) for n in names}
        arguments[NAMESPACE_ARGUMENT] = Argument(
            NAMESPACE_ARGUMENT, '', 'ROS namespace of every node of the graph (e.g. arm1: two arms side by side in '
            'one ROS domain); /clock is remapped into it; empty = the root namespace')
        return arguments

    def argument_values(self, graph: str, given: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every argument of the graph with its value: given, else the default (preset references filled in)."""
        arguments = self.arguments(graph)
        given = dict(given or {})
        unknown = sorted(set(given) - set(arguments))
        if unknown:
            raise GraphError(f'unknown launch argument(s) {", ".join(unknown)} for graph {graph!r}; '
                             f'its arguments are: {", ".join(arguments)}')
        values = {n: str(given.get(n, a.default)) for n, a in arguments.items()}
        preset = self._load_preset(graph, values) if PRESET_ARGUMENT in values else None
        for name, value in values.items():
            if '$(var ' in value:
                raise GraphError(f'launch argument {name}: $(var ...) is not allowed in argument values')
            values[name] = str(self._substitute(value, {}, preset, f'launch argument {name}'))
        for name, arg in arguments.items():
            if arg.choices and values[name] not in arg.choices:
                raise GraphError(f'launch argument {name} must be one of {", ".join(arg.choices)}, '
                                 f'got {values[name]!r}')
        ros_namespace(values[NAMESPACE_ARGUMENT])
        return values

    def resolve(self, graph: str, given: Mapping[str, str] | None = None) -> list[NodeSpec]:
        """The nodes to start for `graph` with the given launch argument values (strings, as on a command line)."""
        values = self.argument_values(graph, given)
        preset = self._load_preset(graph, values) if PRESET_ARGUMENT in values else None
        namespace = ros_namespace(values[NAMESPACE_ARGUMENT])
        specs: list[NodeSpec] = []
        for chain in self._chains(graph):
            part = chain[-1]
            for node in part.get('nodes') or []:
                where = f'graph {graph!r}, node {node.get("name")!r}'
                if not self._condition_holds(node, values, where):
                    continue
                spec = NodeSpec(
                    name=node['name'], package=node['package'], executable=node['executable'], namespace=namespace,
                    args=self._command_arguments(node.get('args') or [], values, preset, where),
                    params_files=self._params_files(node.get('params') or [], values, preset, where),
                    respawn=bool(node.get('respawn', False)),
                    respawn_delay=float(node.get('respawn_delay', 1.0)),
                    required=bool(node.get('required', False)), nice=int(node.get('nice', 0)),
                    requires_ros_install=bool(node.get('requires_ros_install', False)))
                if namespace:
                    spec.params_files = [namespaced_params_file(f, namespace) for f in spec.params_files]
                    # The graph's own clock (the graph file may remap it back to the global one).
                    spec.remaps.append((CLOCK_TOPIC, CLOCK_TOPIC.lstrip('/')))
                # Graph-level parameters and remaps apply to every node of that graph and of the graphs it
                # includes (like launch_ros SetParameter/SetRemap); the nearest scope wins, the node's own last.
                for scope in (*chain, node):
                    for key, value in (scope.get('parameters') or {}).items():
                        spec.parameters[key] = self._substitute(value, values, preset, where)
                    for src, dst in (scope.get('remap') or {}).items():
                        pair = (str(self._substitute(str(src), values, preset, where)),
                                str(self._substitute(str(dst), values, preset, where)))
                        spec.remaps = [r for r in spec.remaps if r[0] != pair[0]] + [pair]
                if spec.name in {s.name for s in specs}:
                    raise GraphError(f'{where}: two nodes named {spec.name!r} in the resolved graph')
                specs.append(spec)
        return specs

    # -- internals --------------------------------------------------------------------------------------------

    def _parse_arguments(self, raw) -> dict[str, Argument]:
        if not isinstance(raw, dict):
            raise GraphError(f'{self.path}: `arguments:` must map argument names to their settings')
        arguments = {}
        for name, settings in raw.items():
            if name == NAMESPACE_ARGUMENT:
                raise GraphError(f'{self.path}: argument {NAMESPACE_ARGUMENT!r} is every graph\'s own (the namespace '
                                 f'of its nodes); it cannot be declared under arguments:')
            if not isinstance(settings, dict) or 'default' not in settings or 'description' not in settings:
                raise GraphError(f'{self.path}: argument {name!r} needs a default and a description')
            choices = settings.get('choices')
            arguments[name] = Argument(str(name), str(settings['default']), str(settings['description']),
                                       tuple(str(c) for c in choices) if choices else None)
        return arguments

    def _graph(self, name: str) -> dict:
        if name not in self._graphs:
            raise GraphError(f'unknown graph {name!r} in {self.path}; graphs: {", ".join(self._graphs)}')
        return self._graphs[name] or {}

    def _chains(self, graph: str) -> list[tuple[dict, ...]]:
        """Each graph reached from `graph` (itself first, then its includes, depth first, each once) as the
        chain of graphs from `graph` down to it."""
        chains, seen = [], set()

        def visit(name, chain):
            if name in seen:
                return
            seen.add(name)
            chain = chain + (self._graph(name),)
            chains.append(chain)
            for included in chain[-1].get('include') or []:
                visit(included, chain)
        visit(graph, ())
        return chains

    def _parts(self, graph: str) -> list[dict]:
        return [chain[-1] for chain in self._chains(graph)]

    def _check_graph(self, name: str, stack: tuple[str, ...]) -> None:
        if name in stack:
            raise GraphError(f'{self.path}: graphs include each other in a cycle: {" -> ".join(stack + (name,))}')
        part = self._graph(name)
        if not isinstance(part, dict):
            raise GraphError(f'{self.path}: graph {name!r} must be a mapping')
        unknown = set(part) - _GRAPH_KEYS
        if unknown:
            raise GraphError(f'{self.path}: graph {name!r} has unknown keys {sorted(unknown)}')
        for arg in part.get('arguments') or []:
            if arg not in self._arguments:
                raise GraphError(f'{self.path}: graph {name!r} uses argument {arg!r}, not declared under arguments:')
        for arg in part.get('defaults') or {}:
            if arg not in self._arguments:
                raise GraphError(f'{self.path}: graph {name!r} sets a default for undeclared argument {arg!r}')
        for node in part.get('nodes') or []:
            if not isinstance(node, dict) or not all(k in node for k in ('name', 'package', 'executable')):
                raise GraphError(f'{self.path}: every node of graph {name!r} needs name, package and executable '
                                 f'(got {node!r})')
            unknown = set(node) - _NODE_KEYS
            if unknown:
                raise GraphError(f'{self.path}: node {node["name"]!r} of graph {name!r} has unknown keys '
                                 f'{sorted(unknown)}')
            nice = node.get('nice', 0)
            if not isinstance(nice, int) or isinstance(nice, bool) or not NICE_RANGE[0] <= nice <= NICE_RANGE[1]:
                raise GraphError(f'{self.path}: node {node["name"]!r} of graph {name!r}: nice must be an integer '
                                 f'from {NICE_RANGE[0]} to {NICE_RANGE[1]} (lower priority only), got {nice!r}')
            if not isinstance(node.get('args', []), list):
                raise GraphError(f'{self.path}: node {node["name"]!r} of graph {name!r}: args must be a list')
            if node.get('respawn') and node.get('required'):
                raise GraphError(f'{self.path}: node {node["name"]!r} of graph {name!r} is both required and '
                                 f'respawned; a required node stops the graph when it exits')
        for included in part.get('include') or []:
            self._check_graph(included, stack + (name,))

    def _condition_holds(self, node: dict, values: dict[str, str], where: str) -> bool:
        """`if: NAME` holds when a boolean argument (choices true, false) is true, or another one is not empty
        (a file given); `unless: NAME` when it does not."""
        for key, expected in (('if', True), ('unless', False)):
            if key in node:
                arg = node[key]
                if arg not in values:
                    raise GraphError(f'{where}: condition `{key}: {arg}` names an argument the graph does not have')
                boolean = arg in self._arguments and set(self._arguments[arg].choices or ()) == {'true', 'false'}
                if (as_bool(arg, values[arg]) if boolean else values[arg] != '') != expected:
                    return False
        return True

    def _command_arguments(self, entries: list, values: Mapping[str, str], preset: dict | None,
                           where: str) -> list:
        """A node's command-line arguments: each entry substituted, one that yields a list spliced in."""
        arguments = []
        for entry in entries:
            value = self._substitute(str(entry), values, preset, where, typed=False)
            arguments += value if isinstance(value, list) else [value if isinstance(value, UrdfValue) else str(value)]
        return arguments

    def _params_files(self, entries: list[str], values: Mapping[str, str], preset: dict | None,
                      where: str) -> list[str]:
        """Names in the graph file are relative to its folder; a file named by a launch argument is relative
        to the working directory, and an empty one is left out (optional params files)."""
        files = []
        for entry in entries:
            name = str(self._substitute(entry, values, preset, where))
            if '$(var ' in entry and not name:
                continue
            if os.path.isabs(name):
                path = Path(name)
            else:
                path = Path(name).resolve() if '$(var ' in entry else self.config_dir / name
            if not path.is_file():
                raise GraphError(f'{where}: params file {path} does not exist')
            files.append(str(path))
        return files

    def _load_preset(self, graph: str, values: dict[str, str]) -> dict:
        try:
            return load_preset(values[PRESET_ARGUMENT], self.config_dir)
        except GraphError as error:
            raise GraphError(f'graph {graph!r}: {error}') from error

    def _substitute(self, value, values: Mapping[str, str], preset: dict | None, where: str, typed: bool = True):
        """Fill in the substitutions (config/graph.yaml lists them). A string that is exactly one substitution
        takes the type of what it refers to (the argument value YAML-typed unless `typed` is false, the preset
        entry as is, a list, a UrdfValue); otherwise text is spliced."""
        if isinstance(value, list):
            return [self._substitute(v, values, preset, where, typed) for v in value]
        if not isinstance(value, str) or '$(' not in value:
            return value

        def lookup(kind: str, key: str):
            if kind in _URDF_SUBSTITUTIONS or kind == 'camera_transform':
                if key not in self._arguments:
                    raise GraphError(f'{where}: $({kind} {key}) names no argument declared under arguments:')
            if kind in _URDF_SUBSTITUTIONS:
                # A graph that does not take the argument runs the simulator's Panda: its URDF is ''.
                return UrdfValue(kind, values.get(key, ''))
            if kind == 'camera_transform':
                files = [str(self.config_dir / SIM_PARAMS_FILE)] + self._params_files([f'$(var {key})'], values,
                                                                                       preset, where)
                try:
                    return camera_transform_arguments(files)
                except DescriptionError as error:
                    raise GraphError(f'{where}: {error}') from error
            if kind == 'var':
                if key not in values:
                    raise GraphError(f'{where}: $(var {key}) names an argument the graph does not declare')
                return values[key]
            if kind == 'preset':
                if preset is None:
                    raise GraphError(f'{where}: $(preset {key}) needs an `{PRESET_ARGUMENT}` argument in the graph')
                entry: Any = preset
                for part in key.split('.'):
                    if not isinstance(entry, dict) or part not in entry:
                        raise GraphError(f'{where}: arm preset {preset["_path"]} has no entry {key!r}')
                    entry = entry[part]
                # Presets name files relative to the user's home (~/.jepa/arms/...): expand here, once.
                return os.path.expanduser(entry) if isinstance(entry, str) and entry.startswith('~') else entry
            raise GraphError(f'{where}: unknown substitution $({kind} {key}); use $(var NAME), $(preset KEY), '
                             f'$(robot_description NAME), $(root_link NAME) or $(camera_transform NAME)')

        whole = _SUBSTITUTION.fullmatch(value.strip())
        if whole:
            kind, key = whole.groups()
            result = lookup(kind, key)
            return _typed(result) if kind == 'var' and typed else result
        if re.search(r'\$\((?!\w+\s+[^()\s]+\s*\))', value):
            raise GraphError(f'{where}: malformed substitution in {value!r}; use $(var NAME) or $(preset KEY)')

        def splice(match):
            result = lookup(*match.groups())
            if isinstance(result, (dict, list, UrdfValue)):
                raise GraphError(f'{where}: $({match.group(1)} {match.group(2)}) is a {type(result).__name__} '
                                 f'and cannot be part of the text {value!r}')
            return str(result)
        return _SUBSTITUTION.sub(splice, value)


def load_preset(name: str, config_dir: str | os.PathLike | None = None) -> dict:
    """The arm preset config/arms/<name>.yaml as a dict (its file path under '_path')."""
    config_dir = Path(config_dir) if config_dir else Path(default_graph_file()).resolve().parent
    try:
        return read_preset(name, config_dir / PRESET_DIR)
    except ValueError as error:
        raise GraphError(str(error)) from error


def _typed(text: str):
    """A launch argument value as a parameter value, typed the way `-p name:=value` would type it."""
    if text == '':
        return ''
    try:
        typed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return typed if isinstance(typed, (bool, int, float, str, list)) else text
