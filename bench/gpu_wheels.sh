#!/usr/bin/env bash
# Packs what bench/gpu_path.py needs on a GPU host that has only its own Python and no network: the lent GPU
# machines (.library/device/KINDS.md) have Python 3.12 with torch, numpy, opencv-python-headless, PyYAML, tqdm,
# setuptools and typing-extensions, and lack pinocchio (our kinematics) with its C++ libraries, the bag readers the
# training module imports (rosbags, mcap and their compressors) and ament_index_python. Their wheels, at the
# versions this machine's .venv has, are downloaded here and unpacked into one folder, packed as
# runs/gpu_wheels/site.tar.gz; on the GPU host, from the checkout's root:
#
#   mkdir -p /tmp/site && tar xzf runs/gpu_wheels/site.tar.gz -C /tmp/site
#   PYTHONPATH=/tmp/site:/tmp/site/cmeel.prefix/lib/python3.12/site-packages python3 bench/gpu_path.py --out DIR
#
# The wheels themselves (about 80 MB) exceed what one device call may carry beside the checkout (64 MiB in all), so
# the folder keeps only what imports load: of pinocchio's C++ prefix the shared libraries its extension modules
# need (their DT_NEEDED closure; no headers, static libraries, CMake files or tools), and of pybullet_data (140 MB of
# meshes) the Panda's URDF, the one file the kinematics read, copied from this machine's pinned install.
#   bash bench/gpu_wheels.sh            # PYVER=3.12 (the GPU hosts'), OUT=runs/gpu_wheels, LIMIT_MB=56
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYVER=${PYVER:-3.12}
OUT=${OUT:-runs/gpu_wheels}
LIMIT_MB=${LIMIT_MB:-56}
PACKAGES=(pin libpinocchio coal libcoal eigenpy cmeel cmeel-boost cmeel-urdfdom cmeel-console-bridge cmeel-tinyxml2
          cmeel-assimp cmeel-octomap cmeel-qhull cmeel-zlib
          rosbags apsw backports.zstd lz4 ruamel.yaml mcap zstandard ros-ament-index-python)
fail() { echo "gpu_wheels.sh: $*" >&2; exit 1; }
command -v readelf >/dev/null || fail "readelf (binutils) is needed to find the libraries pinocchio loads"
[ -x "$PY" ] || fail "$PY not found (make setup first, or PY=...)"

# NAME==VERSION of each package as the .venv has it.
mapfile -t PINS < <("$PY" - "${PACKAGES[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f'{name}=={version(name)}')
    except PackageNotFoundError:
        sys.exit(f'gpu_wheels.sh: {name} is not installed in {sys.prefix} (make setup)')
EOF
)
[ "${#PINS[@]}" -eq "${#PACKAGES[@]}" ] || fail "could not read the versions of all ${#PACKAGES[@]} packages from $PY"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
TARGET=(--only-binary=:all: --python-version "$PYVER" --implementation cp "${PLATFORMS[@]}")
WHEELS="$OUT/wheels"
STAGE="$OUT/site"
rm -rf "$STAGE" "$OUT/site.tar.gz"
mkdir -p "$WHEELS"
echo "downloading ${#PINS[@]} wheels for CPython $PYVER x86_64: ${PINS[*]}"
"$PY" -m pip download -q --no-deps "${TARGET[@]}" -d "$WHEELS" "${PINS[@]}"
# Unpack (no code runs: a wheel install is an unzip) the wheels of exactly these versions.
mapfile -t FILES < <("$PY" - "$WHEELS" "${PINS[@]}" <<'EOF'
import re, sys
from pathlib import Path
norm = lambda s: re.sub(r'[-_.]+', '_', s).lower()
pins = {norm(n): v for n, v in (p.split('==') for p in sys.argv[2:])}
for wheel in sorted(Path(sys.argv[1]).glob('*.whl')):
    name, version = wheel.name.split('-')[:2]
    if pins.get(norm(name)) == version:
        print(wheel)
EOF
)
[ "${#FILES[@]}" -eq "${#PINS[@]}" ] || fail "expected ${#PINS[@]} wheels, found ${#FILES[@]}"
"$PY" -m pip install -q --no-deps --no-index --no-compile "${TARGET[@]}" --target "$STAGE" "${FILES[@]}"

# Pinocchio's prefix: the shared libraries its Python extension modules load, nothing else.
PREFIX="$STAGE/cmeel.prefix"
SITE="$PREFIX/lib/python$PYVER/site-packages"
[ -d "$SITE/pinocchio" ] || fail "no pinocchio under $SITE"
declare -A NEEDED=()
queue=($(find "$SITE" -name '*.so'))
while [ "${#queue[@]}" -gt 0 ]; do
  file=${queue[0]}; queue=("${queue[@]:1}")
  for lib in $(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    if [ -e "$PREFIX/lib/$lib" ] && [ -z "${NEEDED[$lib]:-}" ]; then
      NEEDED[$lib]=1
      queue+=("$PREFIX/lib/$lib")
    fi
  done
done
LEAN="$OUT/lean"
rm -rf "$LEAN"
mkdir -p "$LEAN/lib"
mv "$PREFIX/lib/python$PYVER" "$LEAN/lib/"
for lib in "${!NEEDED[@]}"; do cp -L "$PREFIX/lib/$lib" "$LEAN/lib/"; done
rm -rf "$PREFIX"
mv "$LEAN" "$PREFIX"
rm -rf "$STAGE/bin"

# pybullet_data with the Panda's URDF only.
DATA=$("$PY" -c 'import pybullet_data; print(pybullet_data.getDataPath())')
mkdir -p "$STAGE/pybullet_data/franka_panda"
cp "$DATA/__init__.py" "$STAGE/pybullet_data/"
cp "$DATA/franka_panda/panda.urdf" "$STAGE/pybullet_data/franka_panda/"

tar czf "$OUT/site.tar.gz" -C "$STAGE" .
rm -rf "$STAGE"
size=$(( $(stat -c %s "$OUT/site.tar.gz") / 1048576 ))
echo "packed $OUT/site.tar.gz: ${size} MiB (${#NEEDED[@]} of pinocchio's libraries); carry $OUT/site.tar.gz"
[ "$size" -le "$LIMIT_MB" ] ||
  fail "$OUT/site.tar.gz is ${size} MiB, over LIMIT_MB=$LIMIT_MB (a device call carries 64 MiB with the checkout)"
