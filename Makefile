# Two entry points (README): `make quickstart` and `make test`.
# Both create .venv and install medcbm into it when needed; the stamp file makes this a no-op afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medcbm-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export ANONYMIZED_TELEMETRY ?= False

.PHONY: quickstart test install bench clean-venv chromium

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is left unpinned on purpose: pip picks a build that works with the torchvision wheel.
	$(BIN)/python -m pip install --quiet -e ".[test,corpora,ray]"
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/medcbm quickstart

# the audit report's browser test needs a headless Chromium; `playwright install` cannot download one
# offline, so it comes from Debian (as root, or through sudo when available)
chromium:
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium-headless-shell >/dev/null; }

# one torch/OpenMP thread per xdist worker: two workers of two threads each on two cores spin against each other
# (a conv forward loop ran 6x slower that way, measured)
test: $(STAMP) chromium
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile -q --durations=15 tests

bench: $(STAMP)
	mkdir -p runs/bench
	$(BIN)/medcbm bench features --json runs/bench/features.json
	$(BIN)/medcbm bench shift --protocol ham10000-site-confounded --seeds 5 --json runs/bench/shift.json
	$(BIN)/medcbm bench shift --protocol ham10000-bodysite-confounded --seeds 5 -m linear_probe -m linear_probe_balanced \
		-m cbm -m cbm_ph2_only -m cbm_no_nuisance_adjust --json runs/bench/shift_bodysite.json
	$(BIN)/medcbm bench shift --protocol covid-cxr-view-holdout --seeds 5 --json runs/bench/shift_covid_cxr.json
	$(BIN)/medcbm bench concepts --json runs/bench/concepts.json
	for m in cbm cbm_no_balance cbm_knobo; do \
		$(BIN)/medcbm bench adapt --protocol ham10000-site-confounded -m $$m --json runs/bench/adapt_site_$$m.json; done
	for p in ham10000-rosendahl-holdout ham10000-vidir-modern-holdout; do \
		$(BIN)/medcbm bench adapt --protocol $$p --draws 30 -a site -a recentre -a tfti -a recalibrate_tfti -a mask -a refit_signed \
			-a restandardise -a bias --json runs/bench/adapt_$$p.json; done
	$(BIN)/medcbm bench retrieval --json runs/bench/retrieval.json

clean-venv:
	rm -rf $(VENV)
