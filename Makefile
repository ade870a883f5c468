# scidata.replication: `make demo` shows it working; `make test` is the one test command (CI runs
# it through .ci/run).
.PHONY: demo test build bench clean

demo:
	bash demo/run.sh

test:
	bash tests/harness/ci.sh

build:
	cd "$$(bash tests/harness/layout.sh)" && $(CURDIR)/.venv/bin/ansible-galaxy collection build --force --output-path $(CURDIR)

# make bench runs every benchmark; make bench BENCH=state_bulk runs one.
BENCH ?= $(basename $(notdir $(filter-out benchmarks/common.py,$(wildcard benchmarks/*.py))))
bench:
	cd "$$(bash tests/harness/layout.sh)" && for b in $(BENCH); do $(CURDIR)/.venv/bin/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf /tmp/scidata-replication-build tests/output
