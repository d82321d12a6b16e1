"""Face recognition: detect, embed, finetune, combine classifier and kNN.

Nothing heavy is imported here: models load when a class is constructed, never at import.
"""
import os

# torch's OpenMP threads spin while they wait for work by default. When other processes share
# the cores, a spinning thread holds a core the thread it waits for needs: MTCNN on a 640x480
# photo took 2.4-10 s spinning against 1.3 s waiting passively (2 threads, load 6 on 2 cores).
# Passive waiting costs microseconds per parallel region.
# It is read once, when torch loads its OpenMP runtime, so it must be set before torch is
# imported; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from recognizer.errors import FaceToolError, GalleryError, ImageError, ModelError, WeightsError

__all__ = ["FaceToolError", "GalleryError", "ImageError", "ModelError", "WeightsError"]
__version__ = "0.1.0"
