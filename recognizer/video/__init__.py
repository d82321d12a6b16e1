"""Faces in videos: follow each face through the frames and name the track, not the frame.

`identify_video` (recognizer.video.analysis) runs a video file or a camera through an opened
Recognizer; `recognizer.video.render` draws the result. Importing this package loads no model
and no OpenCV.

The modules import one way: analysis -> render -> reader, tracking (render draws any
`render.TrackedVideo`, so it needs nothing of the analysis above it).
"""

__all__: list[str] = []  # the modules are imported by name: recognizer.video.analysis, .reader, ...
