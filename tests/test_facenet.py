"""The facenet path with random weights (VGGFace2 cannot be downloaded here): shapes, norms, reload."""
from __future__ import annotations

import numpy as np
import pytest


def test_random_weights_whole_path_gives_512d_unit_vectors(data, detector, facenet_random):
    from recognizer.pipeline import FacePipeline

    assert "random" in facenet_random.model_id
    res = FacePipeline(detector, facenet_random).analyze(
        data / "face_recognition-examples/group/barack_obama+joe_biden__two_people.jpg"
    )
    assert res.crops.shape == (2, 160, 160, 3)
    assert res.embeddings.shape == (2, 512) and res.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(res.embeddings, axis=1), 1.0, atol=1e-5)
    # Batching does not change the answer.
    one_by_one = np.concatenate([facenet_random.embed(res.crops[i : i + 1]) for i in range(2)])
    np.testing.assert_array_equal(one_by_one, res.embeddings)


def test_state_dict_file_loads_back_to_identical_outputs(data, detector, facenet_random, tmp_path):
    import torch

    from recognizer.embedding.backbones import FacenetEmbedder

    path = tmp_path / "weights.pt"
    torch.save(facenet_random.module.state_dict(), path)
    loaded = FacenetEmbedder(str(path), batch_size=8)
    crops = np.stack(
        [facenet_random.crop(*pair) for pair in _faces(data, detector, "facenet-pytorch-test-images/people/angelina_jolie/1.jpg")]
    )
    np.testing.assert_array_equal(facenet_random.embed(crops), loaded.embed(crops))
    assert loaded.model_id != facenet_random.model_id  # a file is named by its checksum, not "random"
    assert loaded.model_id.startswith("facenet-")


def _faces(data, detector, rel):
    from recognizer.image import load_image

    img = load_image(data / rel)
    return [(img, f) for f in detector.detect(img)]


def test_crop_is_standardised_for_facenet():
    from recognizer.embedding.backbones import FacenetEmbedder

    crops = np.full((1, 160, 160, 3), 255, np.uint8)
    t = FacenetEmbedder.standardize(crops)
    assert tuple(t.shape) == (1, 3, 160, 160)
    assert float(t.max()) == pytest.approx((255 - 127.5) / 128)
