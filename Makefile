# Two commands do everything on a fresh machine: `make demo` and `make test`. Both bootstrap .venv.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jepa-setup-stamp
# Everything that, when changed, requires re-running the bootstrap.
SETUP_INPUTS := requirements.txt scripts/setup_venv.sh $(wildcard src/*/setup.py src/*/setup.cfg src/*/package.xml) \
	$(wildcard src/jepa_interfaces/msg/*.msg src/jepa_interfaces/srv/*.srv src/jepa_interfaces/CMakeLists.txt) \
	$(wildcard config/*.yaml config/*/*.yaml launch/*.py)

.PHONY: setup test test-unit test-integration demo bench bench-quick lint clean colcon

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	VENV=$(VENV) bash scripts/setup_venv.sh
	touch $(STAMP)

test: setup
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest tests -m "not integration"

test-integration: setup
	$(PY) -m pytest tests -m integration

demo: setup
	$(PY) -m jepa_bringup.demo

# Every bench script, full size (hours: bench/agent_tasks.py runs the graph's eval episodes in real time).
bench: setup
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b $(BENCH_ARGS) || exit 1; done

# Every bench script at a tiny size (a few minutes in all); tests/test_bench_quick.py runs the same in `make test`.
bench-quick: BENCH_ARGS = --quick
bench-quick: bench

lint: setup
	$(VENV)/bin/hadolint docker/Dockerfile docker/Dockerfile.cuda

# For a system ROS 2 Jazzy install (source /opt/ros/jazzy/setup.bash first).
colcon:
	cd ros_ws && colcon build --symlink-install

clean:
	rm -rf $(VENV) ros_ws/build ros_ws/install ros_ws/log
