"""Face recognition: detect, embed, finetune, combine classifier and kNN.

Nothing heavy is imported here: models load when a class is constructed, never at import.
"""
from recognizer.errors import FaceToolError, GalleryError, ImageError, ModelError, WeightsError

__all__ = ["FaceToolError", "GalleryError", "ImageError", "ModelError", "WeightsError"]
__version__ = "0.1.0"
