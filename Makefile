# Two commands for a fresh machine with Python 3 and make: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Every folder under plugins/ is a separately installable distribution.
PLUGINS := $(sort $(dir $(wildcard plugins/*/setup.cfg)))
STAMP := $(VENV)/.installed
# An environment variable, unlike -c, also reaches the isolated builds of sdists (visdom)
# with pip before 26.2; newer pips take build constraints from --build-constraint only, which
# refuses --no-build-isolation, so it is given to our install commands alone.
export PIP_CONSTRAINT := $(abspath constraints.txt)
BUILD_CONSTRAINT := --build-constraint $(abspath constraints.txt)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test bench visdom wheels clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) setup.cfg constraints.txt requirements-dev.txt $(addsuffix setup.cfg,$(PLUGINS))
	$(PY) -m pip install --quiet --upgrade "pip>=23" "setuptools<81" wheel
	$(PY) -m pip install --quiet $(BUILD_CONSTRAINT) torch==2.13.0 -r requirements-dev.txt
	$(PY) -m pip install --quiet $(BUILD_CONSTRAINT) -e . $(addprefix -e ,$(PLUGINS))
	touch $@

run: $(STAMP)
	$(PY) examples/digits.py

# First lint (ruff.toml) and types (setup.cfg [mypy]), then the GPU benchmark's tiny CPU run (a few
# seconds), so that none can rot unnoticed; pytest last, so that its summary closes the output.
test: $(STAMP)
	$(VENV)/bin/ruff check --quiet .
	$(PY) -m mypy
	$(PY) benchmarks/gpu.py --smoke > /dev/null
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/import_time.py

# A Visdom server on 127.0.0.1:8097 that starts offline (run_server.main skips the download
# of web assets that `python -m visdom.server` attempts first).
visdom: $(STAMP)
	$(PY) -c "import sys; from visdom.server.run_server import main; sys.argv = ['visdom', '-port', '8097', '--hostname', '127.0.0.1', '-bind_local']; main()"

# Wheels of ignite-trainer and every plugin in .whl/, for benchmarks/device_check.sh on a GPU machine.
wheels: $(STAMP)
	rm -rf .whl
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w .whl . $(PLUGINS)

clean:
	rm -rf $(VENV) build *.egg-info runs checkpoints .whl mlflow.db
