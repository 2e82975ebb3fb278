"""The `ros2 launch` side of config/graph.yaml: launch arguments and launch_ros Node actions for one graph.

Needs the launch and launch_ros packages (a system ROS 2 install or the Docker image); the pip install starts
graphs with `jepa launch` instead. Both resolve the graph with jepa_bringup.graph, so they start the same nodes
with the same parameters. The nodes are built once the argument values are known (OpaqueFunction) because
conditions, arm presets and typed parameter values are resolved by the graph loader, not by launch
substitutions. Restarts: `respawn` nodes come back after a constant `respawn_delay` (launch has no back-off);
a `required` node's exit shuts the whole launch down. A node's `nice` becomes a `nice -n` launch prefix. Values
read from a URDF (robot_description) are read as the nodes are built, when the launch starts. The launch argument
`namespace` (every graph has it) becomes each Node's namespace.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from jepa_bringup.description import materialize
from jepa_bringup.graph import GraphFile


def graph_launch_description(graph: str, graph_file: str | None = None) -> LaunchDescription:
    description = GraphFile(graph_file)
    arguments = description.arguments(graph)
    declared = [DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description,
                                      choices=list(arg.choices) if arg.choices else None)
                for arg in arguments.values()]

    def nodes(context):
        values = {name: LaunchConfiguration(name).perform(context) for name in arguments}
        return [node_action(spec) for spec in description.resolve(graph, values)]

    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])


def node_action(spec) -> Node:
    on_exit = [Shutdown(reason=f'{spec.name} is required and exited')] if spec.required else None
    # The graph loader has typed every value already; launch_ros would re-read plain strings as YAML
    # ('true' -> bool), so strings are marked as strings.
    parameters = {key: ParameterValue(value, value_type=str) if isinstance(value, str) else value
                  for key, value in materialize(spec.parameters).items()}
    return Node(package=spec.package, executable=spec.executable, name=spec.name, namespace=spec.namespace or None,
                output='screen',
                arguments=materialize(spec.args), parameters=[*spec.params_files, parameters],
                remappings=spec.remaps, respawn=spec.respawn, respawn_delay=spec.respawn_delay, on_exit=on_exit,
                prefix=f'nice -n {spec.nice}' if spec.nice else None)
