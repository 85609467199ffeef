#!/usr/bin/env bash
# Installs a released sandbox-operator as its own docs install it, for the upgrade test: its source
# tree (`git archive` of the release's commit) and a venv holding it and its own dependencies
# (`pip install` of that tree). Cached once per release and Python; prints the directory, which
# holds `src/` and `venv/`.
#
# Usage: hack/install-release.sh [TAG]   (default: the last release in hack/releases.txt)
# The release is its tag when this clone has it (which must point to the commit hack/releases.txt
# names), else that commit; when the clone has neither, this fails and says how to fetch them.
# PYTHON: the interpreter the venv is made from (default: python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/cache.sh"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
fail() { echo "install-release: $*" >&2; exit 1; }
log() { echo "install-release: $*" >&2; }

wanted="${1:-}"
line="$(grep -v '^[[:space:]]*\(#\|$\)' "$here/releases.txt" | awk -v tag="$wanted" 'tag == "" || $1 == tag' | tail -n 1)"
[[ -n "$line" ]] || fail "no release ${wanted:-at all} in hack/releases.txt"
read -r tag commit <<< "$line"
[[ "$commit" =~ ^[0-9a-f]{40}$ ]] || fail "hack/releases.txt: '$commit' of $tag is not a full commit id"

if tagged="$(git -C "$repo" rev-parse -q --verify "refs/tags/$tag^{commit}")"; then
  [[ "$tagged" == "$commit" ]] || fail "tag $tag points to $tagged, but hack/releases.txt says $commit"
elif git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null; then
  log "this clone has no tag $tag; using its commit $commit from hack/releases.txt"
else
  fail "this clone has neither the tag $tag nor its commit $commit (hack/releases.txt): fetch them with
  git fetch --tags origin   (or, in a shallow clone: git fetch --unshallow --tags origin)"
fi

version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
dir="$cache/releases/$tag-${commit:0:12}-py$version"
mkdir -p "$cache/releases"
exec 9>"$cache/releases/.lock"
flock 9  # one install at a time: a second caller waits, then finds it done
if [[ ! -f "$dir/.installed" ]]; then
  log "installing $tag ($commit) into $dir (once; a few minutes cold)"
  rm -rf "$dir"
  mkdir -p "$dir/src"
  git -C "$repo" archive "$commit" | tar -x -C "$dir/src"
  "$python" -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "$dir/src" >&2
  touch "$dir/.installed"
fi
echo "$dir"
