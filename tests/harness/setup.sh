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
# make_venv DIR REQUIREMENTS: create DIR with $python and the pinned REQUIREMENTS, again only when they
# change (the stamp file names their hash).
make_venv() {
  local dir=$1 requirements=$2 stamp
  stamp="$dir/.requirements-$(sha256sum "$requirements" | cut -c1-16)"
  [ -e "$stamp" ] && return 0
  stage "creating $dir with $python"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  if ! "$dir"/bin/pip install -q --disable-pip-version-check -r "$requirements" >"$dir"/pip-install.log 2>&1; then
    grep -v '^WARNING: Location' "$dir"/pip-install.log >&2
    echo "pip install -r $requirements failed" >&2
    exit 1
  fi
  touch "$stamp"
}
make_venv .venv tests/requirements.txt
export PATH="$repo/.venv/bin:$PATH"

