# scidata.replication: `make demo` shows it working; `make test` is the one test command (CI runs
# it through .ci/run). `make live-check` is the opt-in check against the real Globus service.
.PHONY: demo test live-check build bench clean

demo:
	bash demo/run.sh

test:
	bash tests/harness/ci.sh

# Needs GLOBUS_CLIENT_ID, GLOBUS_CLIENT_SECRET, SCIDATA_LIVE_SOURCE and SCIDATA_LIVE_DESTINATION;
# without them it says so and skips (tests/live/live_check.py lists every setting).
live-check:
	bash tests/live/run.sh

build:
	cd "$$(bash tests/harness/layout.sh)" && $(CURDIR)/.venv/bin/ansible-galaxy collection build --force --output-path $(CURDIR)

# make bench runs every benchmark; make bench BENCH=state_bulk runs one.
BENCH ?= $(basename $(notdir $(filter-out benchmarks/common.py,$(wildcard benchmarks/*.py))))
bench:
	cd "$$(bash tests/harness/layout.sh)" && for b in $(BENCH); do $(CURDIR)/.venv/bin/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf /tmp/scidata-replication-build tests/output
