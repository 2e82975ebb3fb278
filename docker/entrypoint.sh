#!/usr/bin/env bash
# ROS 2 Jazzy and the workspace on the path, then the command (default: the sim graph).
set -e
set +u
# shellcheck disable=SC1091
source /opt/ros/jazzy/setup.bash
# shellcheck disable=SC1091
source /opt/jepa/install/setup.bash
exec "$@"
