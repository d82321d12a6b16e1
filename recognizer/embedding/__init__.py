"""Turning a face crop into a unit vector: the facenet and SFace backbones (`backbones`), their
weights (`weights`) and SFace rewritten for ONNX Runtime (`sface_onnx`)."""

__all__: list[str] = []
