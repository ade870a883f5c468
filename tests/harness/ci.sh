#!/usr/bin/env bash
# The whole test run behind `make test`, on a fresh Debian machine as root (or with sudo):
# system packages, the pinned venvs, the ansible_collections layout, then the publication gates
# (licences, galaxy-importer, tarball content, EE introspection, docs), sanity on the newest and
# oldest supported ansible-core, ansible-test units, pytest (the emulator and playbook-driven
# system tests) and ansible-test integration against real services started here and stopped on exit.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

# shellcheck source=tests/harness/setup.sh
source tests/harness/setup.sh
# Tools whose pins conflict with .venv (galaxy-importer) or replace its ansible-core (the oldest supported).
make_venv .venv-gates tests/requirements-gates.txt
make_venv .venv-floor tests/requirements-floor.txt
gates="$repo/.venv-gates/bin"
floor="$repo/.venv-floor/bin"

# -- layout ---------------------------------------------------------------------------------
collection=$(bash tests/harness/layout.sh)
cd "$collection"

# ansible-test --requirements fetches get-pip from a host the build machines cannot reach; it
# uses this cache file instead when present. The stand-in bootstraps pip from ensurepip. Each
# ansible-core (.venv's and the oldest supported) names its own pip version.
mkdir -p ~/.ansible/test/cache
for ansible_test_python in python "$floor/python"; do
  getpip_version=$("$ansible_test_python" - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages


class Python312:
    version = "3.12"


print(get_venv_packages(Python312())["pip"].replace(".", "_"))
PY
)
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
done

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
run_stage "ansible-test sanity (ansible-core of .venv, Python 3.9-3.13)" without_pip_noise env PATH="$sanity_path" \
  ansible-test sanity --venv --requirements --color no
run_stage "ansible-test sanity (oldest supported ansible-core, Python 3.12)" without_pip_noise env PATH="$floor:$PATH" \
  ansible-test sanity --venv --requirements --python 3.12 --color no
# Units on both ends of the range the modules support (about 6 minutes each on a busy 2-core machine).
units_on_python_range_ends() {
  local version
  for version in 3.9 3.13; do
    env PATH="$sanity_path" ansible-test units --venv --requirements --python "$version" --color no || return 1
  done
}
run_stage "ansible-test units (Python 3.9 and 3.13)" without_pip_noise units_on_python_range_ends
run_stage "antsibull-changelog lint" antsibull-changelog lint
run_stage "reuse lint (licence and copyright of every file)" "$gates/reuse" --root "$repo" lint --lines

# The tarball Galaxy would receive, built once for the gates that read it.
tarball_dir=$(mktemp -d /tmp/scidata-tarball-XXXXXX)
ansible-galaxy collection build --output-path "$tarball_dir" >/dev/null
tarball=$(echo "$tarball_dir"/scidata-replication-*.tar.gz)
# galaxy-importer as Galaxy runs it; lists its warnings and fails on any error.
galaxy_importer() {
  local log="$tarball_dir/galaxy-importer.log" status=0
  (cd "$tarball_dir" && env PATH="$gates:$PATH" GALAXY_IMPORTER_CONFIG="$collection/tests/harness/galaxy-importer.cfg" \
    "$gates/python" -m galaxy_importer.main "$tarball") >"$log" 2>&1 || status=$?
  grep -E '^(WARNING|ERROR)' "$log" || true
  echo "galaxy-importer: $(grep -c '^ERROR' "$log") errors, $(grep -c '^WARNING' "$log") warnings"
  if [ "$status" != 0 ] || grep -q '^ERROR' "$log" || ! grep -q 'Importer processing completed successfully' "$log"; then
    cat "$log"
    return 1
  fi
}
run_stage "galaxy-importer on the built tarball" galaxy_importer
run_stage "tarball content, EE introspection and EE build context" \
  python -m pytest -p no:cacheprovider -q -ra tests/system/test_publication.py
run_stage "antsibull-docs lint (plugin, role and extra docs)" env PATH="$gates:$PATH" \
  antsibull-docs lint-collection-docs --plugin-docs --check-extra-docs-refs --validate-collection-refs self .
run_stage "antsibull-docs docs site build" env PATH="$gates:$PATH" bash tests/harness/docsite.sh "$tarball_dir/docsite"
rm -rf "$tarball_dir"

lint_paths=()
for d in playbooks roles; do [ -d "$d" ] && lint_paths+=("$d"); done
run_stage "ansible-lint (production profile)" env ANSIBLE_COLLECTIONS_PATH="$(dirname "$(dirname "$(dirname "$collection")")")" \
  ansible-lint --offline "${lint_paths[@]}"
pytest_dirs=(tests/system)
[ -d tests/emulator/tests ] && pytest_dirs+=(tests/emulator/tests)
run_stage "pytest: emulator and playbook-driven system tests" env SCIDATA_FLOOR_BIN="$floor" python -m pytest -p no:cacheprovider -q -ra \
  --ignore tests/system/test_publication.py "${pytest_dirs[@]}"

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
