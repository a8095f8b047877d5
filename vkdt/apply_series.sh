#!/usr/bin/env bash
# Apply kpn's patch series for vkdt (vkdt/patches, in the order of its `series` file) to a
# clean vkdt source tree at the commit in vkdt/patches/BASE:
#
#   bash vkdt/apply_series.sh DIR
#
# DIR is either a git checkout of vkdt (its HEAD must be BASE and its tracked files
# unmodified) or a plain copy of BASE's files, as `git archive BASE | tar -x` or
# /work/shared/vkdt-oracle/oracle.sh's `src` step writes it. A copy has no commit to ask,
# so its files are hashed as a git tree and compared with BASE's tree (BASE_TREE below).
# The patches go in with `git apply`, which needs no committer identity and leaves a
# checkout's history alone (a maintainer who wants the commits runs `git am` on them).
# Each patch is checked before it is applied: one that does not apply stops the series
# with one line naming it, exit code 1, its files untouched (the patches before it stay
# applied). A wrong tree is refused with one line, exit code 2.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PATCHES=$HERE/patches
BASE=$(cat "$PATCHES/BASE")
# BASE's tree (`git rev-parse BASE^{tree}`): what a plain copy of its files hashes to.
# tests/vkdt/test_patches.py checks it against the commit where vkdt's repository is at hand.
BASE_TREE=dfc3e8d2ff45ad3cd20277f364589f0d76ba5048

fail() { # $1 = exit code, $2 = the one line
  echo "error: $2" >&2
  exit "$1"
}

[ $# -eq 1 ] || fail 2 "usage: bash vkdt/apply_series.sh DIR (a vkdt tree at ${BASE:0:8})"
[ -d "$1" ] || fail 2 "$1 is not a directory"
DIR=$(cd "$1" && pwd -P)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# A git checkout is DIR itself being the top of a work tree: a copy extracted inside some
# other repository must not be judged by that repository's HEAD.
top=$(git -C "$DIR" rev-parse --show-toplevel 2>/dev/null || true)
if [ -n "$top" ] && [ "$(cd "$top" && pwd -P)" = "$DIR" ]; then
  found=$(git -C "$DIR" rev-parse HEAD 2>/dev/null || echo "no commit")
  [ "$found" = "$BASE" ] || fail 2 "$DIR is at vkdt $found, the series is for $BASE"
  [ -z "$(git -C "$DIR" status --porcelain --untracked-files=no)" ] ||
    fail 2 "$DIR has modified files (git -C $DIR status); the series needs a clean $BASE"
  apply() { git -C "$DIR" apply "$@"; }
else
  # Hash the copy's files with a scratch repository (vkdt's .gitignore files apply, so
  # build outputs do not count); DIR itself is not written to.
  git init -q --bare "$scratch/git"
  copy() { git --git-dir="$scratch/git" --work-tree="$DIR" "$@"; }
  (cd "$DIR" && copy add -A .)
  found=$(copy write-tree)
  [ "$found" = "$BASE_TREE" ] ||
    fail 2 "$DIR holds tree $found, not vkdt ${BASE:0:8}'s files (tree $BASE_TREE)"
  apply() { (cd "$DIR" && copy apply "$@"); }
fi

while read -r name; do
  [ -n "$name" ] || continue
  patch=$PATCHES/$name
  [ -f "$patch" ] || fail 1 "$name, listed in $PATCHES/series, is missing"
  if ! why=$(apply --check "$patch" 2>&1); then
    fail 1 "$name does not apply to $DIR: $(echo "$why" | head -n 1 | sed 's/^error: //')"
  fi
  apply "$patch"
  echo "applied $name"
done <"$PATCHES/series"
