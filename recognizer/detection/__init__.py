"""Finding faces: MTCNN detection, and the face crops each backbone takes.

`mtcnn` (the detector), `networks` (its three networks on ONNX Runtime), `boxes` (the `Face`
record, the one IoU and MTCNN's box arithmetic), `alignment` (the facenet crop and the
ArcFace-aligned crop). Nothing here imports `recognizer.config` or anything above it.
"""

__all__: list[str] = []
