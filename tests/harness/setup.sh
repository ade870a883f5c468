# shellcheck shell=bash
# Sourced by ci.sh (make test) and demo/run.sh (make demo), from the repository root: installs
# the Debian packages and the pinned .venv that both need, and puts .venv/bin first on PATH.
stage() { printf '\n===== %s =====\n' "$*"; }
repo=$(pwd)

# -- system packages ------------------------------------------------------------------------
packages=(rsync openssh-server openssh-client postgresql git shellcheck chromium python3-venv python3-psycopg2 logrotate cron nginx)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  stage "installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# -- Python: ansible-core 2.20+ needs Python >= 3.12 on the controller ------------------------
python=""
for candidate in "$(command -v pyenv >/dev/null && pyenv root || echo /root/.pyenv)"/versions/3.12.*/bin/python \
                 "$(command -v python3.12 || true)" "$(command -v python3.13 || true)"; do
  [ -x "$candidate" ] && { python=$candidate; break; }
done
[ -n "$python" ] || { echo "Python 3.12 or 3.13 is needed for ansible-core 2.21" >&2; exit 1; }
stamp=".venv/.requirements-$(sha256sum tests/requirements.txt | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  stage "creating .venv with $python"
  rm -rf .venv
  "$python" -m venv .venv
  if ! .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt >.venv/pip-install.log 2>&1; then
    grep -v '^WARNING: Location' .venv/pip-install.log >&2
    echo "pip install -r tests/requirements.txt failed" >&2
    exit 1
  fi
  touch "$stamp"
fi
export PATH="$repo/.venv/bin:$PATH"

