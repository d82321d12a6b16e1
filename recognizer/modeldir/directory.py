"""`ModelDir`: one model directory, as every part of the project sees it: its paths (file names
are in `layout`), its model.json (`config`), its writer lock (`lock`)."""
from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from gallery.chip_store import ChipStore
from recognizer.modeldir.config import ModelConfig, config_stamp, load_config, save_config
from recognizer.modeldir.layout import (CANDIDATE_FILE, CANDIDATE_REPORT, CHIPS_DIR, GALLERY_DIR, GALLERY_NAME,
                                        OTHER_CHIPS_DIR, REPORT_FILE, RUNS_DIR, SPLIT_FILE, VERSIONS_DIR, chip_store)
from recognizer.modeldir.lock import writer_lock

__all__ = ["ModelDir"]


@dataclass(frozen=True)
class ModelDir:
    """One model directory's paths: every part of the project that needs one of its files asks here."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    def __fspath__(self) -> str:
        return str(self.root)

    report = property(lambda self: self.root / REPORT_FILE)
    candidate_report = property(lambda self: self.root / CANDIDATE_REPORT)
    candidate_file = property(lambda self: self.root / CANDIDATE_FILE)
    split = property(lambda self: self.root / SPLIT_FILE)
    versions = property(lambda self: self.root / VERSIONS_DIR)
    runs = property(lambda self: self.root / RUNS_DIR)
    chips_root = property(lambda self: self.root / CHIPS_DIR)
    other_chips_root = property(lambda self: self.root / OTHER_CHIPS_DIR)

    def config(self) -> ModelConfig:  # checked: ModelError naming what is wrong
        return load_config(self.root)

    def save_config(self, cfg: ModelConfig) -> None:  # atomically, under the writer lock
        save_config(self.root, cfg)

    def stamp(self) -> tuple[int, int, int] | None:
        return config_stamp(self.root)

    def writer_lock(self, timeout: float | None = None) -> AbstractContextManager[None]:
        return writer_lock(self.root) if timeout is None else writer_lock(self.root, timeout)

    def gallery(self, name: str = GALLERY_DIR) -> Path:
        return self.root / name

    def chips(self, gallery_uri: str | None = None) -> ChipStore:
        """The chip store of the model's own galleries, or of the Milvus gallery `gallery_uri`."""
        return chip_store(self.root, gallery_uri)

    def chip_stores(self) -> list[ChipStore]:
        """Every chip store here: the own galleries' and each shared gallery's (gallery-chips/<key>/)."""
        others = sorted(p for p in self.other_chips_root.iterdir() if p.is_dir()) if self.other_chips_root.is_dir() else []
        return [ChipStore(self.chips_root), *(ChipStore(p) for p in others)]

    def gallery_dirs(self, but: str | None = None) -> list[Path]:
        """Every gallery directory here (a finetune's or switch's leftovers included) but `but`."""
        if not self.root.is_dir():
            return []
        return [p for p in sorted(self.root.iterdir())
                if p.name != but and p.is_dir()
                and (GALLERY_NAME.fullmatch(p.name) or p.name in (f"{GALLERY_DIR}.new", f"{GALLERY_DIR}.old"))]
