"""Following faces from one sampled frame to the next, and naming each track by a vote.

A detection joins a live track when its box overlaps the track's last box and its face does not
look like someone else, or, without overlap (a fast move, missed frames), when its face alone is
as close to the track's as the model requires to call two faces the same person. A track lives on
through `max_gap` seconds without a face (a turned head, a missed detection).

The name belongs to the track, not to the frame: every face votes for the model's decision on it.
A named face weighs its similarity to that person; an unknown face weighs the threshold it fell
under, at least what it could have scored. The track takes the heaviest name when it outweighs
the unknown vote: a stranger who passes the threshold now and then by chance stays unknown, and a
known person whose face is sometimes too blurred to pass keeps their name on every frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from recognizer.detection.boxes import iou_matrix

__all__ = ["MAX_THUMBS", "Observation", "Track", "Tracker", "TrackerSettings", "colour_signature", "is_cut", "vote"]

# Aligned crops kept per track for contact sheets, spread over the track's length.
MAX_THUMBS = 12


@dataclass
class Observation:
    """One face in one sampled frame, with the model's decision on it alone."""

    frame: int
    time: float
    box: np.ndarray  # float32 (4,): x1, y1, x2, y2
    detection_score: float
    embedding: np.ndarray  # unit vector
    name: str | None  # the per-face decision (None: unknown)
    similarity: float  # to the closest enrolled face of `name` (of the best guess when unknown)
    crop: np.ndarray | None = None  # the aligned face crop, kept for a few faces per track

    def to_dict(self) -> dict:
        return {"frame": self.frame, "time": round(self.time, 3), "box": [round(float(v), 1) for v in self.box],
                "detection_score": round(float(self.detection_score), 4), "similarity": round(float(self.similarity), 4)}


@dataclass
class Track:
    id: int
    faces: list[Observation] = field(default_factory=list)
    name: str | None = None
    score: float = 0.0  # the winner's share of the vote, in [0, 1]
    similarity: float = 0.0  # mean similarity of the faces that voted for the winner

    @property
    def first(self) -> Observation:
        return self.faces[0]

    @property
    def last(self) -> Observation:
        return self.faces[-1]

    def add(self, obs: Observation) -> None:
        self.faces.append(obs)
        kept = [f for f in self.faces if f.crop is not None]
        if len(kept) > 2 * MAX_THUMBS:
            for f in kept[1::2]:  # thin out evenly: every other one goes
                f.crop = None

    def thumbnails(self, n: int = MAX_THUMBS) -> list[np.ndarray]:
        kept = [f.crop for f in self.faces if f.crop is not None]
        if len(kept) <= n:
            return kept
        return [kept[round(i * (len(kept) - 1) / (n - 1))] for i in range(n)] if n > 1 else kept[:1]

    def to_dict(self) -> dict:
        return {"track": self.id, "name": self.name, "score": round(self.score, 4) if self.name else None,
                "similarity": round(self.similarity, 4), "first_frame": self.first.frame,
                "last_frame": self.last.frame, "first_time": round(self.first.time, 3),
                "last_time": round(self.last.time, 3), "faces": [f.to_dict() for f in self.faces]}


@dataclass(frozen=True)
class TrackerSettings:
    """How detections are linked. Similarities are multiples of the model's threshold, so the rules
    mean the same for every backbone (1.0: "the model would call these two faces the same person")."""

    max_gap: float = 1.0  # seconds a track waits for its face before it ends
    min_iou: float = 0.2  # box overlap that links on position
    # x threshold. On the Hamilton clip (sface, 5 samples/s) one person's faces in successive
    # samples were 0.62-0.98 alike, two people's up to 0.44 (neighbours in the audience) and a
    # face replaced by another at the same place across a cut 0.28: an overlapping face must
    # pass the threshold, a face elsewhere must be clearly the same.
    overlap_similarity: float = 1.0
    appearance_similarity: float = 1.25
    memory: int = 5  # a track's look: the mean of its last few faces
    # Shot cuts end every track: a new shot is new footage even where a face sits at the same
    # place. Colour histograms of successive samples correlate at 0.92-1.0 within a shot of the
    # clip, 0.42-0.57 across its cuts.
    cut_correlation: float = 0.7

    def __post_init__(self) -> None:
        if not (self.max_gap >= 0 and 0 <= self.min_iou <= 1 and self.memory >= 1):
            raise ValueError(f"bad tracker settings: {self}")


class Tracker:
    """Links the faces of successive sampled frames into tracks (call `update` per frame, in order)."""

    def __init__(self, threshold: float, settings: TrackerSettings = TrackerSettings(), interval: float = 0.0) -> None:
        """`interval`: seconds between samples; a track always outlives two missed samples, however sparse."""
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
            raise ValueError(f"threshold {threshold!r}: must be a finite cosine similarity")
        self.threshold = float(threshold)
        self.settings = settings
        self.max_gap = max(settings.max_gap, 3 * interval)
        self.live: list[Track] = []
        self.done: list[Track] = []
        self._next_id = 1

    def _look(self, track: Track) -> np.ndarray:
        recent = np.stack([f.embedding for f in track.faces[-self.settings.memory :]])
        v = recent.mean(axis=0)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def update(self, time: float, faces: Sequence[Observation], *, cut: bool = False) -> None:
        """Add one sampled frame's faces; `cut`: the frame starts a new shot."""
        s = self.settings
        still = []
        for t in self.live:
            (still if not cut and time - t.last.time <= self.max_gap + 1e-9 else self.done).append(t)
        self.live = still
        pairs: list[tuple[float, int, int]] = []
        if self.live and faces:
            iou = iou_matrix(np.stack([t.last.box for t in self.live]), np.stack([f.box for f in faces]))
            sim = np.stack([self._look(t) for t in self.live]) @ np.stack([f.embedding for f in faces]).T
            for i in range(len(self.live)):
                for j in range(len(faces)):
                    by_place = iou[i, j] >= s.min_iou and sim[i, j] >= s.overlap_similarity * self.threshold
                    by_look = sim[i, j] >= s.appearance_similarity * self.threshold
                    if by_place or by_look:
                        pairs.append((float(iou[i, j] + sim[i, j]), i, j))
        # Greedy, best pair first: with a handful of faces per frame it picks what an optimal
        # assignment would, and ties resolve the same way on every run.
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        used_t, used_f = set(), set()
        for _, i, j in pairs:
            if i not in used_t and j not in used_f:
                used_t.add(i)
                used_f.add(j)
                self.live[i].add(faces[j])
        for j, f in enumerate(faces):
            if j not in used_f:
                t = Track(self._next_id)
                self._next_id += 1
                t.add(f)
                self.live.append(t)

    def finish(self) -> list[Track]:
        """Every track, named by its vote, in order of first appearance."""
        tracks = sorted(self.done + self.live, key=lambda t: t.id)
        self.live, self.done = [], []
        for t in tracks:
            t.name, t.score, t.similarity = vote(t.faces, self.threshold)
        return tracks


def colour_signature(image) -> np.ndarray:
    """A small hue-saturation histogram of a frame (a PIL image or RGB array), for `is_cut`."""
    import cv2  # OpenCV is heavy and only needed once a video is read

    arr = np.asarray(image)
    small = cv2.resize(arr, (160, max(1, round(160 * arr.shape[0] / max(arr.shape[1], 1)))), interpolation=cv2.INTER_AREA)
    hist = cv2.calcHist([cv2.cvtColor(small, cv2.COLOR_RGB2HSV)], [0, 1], None, [16, 16], [0, 180, 0, 256])
    return cv2.normalize(hist, hist).ravel()


def is_cut(before: np.ndarray | None, after: np.ndarray, settings: TrackerSettings = TrackerSettings()) -> bool:
    """Whether two successive samples' `colour_signature`s belong to different shots."""
    if before is None:
        return False
    a, b = before - before.mean(), after - after.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    corr = float((a * b).sum()) / denom if denom > 0 else 1.0
    return corr < settings.cut_correlation


def vote(faces: Sequence[Observation], threshold: float) -> tuple[str | None, float, float]:
    """(name or None, the winner's share of the vote, mean similarity of its voters); see the module docstring."""
    if not faces:
        return None, 0.0, 0.0
    weight: dict[str | None, float] = {}
    for f in faces:
        w = max(float(f.similarity), 0.0) if f.name is not None else max(threshold, 0.0)
        weight[f.name] = weight.get(f.name, 0.0) + w
    total = sum(weight.values())
    unknown = weight.pop(None, 0.0)
    named = sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))
    if named and named[0][1] > unknown:
        name = named[0][0]
        voters = [f.similarity for f in faces if f.name == name]
        return name, named[0][1] / total if total > 0 else 0.0, float(np.mean(voters))
    return None, unknown / total if total > 0 else 0.0, float(np.mean([f.similarity for f in faces]))
