# Two commands on a fresh machine: `make demo` (search on the built-in demo data) and `make test`.
# Both create .venv and install nascli into it first.
VENV ?= .venv
PY := $(VENV)/bin/python
NASCLI := $(VENV)/bin/nascli
STAMP := $(VENV)/.installed
# torch/torchvision come from this machine's local wheels; override for other machines, e.g.
#   make test TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_DATA ?= data/demo
DEMO_RUN ?= runs/demo

.PHONY: venv test test-slow demo bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PY) -m pytest

test-slow: venv
	$(PY) -m pytest -m slow

demo: venv
	$(NASCLI) data demo $(DEMO_DATA)
	$(NASCLI) search --algo adelaide-ea -r $(DEMO_RUN) --data-root $(DEMO_DATA) \
		--train-list $(DEMO_DATA)/train.txt --val-list $(DEMO_DATA)/val.txt --recipe recipes/demo.yml

clean:
	rm -rf $(VENV) runs $(DEMO_DATA) .pytest_cache
