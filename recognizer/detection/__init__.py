"""Finding faces: `mtcnn` (the detector), `networks` (its networks on ONNX Runtime), `boxes` (`Face`, the one IoU,
MTCNN's box arithmetic), `alignment` (the backbones' crops). Nothing here imports anything above it."""

__all__: list[str] = []
