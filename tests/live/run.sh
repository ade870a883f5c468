#!/usr/bin/env bash
# `make live-check`: the opt-in check against the real Globus service (see tests/live/live_check.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/harness/setup.sh
source tests/harness/setup.sh
collection=$(bash tests/harness/layout.sh)
exec python "$collection/tests/live/live_check.py" "$@"
