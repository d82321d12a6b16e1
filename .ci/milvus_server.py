"""Run the embedded Milvus server (PyPI package 'milvus') until SIGTERM, for the Milvus tests.

    python .ci/milvus_server.py DATA_DIR READY_FILE

It listens on every interface: run it only inside a loopback-only network namespace (.ci/milvus-netns.sh).
When it accepts connections it writes its milvus:// address to READY_FILE.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from milvus import MilvusServer

__all__: list[str] = []


def main(data_dir: str, ready_file: str) -> None:
    server = MilvusServer()
    server.set_base_dir(data_dir)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    server.start()
    try:
        with open(ready_file + ".tmp", "w") as f:
            f.write(f"milvus://127.0.0.1:{server.listen_port}\n")
        os.replace(ready_file + ".tmp", ready_file)
        while not stop and server.running and server.server_proc.poll() is None:
            time.sleep(0.2)
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
