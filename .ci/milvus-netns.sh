#!/bin/bash
# Run a command beside a real Milvus server (the embedded 2.3.5-lite server, PyPI 'milvus'), both
# inside a new loopback-only network namespace: the server listens on all interfaces, and here
# "all" is only lo. The command gets FACETOOL_TEST_MILVUS=milvus://127.0.0.1:PORT.
#   MILVUS_SERVER_PATH=/dir/with/milvus/package .ci/milvus-netns.sh python -m pytest tests/...
# Exits 77 (with the reason on stderr) when the namespace cannot be made or the server not started.
set -u
PY=${PYTHON:-python}
if ! unshare -n true 2>/dev/null; then
    echo "milvus-netns: cannot make a network namespace (unshare -n needs root or user namespaces): skipped" >&2
    exit 77
fi
export MILVUS_NETNS_SERVER="$(cd "$(dirname "$0")" && pwd)/milvus_server.py"
exec unshare -n bash -c '
    set -u
    ip link set lo up || { echo "milvus-netns: cannot bring lo up: skipped" >&2; exit 77; }
    dir=$(mktemp -d /tmp/milvus-server-XXXXXX)
    PYTHONPATH=${MILVUS_SERVER_PATH:-}${MILVUS_SERVER_PATH:+:}${PYTHONPATH:-} \
        "$0" "$MILVUS_NETNS_SERVER" "$dir/data" "$dir/ready" \
        >"$dir/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        [ -s "$dir/ready" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.5
    done
    if [ ! -s "$dir/ready" ]; then
        echo "milvus-netns: the Milvus server did not start (log: $dir/server.log): skipped" >&2
        kill $pid 2>/dev/null; wait $pid 2>/dev/null; exit 77
    fi
    export FACETOOL_TEST_MILVUS=$(cat "$dir/ready")
    echo "milvus-netns: server pid $pid at $FACETOOL_TEST_MILVUS" >&2
    "$@"; rc=$?
    kill -TERM $pid; wait $pid
    rm -rf "$dir"
    exit $rc
' "$PY" "$@"
