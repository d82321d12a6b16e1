"""The installed distributions of a venv by size on disk (their RECORD files), largest first.

Usage: VENV/bin/python .ci/package_sizes.py [N]   (run with the venv's own python)
"""
import os
import sys
from importlib.metadata import distributions
from pathlib import Path


def size(dist) -> int:
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += os.path.getsize(p)
    return total


n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
rows = sorted(((size(d), d.metadata["Name"], d.version) for d in distributions()), reverse=True)
for b, name, ver in rows[:n]:
    print(f"{b / 2**20:8.1f} MB  {name} {ver}")
print(f"{sum(r[0] for r in rows) / 2**20:8.1f} MB  all {len(rows)} distributions")
