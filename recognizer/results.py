"""What identifying and enrolling return: typed results with `to_dict()` for JSON (below `Recognizer`, so the
features that read results need not import it)."""
from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from recognizer.drawing import draw_faces
from recognizer.image import ImageSource
from recognizer.quality import FaceQuality, LOW_QUALITY

__all__ = ["EnrollReport", "FaceIdentity", "FileOutcome", "PhotoIdentification"]


@dataclass
class FaceIdentity:
    box: list[float]
    detection_score: float
    name: str | None  # None: unknown
    # The two numbers of a face (README, "What the numbers mean"): `similarity`, the cosine to the closest
    # enrolled face of `name`, or of the nearest person when unknown, is what labels show; `score`, the
    # decision's share for `name` (vote share, or the classifier-and-vote combination), exists only for a name.
    score: float | None
    similarity: float
    knn: dict = field(default_factory=dict)
    classifier: dict | None = None
    quality: FaceQuality | None = None  # None: not assessed

    @property
    def unknown_reason(self) -> str | None:
        """Why the face has no name: "low quality" (under the floor: never named) or "stranger"; None when named."""
        if self.name is not None:
            return None
        return LOW_QUALITY if self.quality is not None and self.quality.low else "stranger"

    def to_dict(self) -> dict:
        out = {"box": [round(v, 1) for v in self.box], "detection_score": round(self.detection_score, 4),
               "name": self.name, "score": None if self.score is None else round(self.score, 4),
               "similarity": round(self.similarity, 4),
               "knn": self.knn}
        if self.classifier is not None:
            out["classifier"] = self.classifier
        if self.quality is not None:
            out["quality"] = self.quality.to_dict()
        if self.name is None:
            out["unknown"] = self.unknown_reason
        return out


@dataclass
class PhotoIdentification:
    photo: str
    faces: list[FaceIdentity] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    error: str | None = None

    def annotated(self, image: ImageSource | None = None) -> Image.Image:
        """The photo (or `image`, the same photo decoded) with boxes and names drawn (known green, unknown red)."""
        return draw_faces(self.photo if image is None else image, self.faces)

    def to_dict(self) -> dict:
        out = {"photo": self.photo, "faces": [f.to_dict() for f in self.faces]}
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class FileOutcome:
    file: str
    status: str  # added | no face | several faces | low quality | unreadable | duplicate
    detail: str = ""

    def to_dict(self) -> dict:
        return {"file": self.file, "status": self.status, "detail": self.detail}


@dataclass
class EnrollReport:
    name: str
    files: list[FileOutcome] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(1 for f in self.files if f.status in ("added", "several faces"))

    @property
    def skipped(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status not in ("added", "several faces")]

    @property
    def failed(self) -> bool:
        """No face was enrolled and some photo was skipped for more than being enrolled already (no face, unreadable):
        the CLI exits non-zero and the server answers 422, naming each file and why."""
        return self.added == 0 and (not self.files or any(f.status != "duplicate" for f in self.files))

    def why_not(self) -> str:
        """One line naming each skipped file and why."""
        return f"{self.name}: no face enrolled: " + ("; ".join(
            f"{f.file} ({f.status}{': ' + f.detail if f.detail else ''})" for f in self.skipped) or "no image files")

    def to_dict(self) -> dict:
        return {"name": self.name, "added": self.added, "failed": self.failed,
                "skipped": [{"file": f.file, "reason": f.status + (f": {f.detail}" if f.detail else "")}
                            for f in self.skipped],
                "files": [f.to_dict() for f in self.files]}
