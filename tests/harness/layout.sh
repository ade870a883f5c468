#!/usr/bin/env bash
# Lay the repository out as $SCIDATA_BUILD_DIR/ansible_collections/scidata/replication (what ansible-test and
# ansible-playbook expect), copying the files git knows about plus new, not ignored ones.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# Outside the repository: ansible-test would otherwise list files through the outer git checkout.
build=${SCIDATA_BUILD_DIR:-/tmp/scidata-replication-build}
dest="$build/ansible_collections/scidata/replication"
rm -rf "$dest"
mkdir -p "$dest"
cd "$repo"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$dest"
echo "$dest"
