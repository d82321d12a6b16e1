"""Finding faces: MTCNN detection, and the face crops each backbone takes.

`mtcnn` (the detector), `networks` (its three networks on ONNX Runtime), `boxes` (its box
arithmetic), `alignment` (the facenet crop and the ArcFace-aligned crop).
"""
