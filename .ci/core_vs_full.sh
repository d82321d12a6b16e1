#!/usr/bin/env bash
# The core install against the full one (issue 26): the same commands in both, outputs compared
# with cmp. Usage: .ci/core_vs_full.sh CORE_VENV FULL_PYTHON OUT_DIR
#   CORE_VENV    a venv with `pip install .` (its bin/facetool is used; torch must be absent)
#   FULL_PYTHON  a python with everything installed that imports this checkout
# Each runs from OUT_DIR (never the checkout, so the core venv runs its installed copy), with its
# own FACETOOL_CACHE. Exits non-zero at the first difference.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORE=$(cd "$1" && pwd); FULL=$2; OUT=$(mkdir -p "$3" && cd "$3" && pwd)
DATA=${FACES_DATA:-$ROOT/../shared/data}
CELEB=$DATA/5-celebrity-faces
GROUP_DIRS=("$DATA"/face_recognition-examples/group "$DATA"/facenet-pytorch-test-images/group "$DATA"/deepface-test-dataset/group)
VIDEO=$DATA/video-hamilton/short_hamilton_clip.mp4
! "$CORE/bin/python" -c "import torch" 2>/dev/null || { echo "torch is importable in $CORE"; exit 1; }

run() {  # run core|full ARGS...: facetool in that install
    local which=$1; shift
    if [ "$which" = core ]; then
        FACETOOL_CACHE=$OUT/cache-core "$CORE/bin/facetool" "$@"
    else
        FACETOOL_CACHE=$OUT/cache-full PYTHONPATH=$ROOT "$FULL" -c "from recognizer.cli import main; main()" "$@"
    fi
}

cd "$OUT"
for which in core full; do
    rm -rf "model-$which"
    start=$(date +%s)
    for person in "$CELEB"/train/*/; do
        run $which enroll "$person" --name "$(basename "$person")" --model "model-$which" --backbone sface --json > /dev/null
    done
    run $which identify "$CELEB/val" "${GROUP_DIRS[@]}" --model "model-$which" --json > "photos-$which.json"
    run $which identify "$VIDEO" --model "model-$which" --json > "video-$which.json"
    run $which cluster "${GROUP_DIRS[@]}" --model "model-$which" --json > "cluster-$which.json"
    port=$((18700 + RANDOM % 500))
    run $which serve --model "model-$which" --port $port > "serve-$which.log" 2>&1 &
    pid=$!
    for _ in $(seq 120); do curl -sf "http://127.0.0.1:$port/health" > /dev/null && break; sleep 0.5; done
    curl -sf -F "file=@$DATA/face_recognition-examples/group/$(ls "$DATA/face_recognition-examples/group" | head -1)" \
        "http://127.0.0.1:$port/identify" > "http-$which.json"
    kill $pid; wait $pid 2>/dev/null || true
    echo "$which: enroll + identify + video + cluster + serve in $(( $(date +%s) - start )) s"
done
# The cluster run's id and time stamp are when it ran: compare the rest.
for f in cluster-core.json cluster-full.json; do
    "$FULL" -c "import json,sys; d=json.load(open(sys.argv[1])); [d.pop(k, None) for k in ('run', 'run_id', 'id', 'created', 'time', 'started')]; print(json.dumps(d, sort_keys=True))" "$f" > "$f.cmp"
done
cmp photos-core.json photos-full.json
cmp video-core.json video-full.json
cmp cluster-core.json.cmp cluster-full.json.cmp
cmp http-core.json http-full.json
echo "identical: photos ($(grep -c . photos-core.json) lines), video, cluster, HTTP identify"
