#!/usr/bin/env bash
# The answers a refactoring must leave byte-identical, written to OUT for `diff -r` against
# another commit's:  benchmarks/answers.sh CHECKOUT OUT   (run from any checkout; uses ./.venv)
#   enrol the 5-celebrity train folders (sface, and facenet with random weights), identify --json
#   on the val folders and every shared group photo, and make demo's output, group_results.json
#   and annotated photos (their sha256).
set -u
PY=$(realpath -s "${PY:-.venv/bin/python}")  # -s: the venv's own python, not the one it links to
REPO=$(readlink -f "$1"); OUT=$(readlink -f "$2"); D=$(readlink -f "${FACES_DATA:-$REPO/../shared/data}")
export PYTHONPATH=$REPO FACETOOL_CACHE=$OUT/cache FACES_DATA=$D
rm -rf "$OUT"; mkdir -p "$OUT"; cd "$REPO"
GROUPDIRS="$D/face_recognition-examples/group $D/facenet-pytorch-test-images/group $D/deepface-test-dataset/group $D/face_recognition-examples/unlabeled"
for bb in sface facenet; do
  M=$OUT/m-$bb; W=""; [ $bb = facenet ] && W="--weights random"
  for p in "$D"/5-celebrity-faces/train/*; do
    $PY enroll.py --model "$M" --backbone $bb $W --name "$(basename "$p")" "$p" --json >> "$OUT/enroll-$bb.json" 2>>"$OUT/err.txt"
  done
  $PY identify.py --model "$M" --json "$D/5-celebrity-faces/val" > "$OUT/val-$bb.json" 2>>"$OUT/err.txt"
  for g in $GROUPDIRS; do $PY identify.py --model "$M" --json "$g" >> "$OUT/groups-$bb.json" 2>>"$OUT/err.txt"; done
done
$PY demo.py --out "$OUT/demo" --backbone sface 2>&1 | grep -v " in [0-9.]* s$" | sed 's/[0-9]*%|.*//' > "$OUT/demo-stdout.txt"
cp "$OUT/demo/group_results.json" "$OUT/group_results.json"
(cd "$OUT/demo/annotated" && sha256sum ./*) > "$OUT/annotated.sha256"
rm -rf "$OUT/demo" "$OUT"/m-* "$OUT/cache"
sed -i "s#$OUT#OUT#g" "$OUT"/*.json "$OUT"/*.txt
ls "$OUT"
