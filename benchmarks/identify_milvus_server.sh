#!/bin/bash
# identify.py on 5-celebrity-faces/val, twice each: a FAISS model and a model whose gallery is on a Milvus
# server (FACETOOL_TEST_MILVUS), enrolled from 5-celebrity-faces/train; prints wall times and checks both
# name the same faces the same. Run beside a server:
#   MILVUS_SERVER_PATH=/tmp/milvus-srv PYTHON=.venv/bin/python .ci/milvus-netns.sh benchmarks/identify_milvus_server.sh
set -e
PY=${PYTHON:-.venv/bin/python}
D=${FACES_DATA:-data}/5-celebrity-faces
T=$(mktemp -d /tmp/identcmp-XXXXXX)
for who in $(ls $D/train); do
  $PY enroll.py --model $T/faiss --backbone sface --name $who $D/train/$who --json > /dev/null
  $PY enroll.py --model $T/milvus --backbone sface --name $who $D/train/$who --gallery "$FACETOOL_TEST_MILVUS/celebs" --json > /dev/null
done
$PY -c "import json,sys; print('gallery_uri:', json.load(open('$T/milvus/model.json'))['gallery_uri'])"
for m in faiss milvus faiss milvus; do
  s=$(date +%s.%N)
  $PY identify.py --model $T/$m $D/val --json > $T/$m.json
  e=$(date +%s.%N)
  echo "$m: identify 5-celebrity-faces/val $(echo "$e - $s" | bc) s; $($PY -c "import json; r=json.load(open('$T/$m.json')); print(sum(1 for p in r for f in p['faces']), 'faces,', sum(1 for p in r for f in p['faces'] if f['name']), 'named')")"
done
cmp <($PY -c "import json; print([[f['name'] for f in p['faces']] for p in json.load(open('$T/faiss.json'))])") \
    <($PY -c "import json; print([[f['name'] for f in p['faces']] for p in json.load(open('$T/milvus.json'))])") && echo "same names from both"
rm -rf $T
