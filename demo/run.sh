#!/usr/bin/env bash
# `make demo`: the bundled Globus API emulator, a sample tree and playbooks/demo.yml, end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/harness/setup.sh
source tests/harness/setup.sh
collection=$(bash tests/harness/layout.sh)
exec python "$collection/demo/demo.py" "$@"
