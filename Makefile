# rparallel: `make demo` runs the tutorial notebook, `make test` runs every test.
# Needs only Rust, Python 3.11 (with its shared libpython) and make.

SHELL    := /bin/bash
VENV     := $(CURDIR)/.venv
PY       := $(VENV)/bin/python
BIN      := $(CURDIR)/target/release/rparallel
PYTHON3  ?= python3
# The interpreter pyo3 builds against: the base of the venv.
export PYO3_PYTHON := $(shell $(PYTHON3) -c 'import sys; print(sys.executable)')
# Kernelspecs and runtime files of the tests stay inside the project.
export JUPYTER_PATH := $(VENV)/share/jupyter

.PHONY: demo test build wheel venv kernelspec browser lint clean bench bench-hosts bench-quick soak lab-packages lab-test

## demo: build, set up .venv, install the kernelspec, execute the demo notebooks (tutorial, science with figures and widgets counted, load-balanced, ipyparallel examples)
demo: kernelspec
	@mkdir -p target/demo
	$(VENV)/bin/jupyter nbconvert --to notebook --execute \
	    --ExecutePreprocessor.kernel_name=rparallel \
	    --ExecutePreprocessor.timeout=120 \
	    --output-dir target/demo notebooks/direct-interface.ipynb
	@$(PY) tools/show_notebook.py target/demo/direct-interface.ipynb
	$(VENV)/bin/jupyter nbconvert --to notebook --execute \
	    --ExecutePreprocessor.kernel_name=rparallel \
	    --ExecutePreprocessor.timeout=120 \
	    --output-dir target/demo notebooks/science.ipynb
	@$(PY) tools/show_notebook.py target/demo/science.ipynb
	@$(PY) tools/count_outputs.py target/demo/science.ipynb
	$(VENV)/bin/jupyter nbconvert --to notebook --execute \
	    --ExecutePreprocessor.kernel_name=rparallel \
	    --ExecutePreprocessor.timeout=120 \
	    --output-dir target/demo notebooks/load-balanced.ipynb
	@$(PY) tools/show_notebook.py target/demo/load-balanced.ipynb
	$(VENV)/bin/jupyter nbconvert --to notebook --execute \
	    --ExecutePreprocessor.kernel_name=rparallel \
	    --ExecutePreprocessor.timeout=120 \
	    --output-dir target/demo notebooks/ipyparallel-examples.ipynb
	@$(PY) tools/show_notebook.py target/demo/ipyparallel-examples.ipynb

## test: every test (format and clippy, cargo, then end-to-end through real Jupyter clients, a browser, the wheel in a fresh venv, and the multi-host lab)
test: kernelspec browser wheel lab-packages
	@set -o pipefail; status=0; \
	$(MAKE) --no-print-directory lint || status=1; \
	cargo test --release --workspace 2>&1 | tee target/cargo-test.log || status=1; \
	$(PY) -m pytest tests --ignore=tests/hosts -p no:cacheprovider -v --timeout=300 2>&1 | tee target/pytest.log || status=1; \
	$(MAKE) --no-print-directory lab-test 2>&1 | tee target/pytest-lab.log || status=1; \
	echo; \
	cargo_pass=$$(grep -oE '^test result: [a-zA-Z]+\. [0-9]+ passed' target/cargo-test.log | awk '{s+=$$4} END {print s+0}'); \
	cargo_fail=$$(grep -oE '[0-9]+ failed' target/cargo-test.log | awk '{s+=$$1} END {print s+0}'); \
	py_pass=$$(grep -hE '^=+ .*(passed|failed|error)' target/pytest.log target/pytest-lab.log | grep -oE '[0-9]+ passed' | awk '{s+=$$1} END {print s+0}'); \
	py_fail=$$(grep -hE '^=+ .*(passed|failed|error)' target/pytest.log target/pytest-lab.log | grep -oE '[0-9]+ (failed|error)' | awk '{s+=$$1} END {print s+0}'); \
	echo "$$(( cargo_pass + $${py_pass:-0} )) passed, $$(( cargo_fail + $${py_fail:-0} )) failed"; \
	exit $$status

## lab-test: the multi-host tests (tests/hosts): a lab of network namespaces (head + 3 nodes with sshd, munge, Slurm, Open MPI) brought up, tested from its head host, torn down
lab-test: kernelspec lab-packages
	@tests/hosts/lab.sh down
	tests/hosts/lab.sh up 3
	@status=0; \
	tests/hosts/lab.sh run head $(PY) -m pytest tests/hosts -p no:cacheprovider -v -s --timeout=300 || status=1; \
	tests/hosts/lab.sh down || status=1; \
	exit $$status

## lab-packages: the cluster tools the lab runs (OpenSSH, munge, Slurm, Open MPI), from Debian
LAB_TOOLS := /usr/sbin/sshd /usr/bin/ssh /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/bin/mpiexec
lab-packages:
	@for tool in $(LAB_TOOLS); do test -x $$tool || missing=1; done; \
	if [ -n "$$missing" ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	        openssh-server openssh-client munge slurmd slurmctld slurm-client openmpi-bin libopenmpi-dev; \
	fi

build:
	cargo build --release --workspace

## wheel: the Python package for `pip install` (target/wheels/rparallel-*-abi3-*.whl), built by maturin
wheel: venv
	$(PY) -m pip install --quiet maturin==1.16.0
	$(PY) -m maturin build --release --out target/wheels

$(VENV)/.installed: requirements.txt requirements.lock
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c requirements.lock
	@touch $@

venv: $(VENV)/.installed

## browser: Debian's Chromium, which Playwright drives in tests/test_browser.py (no browser download)
browser: /usr/bin/chromium

/usr/bin/chromium:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

## kernelspec: the `rparallel` kernel, pinned to .venv, installed into .venv
kernelspec: build venv
	$(BIN) install --sys-prefix --python $(PY)

## lint: formatting, clippy, and the layout rules (tools/check_layout.py)
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(PYTHON3) tools/check_layout.py

clean:
	cargo clean
	rm -rf $(VENV)

## bench: rparallel next to ipykernel / ipyparallel, measured in the same run (and across the lab's hosts), where the CPU of a small call goes, per thread (bench/threads.py), and the floor of the path any small call takes here (protocol/examples/floor.rs)
bench: kernelspec wheel lab-packages
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) -m pip install --quiet --no-deps --force-reinstall target/wheels/rparallel-*-abi3-*.whl
	@mkdir -p bench/results
	$(PY) bench/kernel.py --json bench/results/kernel-$$(date +%Y%m%d-%H%M).json
	$(PY) bench/cluster.py --json bench/results/cluster-$$(date +%Y%m%d-%H%M).json
	$(PY) bench/scale.py --json bench/results/scale-$$(date +%Y%m%d-%H%M).json
	$(PY) bench/threads.py --json bench/results/threads-$$(date +%Y%m%d-%H%M).json
	cargo run --quiet --release -p rparallel-protocol --example floor -- --json bench/results/floor-$$(date +%Y%m%d-%H%M).json
	$(PY) bench/hosts.py --json bench/results/hosts-$$(date +%Y%m%d-%H%M).json

## bench-hosts: engines on other hosts (ssh, MPI, Slurm) in the multi-host lab, rparallel next to ipyparallel
bench-hosts: kernelspec wheel lab-packages
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) -m pip install --quiet --no-deps --force-reinstall target/wheels/rparallel-*-abi3-*.whl
	@mkdir -p bench/results
	$(PY) bench/hosts.py --json bench/results/hosts-$$(date +%Y%m%d-%H%M).json

## bench-quick: a short version for development (numbers not to be quoted)
bench-quick: kernelspec wheel
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) -m pip install --quiet --no-deps --force-reinstall target/wheels/rparallel-*-abi3-*.whl
	$(PY) bench/kernel.py --rounds 1 --cells 30
	$(PY) bench/cluster.py --rounds 1 --quick
	$(PY) bench/scale.py --engines 4,16 --ipp-max 4 --tasks 1000

## soak: the soak tests of tests/test_soak.py at full scale (`make test` runs them reduced)
soak: kernelspec
	RPARALLEL_SOAK_SCALE=1 $(PY) -m pytest tests/test_soak.py -p no:cacheprovider -v -s --timeout=3600
