#!/usr/bin/env bash
# The whole test run behind `make test`, on a fresh Debian machine as root (or with sudo):
# system packages, the pinned .venv, the ansible_collections layout, then sanity, pytest
# (units, the emulator and playbook-driven system tests) and ansible-test integration
# against real services started here and stopped on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

# shellcheck source=tests/harness/setup.sh
source tests/harness/setup.sh

# -- layout ---------------------------------------------------------------------------------
collection=$(bash tests/harness/layout.sh)
cd "$collection"

# ansible-test --requirements fetches get-pip from a host the build machines cannot reach; it
# uses this cache file instead when present. The stand-in bootstraps pip from ensurepip.
getpip_version=$(python - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages


class Python312:
    version = "3.12"


print(get_venv_packages(Python312())["pip"].replace(".", "_"))
PY
)
mkdir -p ~/.ansible/test/cache
cat > ~/.ansible/test/cache/get_pip_"$getpip_version".py <<'PY'
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
os.environ.pop("PIP_CONFIG_FILE", None)  # ensurepip points it at /dev/null, losing the CA configuration
skip = ("--no-setuptools", "--no-wheel")
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + [a for a in sys.argv[1:] if a not in skip]))
PY

passed=0
failed=0
run_stage() {
  local name=$1
  shift
  stage "$name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}
without_pip_noise() { "$@" 2>&1 | grep -v '^WARNING: Location'; return "${PIPESTATUS[0]}"; }

# Every Python the modules support (3.9+) that is installed joins the compile and import tests.
sanity_path=$PATH
for bin in "$(dirname "$(dirname "$(dirname "$python")")")"/3.{9,10,11,13}*/bin; do
  [ -d "$bin" ] && sanity_path="$sanity_path:$bin"
done
run_stage "ansible-test sanity" without_pip_noise env PATH="$sanity_path" \
  ansible-test sanity --venv --requirements --color no
run_stage "antsibull-changelog lint" antsibull-changelog lint
lint_paths=()
for d in playbooks roles; do [ -d "$d" ] && lint_paths+=("$d"); done
run_stage "ansible-lint (production profile)" env ANSIBLE_COLLECTIONS_PATH="$(dirname "$(dirname "$(dirname "$collection")")")" \
  ansible-lint --offline "${lint_paths[@]}"
pytest_dirs=(tests/unit tests/system)
[ -d tests/emulator/tests ] && pytest_dirs+=(tests/emulator/tests)
run_stage "pytest: units, emulator, playbook-driven system tests" python -m pytest -p no:cacheprovider -q -ra "${pytest_dirs[@]}"

demo_dir=$(mktemp -d /tmp/scidata-demo-XXXXXX)
run_stage "make demo (from the collection layout)" python demo/demo.py --workdir "$demo_dir/demo"
rm -rf "$demo_dir"

workdir=$(mktemp -d /tmp/scidata-services-XXXXXX)
chmod 755 "$workdir"
cleanup() { python tests/harness/services.py stop --workdir "$workdir" >/dev/null 2>&1 || true; rm -rf "$workdir"; }
trap cleanup EXIT
python tests/harness/services.py start --workdir "$workdir" --config-out tests/integration/integration_config.yml >/dev/null
run_stage "ansible-test integration against real services" ansible-test integration --local --python 3.12 --color no

echo
echo "make test stages: $passed passed, $failed failed"
[ "$failed" = 0 ]
