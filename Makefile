# The two commands a user needs: `make demo` and `make test`.
# Both create .venv on first use and install the project into it.

PYTHON ?= python3
VENV ?= .venv
# On a GPU box, set TORCH_SPEC to the CUDA build you want; on CPU machines
# torch==2.13.0 resolves to the CPU wheel where one is provided.
TORCH_SPEC ?= torch==2.13.0
VENV_PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.flea-installed

.PHONY: test demo install gpu-check

install: $(INSTALLED)

# fairseq-fixed compiles C extensions against the installed torch, so torch and
# the build tools go in first and fairseq is built without build isolation
# (build isolation would fetch a second, CUDA, torch just to compile).
$(INSTALLED): setup.py
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install "$(TORCH_SPEC)" setuptools wheel cython numpy
	$(VENV_PYTHON) -m pip install --no-build-isolation fairseq-fixed==0.12.3.1
	$(VENV_PYTHON) -m pip install -e ".[test]"
	# The configs name the plugin as `common.user_dir: fairseq_flea`; fairseq looks for it
	# beside its own package when the working directory has none. A regular install puts it
	# there; for this editable one, a link does, so fairseq-hydra-train runs from any directory.
	ln -sfn "$(CURDIR)/fairseq_flea" "$$($(VENV_PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fairseq_flea"
	touch $(INSTALLED)

# Two workers: most tests wait on a subprocess start (imports of torch and fairseq), which
# leaves a core idle. `.venv/bin/python -m pytest tests` runs them one at a time.
test: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -n 2 --dist loadfile tests

demo: $(INSTALLED)
	$(VENV_PYTHON) tools/run_demo.py demo

# On a CUDA machine: the recipe at HuBERT-base size in fp16 and bf16, the GPU benches, one table.
gpu-check: $(INSTALLED)
	PYTHON=$(VENV_PYTHON) bench/gpu_check.sh
