# scidata.replication: `make test` is the one test command (CI runs it through .ci/run).
.PHONY: test build bench clean

test:
	bash tests/harness/ci.sh

build:
	cd "$$(bash tests/harness/layout.sh)" && $(CURDIR)/.venv/bin/ansible-galaxy collection build --force --output-path $(CURDIR)

bench:
	cd "$$(bash tests/harness/layout.sh)" && $(CURDIR)/.venv/bin/python benchmarks/state_bulk.py

clean:
	rm -rf /tmp/scidata-replication-build tests/output
