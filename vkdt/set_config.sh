#!/usr/bin/env bash
# Set vkdt's kpn-t/config.h as a graph of `python -m kpn export --vkdt-cfg` asks: its header
# lists every config.h line the build needs ("#   #define NAME VALUE" on, "#   // #define
# NAME" off). Each is set in CONFIG_H (an existing define replaced, a missing one appended,
# one the graph wants off commented out), then the file is run through the C preprocessor
# and every line is checked against what it defines; a mismatch stops with one line.
#
#   bash vkdt/set_config.sh VKDT_DIR/src/pipe/modules/kpn-t/config.h cfg/kpn-infer-pfm.cfg
#
# Needs python3 and gcc (its preprocessor). Docs: docs/vkdt.md, "Run kpn's design in vkdt".
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 CONFIG_H GRAPH" >&2; exit 2; }
CONFIG_H=$1 GRAPH=$2
[ -f "$CONFIG_H" ] || { echo "$CONFIG_H: no such file (vkdt's src/pipe/modules/kpn-t/config.h)" >&2; exit 2; }
[ -f "$GRAPH" ] || { echo "$GRAPH: no such file (a graph written by python -m kpn export --vkdt-cfg)" >&2; exit 2; }
python3 - "$CONFIG_H" "$GRAPH" <<'PYEOF'
import re, sys
cfgh, graph = sys.argv[1:3]
req, on = [], False
for l in open(graph, encoding="utf-8"):
    l = l.rstrip("\n")
    if "with these lines in src/pipe/modules/kpn-t/config.h" in l:
        on = True
        continue
    m = re.match(r"#   (// )?#define (\w+)(?: (.*))?$", l) if on else None
    if on and not m:
        break
    if m:
        req.append((m.group(1) is None, m.group(2), (m.group(3) or "").strip()))
if not req:
    sys.exit(f"{graph}: no config.h lines in its header (not a graph of kpn export --vkdt-cfg)")
lines = open(cfgh, encoding="utf-8").read().split("\n")
for active, name, val in req:
    idx = [i for i, l in enumerate(lines) if re.match(rf"\s*#define {name}\b", l)]
    if active:
        want = f"#define {name} {val}".rstrip()
        if idx and lines[idx[0]].split("//")[0].split() == want.split():
            continue
        for i in idx[1:]:
            lines[i] = "// " + lines[i]
        new = want + " // set_config.sh: the graph's header"
        if idx:
            print(f"config.h: {lines[idx[0]]!r} -> {want!r}")
            lines[idx[0]] = new
        else:
            print(f"config.h: + {want!r}")
            lines.append(new)
    else:
        for i in idx:
            print(f"config.h: commented out {lines[i]!r}")
            lines[i] = "// " + lines[i]
open(cfgh, "w", encoding="utf-8").write("\n".join(lines))
PYEOF
# check with the preprocessor: each line of the header is what config.h defines
defs=$(gcc -E -dM -x c "$CONFIG_H")
grep -E '^#   #define ' "$GRAPH" | sed 's/^#   //' | while read -r _ name val; do
  grep -q "^#define $name\b" <<<"$defs" || { echo "$CONFIG_H: $name is not defined, $GRAPH wants it" >&2; exit 1; }
  got=$(sed -n "s/^#define $name \(.*\)$/\1/p" <<<"$defs" | sed 's/ *$//')
  [ "$got" = "$val" ] || { echo "$CONFIG_H: $name is '$got', $GRAPH wants '$val'" >&2; exit 1; }
done
grep -E '^#   // #define ' "$GRAPH" | sed 's|^#   // #define ||' | while read -r name _; do
  if grep -q "^#define $name\b" <<<"$defs"; then echo "$CONFIG_H: $name is defined, $GRAPH wants it off" >&2; exit 1; fi
done
echo "$CONFIG_H: set as $GRAPH asks"
