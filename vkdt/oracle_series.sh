#!/usr/bin/env bash
# Prove vkdt's patch series (vkdt/patches) with vkdt's own vkdt-cli: vkdt at vkdt/patches/BASE
# (ce12d6ed) plus the series, built headless for Mesa's lavapipe (llvmpipe Vulkan, no GPU),
# runs the shipped weights/vkdt-w32 on crops of a test photo; kpn's infer.py runs the same
# weights in its vkdt float16 emulation (--precision vkdt-f16 --vkdt-matmul fallback
# --sure off); the two outputs are compared value by value (target: max |d| <= 2e-3), and
# each against the clean crop (PSNR). Results: benchmarks/results/vkdt-patches.md.
#
#   bash vkdt/oracle_series.sh            # export src build image run: everything below deps
#   bash vkdt/oracle_series.sh deps       # apt packages (once, as root)
#   bash vkdt/oracle_series.sh export     # weights -> .lut + vkdt graphs (config.h lines in their header)
#   bash vkdt/oracle_series.sh src        # fresh ce12d6ed trees + the series + lavapipe patches + config.h
#   bash vkdt/oracle_series.sh build      # vkdt-cli and the modules the graph loads, per tree
#   bash vkdt/oracle_series.sh image      # test photo and its crops
#   bash vkdt/oracle_series.sh run        # vkdt-cli, infer.py, compare, per crop and tree
#   (several steps in one call run in order: bash vkdt/oracle_series.sh image run)
#
# Grown from /work/shared/vkdt-oracle/oracle.sh (issue 15; benchmarks/results/vkdt-oracle.md),
# whose lavapipe-only patches are copied here verbatim:
#   01-lavapipe-host      qvk.c: no VK_EXT_descriptor_indexing, no yuv sampler, no memory budget
#   02-coopmat-fallback   coopmat.glsl's fallback assumes 32-lane subgroups (lavapipe has 8):
#                         the "warp" becomes the workgroup row; loops kept rolled
#   05-rne-store-variant  (trees w32rne, designrne) rounds every f16 image store to nearest
#                         even, because lavapipe truncates toward zero
# and two of its own for the design trees (issue 24):
#   03-mip-plain          (design, designrne) mip.comp without subgroup operations: its
#                         reductions assume 32-lane subgroups (lavapipe has 8, and gave
#                         means 15 times too large); the same pairwise means in the same order
#   06-rne-store-design   (designrne) as 05 for the stores 05 does not reach: mip.comp's, and
#                         up.comp's B-spline branch (not NO_ALIAS)
# These are test-harness patches for lavapipe, not part of the series. The series goes in
# first, with vkdt/apply_series.sh, on a fresh `git archive` of BASE: a patch of the series
# that does not apply stops everything with that patch's name.
#
# Trees (TREES, default "w32 w32rne"): w32 = BASE + series + 01 + 02 + config.h as the graph's header
# says (WIDTH 32, APPLY_SOFTMAX, ...); w32rne = w32 + 05. The design trees run kpn's
# weights/design (the default WEIGHTS when TREES names only design trees):
#   TREES="design designrne" OUT=.../series-out-design bash vkdt/oracle_series.sh
# design = BASE + series + 01 + 02 + 03 + config.h as the graph's header says plus
# DESIGN_DEFINES (the series' switches 0005..0008, which `kpn export` does not write yet:
# INPUT_STAR15_SNR, KPN_LEVELS 4, DENOISE_LEVELS 0, POST_MLP_DIFF_MIRROR_COARSE);
# designrne = design + 05 + 06.
# Crops (CROPS, NAME:Y0:Y1:X0:X1 rows from the top of the 512x384 photo; default a 128x96 crop,
# then the whole 512x384 image). The photo: PHOTO=name:row:column of a scikit-image photo
# (default coffee:8:44, the image of benchmarks/results/vkdt-oracle.md); noise NOISE_A, NOISE_B
# (0..65535 scale, default 20000 40). Outputs, logs and result-TREE-CROP.txt go to OUT.
# Exit status of run (and all): 0 when every tree and crop has max |d| <= TOL, 3 otherwise
# (the w32 tree, with lavapipe's truncating f16 stores, ends at 2e-3..3.4e-3: see the results).
# Needs: VKDT_GIT, a git dir holding BASE (default: the fetch tool's mirror of hanatos/vkdt);
# VKH_GIT, one of KhronosGroup/Vulkan-Headers with VKH_TAG (Debian 12's 1.3.239 headers
# lack names that qvk.c uses). Everything heavy runs under nice -n 19, make -j1,
# OMP_NUM_THREADS=1; Mesa's shader cache goes to $CACHE/mesa_shader_cache. Runtime on 2 shared
# cores: about 5 s build per tree (only vkdt-cli and the modules the graph loads); vkdt-cli
# 6-30 s on the 128x96 crop (the first run compiles the shaders in LLVM), 1.5-3 min on 512x384;
# everything, both trees, both crops: 3 min 20 s.
set -euo pipefail
KPN=$(cd "$(dirname "$0")/.." && pwd)
HERE=$KPN/vkdt
VKDT_COMMIT=$(cat "$HERE/patches/BASE")
VKDT_GIT=${VKDT_GIT:-/work/.mirror/hanatos+vkdt/repo}
VKH_GIT=${VKH_GIT:-/work/.mirror/KhronosGroup+Vulkan-Headers/repo}
VKH_TAG=${VKH_TAG:-v1.4.359}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kpn-vkdt-oracle}
SRC=${SRC:-$CACHE/series-src}
OUT=${OUT:-$CACHE/series-out}
PY=${PY:-$KPN/.venv/bin/python}
TREES=${TREES:-w32 w32rne}
case " $TREES " in
  *" w32"*) WEIGHTS=${WEIGHTS:-$KPN/weights/vkdt-w32} ;;
  *) WEIGHTS=${WEIGHTS:-$KPN/weights/design} ;; # design trees only
esac
LUT=$OUT/$(basename "$WEIGHTS" | sed 's/^vkdt-//').lut # w32.lut, design.lut
# the design trees' config.h lines that `kpn export` does not write (yet) into the graph's
# header: the series' switches 0005 to 0008 as weights/design needs them
DESIGN_DEFINES=${DESIGN_DEFINES:-INPUT_STAR15_SNR;KPN_LEVELS 4;DENOISE_LEVELS 0;POST_MLP_DIFF_MIRROR_COARSE}
CROPS=${CROPS:-c128:144:240:192:320 full:0:384:0:512}
PHOTO=${PHOTO:-coffee:8:44}  # scikit-image photo:row:column of the 512x384 test image
NOISE_A=${NOISE_A:-20000}
NOISE_B=${NOISE_B:-40}
TOL=${TOL:-2e-3}
export VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
export VK_DRIVER_FILES=$VK_ICD_FILENAMES
export OMP_NUM_THREADS=1
export MESA_SHADER_CACHE_DIR=${MESA_SHADER_CACHE_DIR:-$CACHE/mesa_shader_cache} # lavapipe's compiled shaders
GRAPH=$OUT/cfg/kpn-infer-pfm.cfg

log() { echo "[$(date -u +%H:%M:%S)] $*"; }

deps() {
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y mesa-vulkan-drivers libvulkan-dev \
    vulkan-tools glslang-tools gcc make git patch python3
}

export_weights() { # the shipped weights as vkdt reads them, and the graphs
  mkdir -p "$OUT"
  cd "$KPN"
  nice -n 19 "$PY" -m kpn export "$WEIGHTS" -o "$LUT" --vkdt-cfg "$OUT/cfg" --noise "$NOISE_A" "$NOISE_B"
  # the .lut's weights (header + its f16 values) must be those of the shipped weights.lut
  # (the two differ only in the text trailer that follows)
  local n=$((16 + 2 * $(od -An -tu4 -j8 -N4 "$LUT") * $(od -An -tu4 -j12 -N4 "$LUT")))
  cmp -n "$n" "$LUT" "$WEIGHTS/weights.lut" && log "$(basename "$LUT"): the first $n bytes equal $WEIGHTS/weights.lut's"
  case " $TREES " in *" design"*) design_header ;; esac
}

design_header() { # add DESIGN_DEFINES to the graph header's config.h lines (by hand, for now)
  "$PY" - "$GRAPH" "$DESIGN_DEFINES" <<'PYEOF'
import sys
graph, defines = sys.argv[1], [d.strip() for d in sys.argv[2].split(";") if d.strip()]
lines = open(graph).read().split("\n")
start = next(i for i, l in enumerate(lines) if "must be built with these lines in" in l)
end = start + 1
while lines[end].startswith("#   "):
    end += 1
have = {l.split()[2] for l in lines[start + 1:end] if l.startswith("#   #define ")}
add = [f"#   #define {d}" for d in defines if d.split()[0] not in have]
lines[end:end] = add
open(graph, "w").write("\n".join(lines))
print("graph header: + " + "; ".join(a[4:] for a in add) if add else "graph header: nothing to add")
PYEOF
}

config_h() { # $1 = config.h: set the lines the graph's header asks for
  "$PY" - "$1" "$GRAPH" <<'PYEOF'
import re, sys
cfgh, graph = sys.argv[1:3]
req, on = [], False
for l in open(graph):
    l = l.rstrip("\n")
    if "must be built with these lines in" in l:
        on = True
        continue
    m = re.match(r"#   (// )?#define (\w+)(?: (.*))?$", l) if on else None
    if on and not m:
        break
    if m:
        req.append((m.group(1) is None, m.group(2), (m.group(3) or "").strip()))
if not req:
    sys.exit(f"{graph}: no config.h lines in its header")
lines = open(cfgh).read().split("\n")
for active, name, val in req:
    idx = [i for i, l in enumerate(lines) if re.match(rf"\s*#define {name}\b", l)]
    if active:
        want = f"#define {name} {val}".rstrip()
        if idx and lines[idx[0]].split("//")[0].split() == want.split():
            continue
        for i in idx[1:]:
            lines[i] = "// " + lines[i]
        new = want + " // oracle_series.sh: the graph's header"
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
open(cfgh, "w").write("\n".join(lines))
PYEOF
  # check with the preprocessor: each active line of the header is what config.h defines
  local defs; defs=$(gcc -E -dM -x c "$1")
  grep -E '^#   #define ' "$GRAPH" | sed 's/^#   //' | while read -r _ name val; do
    local got; got=$(echo "$defs" | sed -n "s/^#define $name \(.*\)$/\1/p" | sed 's/ *$//')
    [ "$got" = "$val" ] || { echo "config.h: $name is '$got', the graph wants '$val'" >&2; exit 1; }
  done
  grep -E '^#   // #define ' "$GRAPH" | sed 's|^#   // #define ||' | while read -r name _; do
    if echo "$defs" | grep -q "^#define $name\b"; then echo "config.h: $name is defined, the graph wants it off" >&2; exit 1; fi
  done
}

src() {
  [ -f "$GRAPH" ] || export_weights
  git --git-dir="$VKDT_GIT" cat-file -e "$VKDT_COMMIT^{commit}" ||
    { echo "$VKDT_GIT lacks vkdt $VKDT_COMMIT" >&2; exit 2; }
  rm -rf "$SRC/vkheaders"; mkdir -p "$SRC/vkheaders"
  # only the C headers (a partial mirror may lack the .hpp blobs: git then prints "invalid
  # object ... vulkan_structs.hpp" but writes the named files and exits 0)
  git --git-dir="$VKH_GIT" archive "$VKH_TAG" include/vulkan/vulkan.h include/vulkan/vulkan_core.h \
    include/vulkan/vk_platform.h include/vk_video | tar -x -C "$SRC/vkheaders"
  write_patches "$OUT/patches"
  local t p
  for t in $TREES; do
    rm -rf "${SRC:?}/$t"; mkdir -p "$SRC/$t"
    git --git-dir="$VKDT_GIT" archive "$VKDT_COMMIT" | tar -x -C "$SRC/$t"
    log "$t: vkdt ${VKDT_COMMIT:0:8} in $SRC/$t; the series:"
    if ! bash "$HERE/apply_series.sh" "$SRC/$t"; then
      echo "stopped: kpn's series does not apply to vkdt ${VKDT_COMMIT:0:8} (the patch named above)" >&2
      exit 1
    fi
    local harness="01-lavapipe-host 02-coopmat-fallback"
    case $t in
      w32) ;;
      w32rne) harness="$harness 05-rne-store-variant" ;;
      design) harness="$harness 03-mip-plain" ;;
      designrne) harness="$harness 03-mip-plain 05-rne-store-variant 06-rne-store-design" ;;
      *) echo "unknown tree $t (w32 w32rne design designrne)" >&2; exit 2 ;;
    esac
    for p in $harness; do
      ( cd "$SRC/$t" && patch -p1 --dry-run -s < "$OUT/patches/$p.patch" >/dev/null ) ||
        { echo "stopped: the oracle's lavapipe patch $p does not apply on top of the series" >&2; exit 1; }
      ( cd "$SRC/$t" && patch -p1 -s < "$OUT/patches/$p.patch" )
      echo "applied (lavapipe harness) $p"
    done
    config_h "$SRC/$t/src/pipe/modules/kpn-t/config.h"
  done
}

build() {
  local t
  for t in $TREES; do
    cd "$SRC/$t"
    config_mk
    log "$t: building vkdt-cli"
    nice -n 19 make -f oracle.mk -j1 oracle > "$OUT/build-$t.log" 2>&1 || { tail -20 "$OUT/build-$t.log"; exit 1; }
    log "built $SRC/$t/bin/vkdt-cli"
  done
}

image() {
  mkdir -p "$OUT"
  cd "$KPN"
  local photo py0 px0; IFS=: read -r photo py0 px0 <<<"$PHOTO"
  "$PY" "$HERE/oracle_series.py" make "$OUT" --a "$NOISE_A" --b "$NOISE_B" --photo "$photo" --y0 "$py0" --x0 "$px0"
  local c
  for c in $CROPS; do
    IFS=: read -r name y0 y1 x0 x1 <<<"$c"
    "$PY" "$HERE/oracle_series.py" crop "$OUT" "$name" "$y0" "$y1" "$x0" "$x1"
  done
}

vkdt_run() { # tree in.pfm(top row first) out-basename
  # --colour-prim bt2020 --colour-trc linear: the linear output (no colenc), as the graph says
  local t=$1 in=$2 out=$3 t0 t1
  rm -f "$out.pfm"
  t0=$(date +%s)
  ( cd "$OUT" && stdbuf -oL -eL nice -n 19 "$SRC/$t/bin/vkdt-cli" -d perf -g "$GRAPH" \
      --format o-pfm --filename "$out" --colour-prim bt2020 --colour-trc linear \
      --config "param:i-pfm:main:filename:$in" > "$out.log" 2>&1 ) || true
  t1=$(date +%s)
  grep -q "writing" "$out.log" && [ -f "$out.pfm" ] || { tail "$out.log"; return 1; }
  log "vkdt-cli ($t) wrote $out.pfm in $((t1 - t0)) s"
}

run() {
  local c t rc=0
  cd "$KPN"
  for c in $CROPS; do
    IFS=: read -r name _ <<<"$c"
    local k0 k1; k0=$(date +%s)
    nice -n 19 "$PY" infer.py "$OUT/noisy-$name.pfm" --weights "$WEIGHTS" --precision vkdt-f16 \
      --vkdt-matmul fallback --sure off --noise-a "$NOISE_A" --noise-b "$NOISE_B" -o "$OUT/kpn-$name.pfm"
    k1=$(date +%s); log "infer.py wrote $OUT/kpn-$name.pfm in $((k1 - k0)) s"
    for t in $TREES; do
      vkdt_run "$t" "$OUT/noisy-$name-vkdt.pfm" "$OUT/vkdt-$t-$name"
      echo "=== $name, tree $t: vkdt-cli vs infer.py" | tee "$OUT/result-$t-$name.txt"
      "$PY" "$HERE/oracle_series.py" compare "$OUT/vkdt-$t-$name.pfm" "$OUT/kpn-$name.pfm" \
        "$OUT/clean-$name.pfm" --noisy "$OUT/noisy-$name.pfm" --tol "$TOL" | tee -a "$OUT/result-$t-$name.txt" || rc=3
    done
  done
  return $rc
}

# --- copied verbatim from /work/shared/vkdt-oracle/oracle.sh (sha256 30cc8296...): its patches 01, 02 and 05
# (05's context refreshed for patch 0006's apply.comp lines, its changes the same)
write_patches() { # $1 = dir
  local P=$1; mkdir -p "$P"
  cat > "$P/01-lavapipe-host.patch" <<'PATCH_EOF'
--- a/src/qvk/qvk.c
+++ b/src/qvk/qvk.c
@@ -460,7 +460,8 @@
 
   const char *requested_device_extensions[30];
   int len = 0;
-  requested_device_extensions[len++] = VK_EXT_DESCRIPTOR_INDEXING_EXTENSION_NAME;   // intel doesn't have it pre 2015 (hd 520)
+  // ORACLE PATCH: lavapipe (mesa 22.3) has descriptor indexing only as Vulkan 1.2 core (v12f), not as the EXT
+  // requested_device_extensions[len++] = VK_EXT_DESCRIPTOR_INDEXING_EXTENSION_NAME;
   if(qvk.shader64bit_indexing_supported)
     requested_device_extensions[len++] = VK_EXT_SHADER_64BIT_INDEXING_EXTENSION_NAME; // 64 bit ssbo addresses
   if(qvk.unified_image_layouts_supported)
@@ -633,7 +634,7 @@
   if (!cosited && !midpoint)
   {
     dt_log(s_log_err|s_log_qvk, "yuv (G8_B8R8_2PLANE_420) not supported!");
-    return 1;
+    return VK_SUCCESS; // ORACLE PATCH: lavapipe has no yuv sampler; only video/webcam input needs it
   }
   VkSamplerYcbcrConversionCreateInfo conversion_info = {
     .sType         = VK_STRUCTURE_TYPE_SAMPLER_YCBCR_CONVERSION_CREATE_INFO,
--- a/src/pipe/graph-run-nodes-allocate.h
+++ b/src/pipe/graph-run-nodes-allocate.h
@@ -30,7 +30,7 @@
   vkGetPhysicalDeviceMemoryProperties2(qvk.physical_device, &memprop);
   for (int i=0;i<memprop.memoryProperties.memoryHeapCount;i++)
     if(memprop.memoryProperties.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
-      if(budget.heapBudget[i] > size)
+      if(budget.heapBudget[i] > size || budget.heapBudget[i] == 0) // ORACLE PATCH: lavapipe has no VK_EXT_memory_budget (budget stays 0)
         return VK_SUCCESS;
   dt_log(s_log_qvk, "failed to allocate %ld MB index %d", size/1024/1024, heap_index);
   return VK_ERROR_OUT_OF_DEVICE_MEMORY;
PATCH_EOF
  cat > "$P/02-coopmat-fallback.patch" <<'PATCH_EOF'
--- a/src/pipe/modules/shared/coopmat.glsl
+++ b/src/pipe/modules/shared/coopmat.glsl
@@ -20,8 +20,21 @@
 #define coopmat_C_new(A) coopmat_C_t(A)
 #else
 // uh, sorry about what follows:
-shared float16_t As[16*16*2]; // gl_NumSubgroups is not a constant. gl_SubgroupSize == 32 is something we assume
-shared float16_t Bs[16*16*2]; // oh ffs whatever, i'll just hardcode it fu glsl. (2 == N_BLOCKS)
+// ORACLE PATCH: the KHR layout constants are missing without GL_KHR_cooperative_matrix (glslang 12),
+// the "warp" is the workgroup row (gl_LocalInvocationID.y, 32 lanes in x) instead of a 32-wide subgroup
+// (lavapipe has subgroup size 8), the shared-memory handshakes are workgroup barriers, and the
+// scratch arrays hold N_BLOCKS warps (WIDTH 64 has 4).
+#define gl_CooperativeMatrixLayoutRowMajor 0
+#define gl_CooperativeMatrixLayoutColumnMajor 1
+#define FB_LANE (gl_LocalInvocationID.x)
+#define FB_WARP (gl_LocalInvocationID.y)
+#define FB_SYNC() do { memoryBarrierShared(); barrier(); } while(false)
+// lavapipe turns every barrier into a coroutine suspend point; with the [[unroll]] loops of mlp.h/fwd.h
+// that makes hundreds and LLVM's coroutine split takes forever: keep those loops rolled.
+// (changes nothing in the arithmetic, only the code shape)
+#define unroll dont_unroll
+shared float16_t As[16*16*N_BLOCKS];
+shared float16_t Bs[16*16*N_BLOCKS];
 // interestingly, the following even works to define stuff like `coopmat_t frag[2]`:
 #define coopmat_A_t float16_t[8]
 #define coopmat_B_t float16_t[8]
@@ -32,9 +45,10 @@
 
 #define coopmat_load(frag, buf, element, stride, colmajor)\
 do {\
-  const uint lane = gl_SubgroupInvocationID, el = 256*gl_SubgroupID;\
+  const uint lane = FB_LANE, el = 256*FB_WARP;\
   uint row = lane / 2, col = lane % 2;\
   uvec4 load = buf[element + row * stride + col];\
+  FB_SYNC();\
   As[el + 16*row + 8*col + 0] = unpackFloat2x16(load.x).x;\
   As[el + 16*row + 8*col + 1] = unpackFloat2x16(load.x).y;\
   As[el + 16*row + 8*col + 2] = unpackFloat2x16(load.y).x;\
@@ -43,7 +57,7 @@
   As[el + 16*row + 8*col + 5] = unpackFloat2x16(load.z).y;\
   As[el + 16*row + 8*col + 6] = unpackFloat2x16(load.w).x;\
   As[el + 16*row + 8*col + 7] = unpackFloat2x16(load.w).y;\
-  subgroupMemoryBarrierShared();\
+  FB_SYNC();\
   for(int j=0;j<8;j++)\
   {\
     uint row = (32*j + lane) / 16, col = lane % 16;\
@@ -54,14 +68,15 @@
 
 #define coopmat_store(frag, buf, element, stride, colmajor)\
 do {\
-  const uint lane = gl_SubgroupInvocationID, el = 256*gl_SubgroupID;\
+  const uint lane = FB_LANE, el = 256*FB_WARP;\
+  FB_SYNC();\
   for(int j=0;j<8;j++)\
   {\
     uint row = (32*j + lane) / 16, col = lane % 16;\
     if(colmajor==1) As[el + 16*col + row] = frag[j];\
     else            As[el + 16*row + col] = frag[j];\
   }\
-  subgroupMemoryBarrierShared();\
+  FB_SYNC();\
   uint row = lane / 2, col = lane % 2;\
   buf[element + row * stride + col] = uvec4(\
       packFloat2x16(f16vec2(As[el + 16*row + 8*col + 0], As[el + 16*row + 8*col + 1])),\
@@ -72,8 +87,8 @@
 
 #define coopmat_load_f16(frag, buf, element, stride, colmajor)\
 do {\
-  uint lane = gl_SubgroupInvocationID;\
-  subgroupMemoryBarrierShared();\
+  uint lane = FB_LANE;\
+  FB_SYNC();\
   for(int j=0;j<8;j++)\
   {\
     uint row = (32*j + lane) / 16, col = lane % 16;\
@@ -83,23 +98,24 @@
 
 #define coopmat_store_f16(frag, buf, element, stride, colmajor)\
 do {\
-  uint lane = gl_SubgroupInvocationID;\
+  uint lane = FB_LANE;\
+  FB_SYNC();\
   for(int j=0;j<8;j++)\
   {\
     uint row = (32*j + lane) / 16, col = lane % 16;\
     buf[element + stride*row + col] = frag[j];\
   }\
-  subgroupMemoryBarrierShared();\
+  FB_SYNC();\
 } while(false)
 
 // return A*B + C
 coopmat_C_t coopmat_madd(in coopmat_A_t A, in coopmat_B_t B, in coopmat_C_t C)
 {
-  const uint el = 256*gl_SubgroupID;
+  const uint el = 256*FB_WARP;
   coopmat_store_f16(A, As, el, 16, false);
   coopmat_store_f16(B, Bs, el, 16, false);
 
-  uint lane = gl_SubgroupInvocationID;
+  uint lane = FB_LANE;
   for(int i=0;i<8;i++)
   { // every thread computes 8 output values in C:
     uint row = (32*i + lane) / 16, col = lane % 16;
PATCH_EOF
  cat > "$P/05-rne-store-variant.patch" <<'PATCH_EOF'
--- a/src/pipe/modules/kpn/main.c
+++ b/src/pipe/modules/kpn/main.c
@@ -131,7 +131,7 @@
     int id_up = -1;
 #ifdef PRE_MLP_DIFF
     id_up = dt_node_add( // upsample coarse and blend the result to fine with the fine alpha
-        graph, module, "kpn-t", "up", roi_M[i].wd, roi_M[i].ht, 1, 0, 0, 3,
+        graph, module, "kpn-t", "up", roi_M[i].wd, roi_M[i].ht, 1, sizeof(pc_apply), pc_apply, 3, // ORACLE VARIANT: level
         "I",  "read",  "rgba", "*",   dt_no_roi,   // the convolved image on this (fine) scale (with alpha channel)
         "Oc", "read",  "rgba", "*",   dt_no_roi,   // output of coarse level: connect to id_apply->out on coarsest i+1==3, or else to id_up i+1
         "O",  "write", "rgba", "f16", &roi_M[i]);
--- a/src/pipe/modules/kpn-t/apply.comp
+++ b/src/pipe/modules/kpn-t/apply.comp
@@ -8,6 +8,7 @@
 #include "shared.glsl"
 #include "sigmoid.glsl"
 #include "config.h"
+#include "oracle_rne16.glsl"
 layout(local_size_x = DT_LOCAL_SIZE_X, local_size_y = DT_LOCAL_SIZE_Y, local_size_z = 1) in;
 // layout(std140, set = 0, binding = 1) uniform params_t { } params;
 layout(push_constant, std140) uniform push_t
@@ -33,7 +34,7 @@
   if(DENOISE_LEVELS > 0 && push.level >= DENOISE_LEVELS)
   { // XXX DEBUG train only one level! (the levels past DENOISE_LEVELS pass through)
     vec3 rgb =  texture(img_M, (ipos + 0.5)/vec2(textureSize(img_M, 0))).rgb;
-    imageStore(img_I, ipos, vec4(rgb, 1.0));
+    imageStore(img_I, ipos, oracle_rne16(vec4(rgb, 1.0)));
     return;
   }
   vec3 rgb = vec3(0.0);
@@ -56,7 +57,7 @@
   if(DENOISE_LEVELS > 0 && push.level >= DENOISE_LEVELS)
   { // XXX DEBUG train only one level! (the levels past DENOISE_LEVELS pass through)
     vec3 rgb =  texture(img_M, (ipos + 0.5)/vec2(textureSize(img_M, 0))).rgb;
-    imageStore(img_I, ipos, vec4(rgb, 1.0));
+    imageStore(img_I, ipos, oracle_rne16(vec4(rgb, 1.0)));
     return;
   }
   float sumw = 0.0;
@@ -95,5 +96,5 @@
   const float alpha = clamp(float(ssbo_K.v[nonuniformEXT(idx)]), 0, 1); // clamp
 #endif
   // const float alpha = max(0.0, float(ssbo_K.v[nonuniformEXT(idx)])); // relu
-  imageStore(img_I, ipos, vec4(clamp(rgb, vec3(-65000.0), vec3(65000.0)), alpha));
+  imageStore(img_I, ipos, oracle_rne16(vec4(clamp(rgb, vec3(-65000.0), vec3(65000.0)), alpha)));
 }
--- a/src/pipe/modules/kpn-t/diff.comp
+++ b/src/pipe/modules/kpn-t/diff.comp
@@ -3,6 +3,7 @@
 #extension GL_EXT_control_flow_attributes   : enable
 #include "shared.glsl"
 #include "config.h"
+#include "oracle_rne16.glsl"
 layout(local_size_x = DT_LOCAL_SIZE_X, local_size_y = DT_LOCAL_SIZE_Y, local_size_z = 1) in;
 layout(set = 1, binding = 0) uniform sampler2D img_M0; // fine image
 layout(set = 1, binding = 1) uniform sampler2D img_M1; // coarse mipmap
@@ -29,5 +30,5 @@
 #endif
   vec3 I = texelFetch(img_M0, opos, 0).rgb;
   vec3 diff = I - C;
-  imageStore(img_out, opos, vec4(diff, 1));
+  imageStore(img_out, opos, oracle_rne16(vec4(diff, 1)));
 }
--- a/src/pipe/modules/kpn-t/oracle_rne16.glsl
+++ b/src/pipe/modules/kpn-t/oracle_rne16.glsl
@@ -0,0 +1,11 @@
+// ORACLE VARIANT (not vkdt): lavapipe converts f32 -> f16 on image stores by truncation (gallivm
+// lp_build_float_to_half, mode 3); round to nearest even first, so that the store is exact.
+float oracle_rne16(float c)
+{
+  const uint a = floatBitsToUint(c) & 0x7fffffffu;
+  if(a >= 0x7f800000u || a == 0u) return c;
+  const int e = int(a >> 23) - 127;
+  const int n = max(e, -14) - 10; // log2 of the f16 ulp at c (subnormal below 2^-14)
+  return ldexp(roundEven(ldexp(c, -n)), n);
+}
+vec4 oracle_rne16(vec4 v) { return vec4(oracle_rne16(v.x), oracle_rne16(v.y), oracle_rne16(v.z), oracle_rne16(v.w)); }
--- a/src/pipe/modules/kpn-t/sub.comp
+++ b/src/pipe/modules/kpn-t/sub.comp
@@ -2,6 +2,7 @@
 #extension GL_GOOGLE_include_directive    : enable
 #extension GL_EXT_nonuniform_qualifier    : enable
 #include "shared.glsl"
+#include "oracle_rne16.glsl"
 layout(local_size_x = DT_LOCAL_SIZE_X, local_size_y = DT_LOCAL_SIZE_Y, local_size_z = 1) in;
 
 layout(set = 1, binding = 0) uniform sampler2D img_in;           // fine res input image
@@ -20,5 +21,5 @@
   vec4 rgb = vec4(0.0);
   for(int j=-2;j<=2;j++) for(int i=-2;i<=2;i++)
     rgb += w[j+2]*w[i+2] * texture(img_in, (ipos + vec2(i, j) + 0.5)/vec2(sz));
-  imageStore(img_out, opos, rgb);
+  imageStore(img_out, opos, oracle_rne16(rgb));
 }
--- a/src/pipe/modules/kpn-t/up.comp
+++ b/src/pipe/modules/kpn-t/up.comp
@@ -8,6 +8,8 @@
 #include "shared.glsl"
 #include "sigmoid.glsl"
 #include "config.h"
+#include "oracle_rne16.glsl"
+layout(push_constant, std140) uniform push_t { int level; } push; // ORACLE VARIANT: O_0 is the f32 module output
 layout(local_size_x = DT_LOCAL_SIZE_X, local_size_y = DT_LOCAL_SIZE_Y, local_size_z = 1) in;
 // layout(std140, set = 0, binding = 1) uniform params_t { } params;
 layout(set = 1, binding = 0) uniform sampler2D img_I;
@@ -25,7 +27,7 @@
   vec4 I = texelFetch(img_I, opos, 0);
   vec3 O = texture(img_Oc, vec2(opos+1.0)/vec2(imageSize(img_O))).rgb;
   O += I.rgb * I.a;
-  imageStore(img_O, opos, vec4(O, 1));
+  imageStore(img_O, opos, push.level > 0 ? oracle_rne16(vec4(O, 1)) : vec4(O, 1));
 #else
   const float w0[3] = {5.0 / 16.0, 10.0 / 16.0, 1.0 / 16.0};
   const float w1[3] = {1.0 / 16.0, 10.0 / 16.0, 5.0 / 16.0};
PATCH_EOF
  # written for issue 24's design trees (not in oracle.sh): 03 replaces mip.comp, whose
  # subgroup reductions assume 32 lanes (lavapipe has 8), by the same means in the same
  # order without subgroups; 06 rounds the design build's remaining f16 stores (mip.comp,
  # up.comp's bspline branch) to nearest even, as 05 does for the NO_ALIAS build
  cat > "$P/03-mip-plain.patch" <<'PATCH_EOF'
--- a/src/pipe/modules/kpn-t/mip.comp
+++ b/src/pipe/modules/kpn-t/mip.comp
@@ -1,61 +1,42 @@
 #version 460
 #extension GL_GOOGLE_include_directive      : enable
 #extension GL_EXT_nonuniform_qualifier      : enable
-#extension GL_KHR_shader_subgroup_clustered : enable
-#extension GL_KHR_shader_subgroup_shuffle   : enable
 #include "shared.glsl"
 
+// ORACLE PATCH: mip.comp without subgroup operations, for lavapipe. Each workgroup writes
+// the same three levels of its 8x8 block as vkdt's mip.comp (with kpn's patch 0003): the
+// 2x2, 4x4 and 8x8 means of the input, each a tree of pairwise means (a+b)/2, rows first
+// (x pairs, then 4, 8), then the columns of those, in vkdt's order and in float32.
 layout(local_size_x = 8, local_size_y = 8, local_size_z = 1) in;
 layout(set = 1, binding = 0) uniform sampler2D img_in;
 layout(set = 1, binding = 1) uniform writeonly image2D img_out2; // 2x2 downsized
 layout(set = 1, binding = 2) uniform writeonly image2D img_out4; // 4x4 downsized
 layout(set = 1, binding = 3) uniform writeonly image2D img_out8; // 8x8
 
-shared vec3 sbuf[7*8];
+vec3 row_mean(ivec2 p, int n)
+{ // pairwise mean of n = 2, 4, 8 texels from p along x
+  vec3 v[8];
+  for(int i=0;i<n;i++) v[i] = texture(img_in, (p + ivec2(i, 0) + 0.5)/vec2(textureSize(img_in, 0))).rgb;
+  for(int m=n;m>1;m/=2) for(int i=0;i<m/2;i++) v[i] = (v[2*i] + v[2*i+1]) / 2.0;
+  return v[0];
+}
+
+vec3 block_mean(ivec2 p, int n)
+{ // pairwise mean over n rows of the row means
+  vec3 v[8];
+  for(int j=0;j<n;j++) v[j] = row_mean(p + ivec2(0, j), n);
+  for(int m=n;m>1;m/=2) for(int j=0;j<m/2;j++) v[j] = (v[2*j] + v[2*j+1]) / 2.0;
+  return v[0];
+}
 
-// compute 3 simplistic 2x2 average mipmap levels at once.
 void main()
 {
-  ivec2 ipos = ivec2(gl_GlobalInvocationID)/8;
-  vec3 rgb = vec3(0.0);
-  nonuniformEXT int sx = int(gl_SubgroupInvocationID % 8);
-  nonuniformEXT int sy = int(gl_SubgroupInvocationID / 8 + 4*gl_SubgroupID);
-  ivec2 tc = 8*ipos + ivec2(sx, sy);
-  // if(all(lessThan(tc, textureSize(img_in, 0)))) rgb = texelFetch(img_in, tc, 0).rgb;
-  rgb = texture(img_in, (tc + 0.5)/vec2(textureSize(img_in, 0))).rgb; // wrap around for non multiples of 8
-
-  // horizontal sums/reduction
-  sx /= 2;
-  rgb = subgroupClusteredAdd(rgb, 2)/2.0;
-  if((gl_SubgroupInvocationID % 2) == 0) sbuf[sx + 7*sy] = rgb;
-  barrier();
-  rgb = (rgb + subgroupShuffleXor(rgb, 2)) / 2.0;
-  sx /= 2;
-  if((gl_SubgroupInvocationID % 4) == 0) sbuf[4+sx + 7*sy] = rgb;
-  barrier();
-  rgb = (rgb + subgroupShuffleXor(rgb, 4)) / 2.0;
-  sx /= 2;
-  if((gl_SubgroupInvocationID % 8) == 0) sbuf[6 + 7*sy] = rgb;
-
-  // vertical sums/reduction
-  barrier(); // wait until shared memory is filled
-  sy = int(gl_SubgroupInvocationID % 8);
-  sx = int(gl_SubgroupInvocationID / 8 + 4*gl_SubgroupID);
-  rgb = vec3(0.0);
-  if(sx < 7) rgb = sbuf[sx + 7*sy];
-  barrier();
-  rgb = subgroupClusteredAdd(rgb, 2)/2.0;
-  // TODO: go vertical first so we can write out coalesced? (images are special anyways?)
-  if(sx < 4)
-    if((sy % 2) == 0) imageStore(img_out2, 4*ipos + ivec2(sx, sy/2), vec4(rgb, 1)); // 4x4 block
-  // barrier();
-
-  rgb = (rgb + subgroupShuffleXor(rgb, 2)) / 2.0;
-  if(sx >= 4 && sx < 6)
-    if((sy % 4) == 0) imageStore(img_out4, 2*ipos + ivec2((sx-4), sy/4), vec4(rgb, 1)); // 2x2 block
-  // barrier();
-
-  rgb = (rgb + subgroupShuffleXor(rgb, 4)) / 2.0;
-  if(sx == 6 && sy == 0)
-    imageStore(img_out8, ipos, vec4(rgb, 1)); // 1x1 full average of 8x8 block
+  ivec2 ipos = ivec2(gl_WorkGroupID.xy);
+  int sx = int(gl_LocalInvocationID.x), sy = int(gl_LocalInvocationID.y);
+  if(sx < 4 && sy < 4)
+    imageStore(img_out2, 4*ipos + ivec2(sx, sy), vec4(block_mean(8*ipos + 2*ivec2(sx, sy), 2), 1)); // 4x4 block
+  else if(sx >= 4 && sx < 6 && sy < 2)
+    imageStore(img_out4, 2*ipos + ivec2(sx-4, sy), vec4(block_mean(8*ipos + 4*ivec2(sx-4, sy), 4), 1)); // 2x2 block
+  else if(sx == 6 && sy == 0)
+    imageStore(img_out8, ipos, vec4(block_mean(8*ipos, 8), 1)); // 1x1 full average of 8x8 block
 }
PATCH_EOF
  cat > "$P/06-rne-store-design.patch" <<'PATCH_EOF'
--- a/src/pipe/modules/kpn/main.c
+++ b/src/pipe/modules/kpn/main.c
@@ -150,7 +150,7 @@
     if(i < Mcnt-2)
     {
       id_up = dt_node_add( // upsample coarse and blend the result to fine with the fine alpha
-          graph, module, "kpn-t", "up", roi_M[i].wd, roi_M[i].ht, 1, 0, 0, 3,
+          graph, module, "kpn-t", "up", roi_M[i].wd, roi_M[i].ht, 1, sizeof(pc_apply), pc_apply, 3, // ORACLE VARIANT: level
           "I",  "read",  "rgba", "*",   dt_no_roi,   // the convolved image on this (fine) scale (with alpha channel)
           "Oc", "read",  "rgba", "*",   dt_no_roi,   // output of coarse level: connect to id_apply->out on coarsest i+1==3, or else to id_up i+1
           "O",  "write", "rgba", "f16", &roi_M[i]);
--- a/src/pipe/modules/kpn-t/mip.comp
+++ b/src/pipe/modules/kpn-t/mip.comp
@@ -2,6 +2,7 @@
 #extension GL_GOOGLE_include_directive      : enable
 #extension GL_EXT_nonuniform_qualifier      : enable
 #include "shared.glsl"
+#include "oracle_rne16.glsl"
 
 // ORACLE PATCH: mip.comp without subgroup operations, for lavapipe. Each workgroup writes
 // the same three levels of its 8x8 block as vkdt's mip.comp (with kpn's patch 0003): the
@@ -34,9 +35,9 @@
   ivec2 ipos = ivec2(gl_WorkGroupID.xy);
   int sx = int(gl_LocalInvocationID.x), sy = int(gl_LocalInvocationID.y);
   if(sx < 4 && sy < 4)
-    imageStore(img_out2, 4*ipos + ivec2(sx, sy), vec4(block_mean(8*ipos + 2*ivec2(sx, sy), 2), 1)); // 4x4 block
+    imageStore(img_out2, 4*ipos + ivec2(sx, sy), oracle_rne16(vec4(block_mean(8*ipos + 2*ivec2(sx, sy), 2), 1))); // 4x4 block
   else if(sx >= 4 && sx < 6 && sy < 2)
-    imageStore(img_out4, 2*ipos + ivec2(sx-4, sy), vec4(block_mean(8*ipos + 4*ivec2(sx-4, sy), 4), 1)); // 2x2 block
+    imageStore(img_out4, 2*ipos + ivec2(sx-4, sy), oracle_rne16(vec4(block_mean(8*ipos + 4*ivec2(sx-4, sy), 4), 1))); // 2x2 block
   else if(sx == 6 && sy == 0)
-    imageStore(img_out8, ipos, vec4(block_mean(8*ipos, 8), 1)); // 1x1 full average of 8x8 block
+    imageStore(img_out8, ipos, oracle_rne16(vec4(block_mean(8*ipos, 8), 1))); // 1x1 full average of 8x8 block
 }
--- a/src/pipe/modules/kpn-t/up.comp
+++ b/src/pipe/modules/kpn-t/up.comp
@@ -75,6 +75,6 @@
 #else
   O = mix(O, I.rgb, I.a);
 #endif
-  imageStore(img_O, opos, vec4(O, 1));
+  imageStore(img_O, opos, push.level > 0 ? oracle_rne16(vec4(O, 1)) : vec4(O, 1));
 #endif
 }
PATCH_EOF
}

# --- copied verbatim from oracle.sh
config_mk() { # vkdt's own switches: every optional dependency off; gcc; our Vulkan headers
  cat > bin/config.mk <<EOF
VKDT_USE_RAWINPUT=0
export VKDT_USE_RAWINPUT
VKDT_USE_V4L2=0
export VKDT_USE_V4L2
VKDT_USE_MLV=0
export VKDT_USE_MLV
VKDT_USE_ALSA=0
export VKDT_USE_ALSA
VKDT_USE_MCRAW=0
export VKDT_USE_MCRAW
VKDT_USE_FFMPEG=0
export VKDT_USE_FFMPEG
VKDT_USE_QUAKE=0
export VKDT_USE_QUAKE
VKDT_JPEG_CFLAGS=
VKDT_JPEG_LDFLAGS=
VKDT_GLFW_CFLAGS=
VKDT_GLFW_LDFLAGS=
VKDT_AV_CFLAGS=
VKDT_AV_LDFLAGS=
VKDT_VULKAN_CFLAGS=-I$SRC/vkheaders/include
VKDT_VULKAN_LDFLAGS=-lvulkan
export VKDT_VULKAN_CFLAGS VKDT_VULKAN_LDFLAGS VKDT_JPEG_CFLAGS VKDT_JPEG_LDFLAGS VKDT_GLFW_CFLAGS VKDT_GLFW_LDFLAGS VKDT_AV_CFLAGS VKDT_AV_LDFLAGS
CC=gcc
CXX=g++
OPT_CFLAGS=-Wall -pipe -O2 -DNDEBUG
export CC CXX OPT_CFLAGS
EOF
  # build only vkdt-cli and what the kpn-infer-pfm graph loads (found with strace):
  # i-pfm, i-lut, kpn, o-pfm, colenc (+ its shader), mipmap/main.comp (graph.c loads it
  # always), and kpn-t's shaders for the NO_ALIAS + PRE_MLP_DIFF graph (inf- = fallback)
  cat > oracle.mk <<'EOF'
include bin/config.mk.defaults
sinclude bin/config.mk
SHELL=bash
export OPT_CFLAGS OPT_LDFLAGS CC CXX GLSLC AR SHELL
KPNT=pipe/modules/kpn-t
ORACLE_TARGETS=../bin/vkdt-cli \
  pipe/modules/i-pfm/libi-pfm.so pipe/modules/o-pfm/libo-pfm.so pipe/modules/i-lut/libi-lut.so pipe/modules/kpn/libkpn.so \
  pipe/modules/mipmap/main.comp.spv pipe/modules/colenc/main.comp.spv pipe/modules/colenc/libcolenc.so \
  $(KPNT)/inf-.comp.spv $(KPNT)/apply.comp.spv $(KPNT)/sub.comp.spv $(KPNT)/diff.comp.spv $(KPNT)/up.comp.spv $(KPNT)/mip.comp.spv
.PHONY: oracle
oracle:
	$(MAKE) -C src $(ORACLE_TARGETS)
EOF
  printf '#pragma once\n#define VKDT_VERSION "%s-oracle"\n' "${VKDT_COMMIT:0:8}" > src/core/version.h
  mkdir -p bin/data
  ln -sfn ../src/pipe/modules bin/modules
}

[ $# -gt 0 ] || set -- all
for step in "$@"; do
  case "$step" in
    deps) deps ;; export) export_weights ;; src) src ;; build) build ;; image) image ;; run) run ;;
    all) export_weights; src; build; image; run ;;
    *) echo "usage: $0 [deps|export|src|build|image|run|all]..." >&2; exit 2 ;;
  esac
done
