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

CAMVID_RUN ?= runs/camvid
CAMVID_RECIPE ?= recipes/camvid_adelaide_ea.yml

.PHONY: venv test test-slow demo bench bench-quick study clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PY) -m pytest

test-slow: venv
	$(PY) -m pytest -m slow

# The demo: make the synthetic dataset, pretrain the encoder on it, search, train the best candidate,
# evaluate it and draw its predictions on a few validation images. Re-running skips finished steps
# (status/<step>.json says done) and resumes an interrupted search or training.
DEMO_DONE = grep -qs '"state": "done"' $(DEMO_RUN)/status/$(1).json
DEMO_PREDICT ?= 6
demo: venv
	test -f $(DEMO_DATA)/val.txt || $(NASCLI) data demo $(DEMO_DATA) --size 96
	test -f $(DEMO_RUN)/pretrain/encoder.pth || $(NASCLI) pretrain-backbone -r $(DEMO_RUN) --recipe recipes/demo.yml \
		--data-root $(DEMO_DATA) --train-list $(DEMO_DATA)/train.txt --val-list $(DEMO_DATA)/val.txt
	$(call DEMO_DONE,search) || $(NASCLI) search --algo adelaide-ea -r $(DEMO_RUN) --recipe recipes/demo.yml
	$(NASCLI) pareto -r $(DEMO_RUN)
	$(call DEMO_DONE,train) || if ls $(DEMO_RUN)/train/*/last.pth >/dev/null 2>&1; \
		then $(NASCLI) train -r $(DEMO_RUN) --resume; else $(NASCLI) train -r $(DEMO_RUN); fi
	$(NASCLI) eval -r $(DEMO_RUN)
	head -n $(DEMO_PREDICT) $(DEMO_DATA)/val.txt > $(DEMO_RUN)/demo-val.txt
	$(NASCLI) predict -r $(DEMO_RUN) --data-root $(DEMO_DATA) $(DEMO_RUN)/demo-val.txt
	@echo "demo done: the overlays are in $$(ls -d $(DEMO_RUN)/predict/*-demo-val)"

$(VENV)/.bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

# Benchmarks (BENCHMARKS.md). bench-quick: minutes, no prerequisites. bench: pretrains the CamVid encoder
# and runs a CamVid search first (hours on 2 cores; both are kept in $(CAMVID_RUN) and reused).
bench-quick: $(VENV)/.bench
	$(PY) bench/b1_candidate_cost.py --quick
	$(PY) bench/b2_latency.py --quick --encoding _0101444367710002030

$(CAMVID_RUN)/pretrain/encoder.pth: | $(VENV)/.bench
	$(NASCLI) pretrain-backbone -r $(CAMVID_RUN) --recipe $(CAMVID_RECIPE)

$(CAMVID_RUN)/search/result.csv: $(CAMVID_RUN)/pretrain/encoder.pth
	$(NASCLI) search -r $(CAMVID_RUN) --recipe $(CAMVID_RECIPE)

bench: $(CAMVID_RUN)/search/result.csv
	$(PY) bench/b1_candidate_cost.py --encoder $(CAMVID_RUN)/pretrain/encoder.pth
	$(PY) bench/b2_latency.py --run $(CAMVID_RUN)
	$(PY) bench/b3_throughput.py --run $(CAMVID_RUN)

# The search-quality study (issue 7) at the budget BENCHMARKS.md reports: about 4.8 h after the encoder
# (the main study 3.5 h, then Q3 searched against ONNX Runtime latency about 1.3 h).
study: $(CAMVID_RUN)/pretrain/encoder.pth
	$(PY) bench/study_quality.py --camvid-run $(CAMVID_RUN) --random 10 --mutate 10 --train-epochs 5
	$(PY) bench/study_q3_latency.py --camvid-run $(CAMVID_RUN)

clean:
	rm -rf $(VENV) runs $(DEMO_DATA) .pytest_cache
