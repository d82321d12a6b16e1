"""Where the sample photos live: `../shared/data` beside the checkout unless FACES_DATA says otherwise."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("FACES_DATA") or PROJECT_ROOT.parent / "shared" / "data").expanduser()
