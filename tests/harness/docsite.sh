#!/usr/bin/env bash
# Build the collection's docs site (plugins, roles and the guides of docs/docsite/) into DEST with
# antsibull-docs and Sphinx, from the collection layout (the current directory). Any Sphinx warning
# fails the build, except those of the intersphinx inventories that cannot be fetched without network.
set -euo pipefail
dest=$1
collections_path=$(cd ../../.. && pwd)
rm -rf "$dest"
mkdir -p "$dest"
export ANSIBLE_COLLECTIONS_PATH=$collections_path
antsibull-docs sphinx-init --use-current --fail-on-error --dest-dir "$dest" scidata.replication >/dev/null
mkdir -p "$dest/rst"
chmod og-w "$dest/rst"  # antsibull-docs writes only into a directory that others cannot write
antsibull-docs --config-file "$dest/antsibull-docs.cfg" collection --use-current --fail-on-error \
  --cleanup everything --dest-dir "$dest/rst" scidata.replication >/dev/null
sphinx-build -M html "$dest/rst" "$dest/build" -q -c "$dest" -w "$dest/warnings.txt" 2>/dev/null || { cat "$dest/warnings.txt"; exit 1; }
# Without the inventories, references into docs.ansible.com and docs.python.org stay undefined too;
# references to this collection's own pages must resolve.
offline="failed to reach any of the inventories|^intersphinx inventory|undefined label: '(ansible_collections\.ansible\.builtin\.[a-z_]+|common_return_values|ansible_configuration_settings)'"
if grep -Ev "$offline" "$dest/warnings.txt" | grep -q .; then
  grep -Ev "$offline" "$dest/warnings.txt"
  exit 1
fi
test -s "$dest/build/html/collections/scidata/replication/docsite/guide_awx.html"
echo "docs site: $dest/build/html/collections/scidata/replication/index.html"
