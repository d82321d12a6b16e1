"""finetune.py on 5-celebrity-faces: what trains, what stays frozen, reload, accuracy, later enrolment.

facenet runs with random weights (VGGFace2 cannot be downloaded here) and few epochs; sface is
the pretrained backbone whose accuracy is checked. Both share the crop and trunk caches under
FACETOOL_CACHE, so a second test session skips detection and the frozen trunk.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from recognizer.cli import finetune as finetune_cli

ROOT = Path(__file__).resolve().parent.parent
FR = "face_recognition-examples"


@pytest.fixture(scope="module")
def facenet_model(tmp_path_factory, data):
    from recognizer.training.run import FinetuneOptions, finetune
    from recognizer.network.loop import TrainSettings

    d = tmp_path_factory.mktemp("ft-facenet") / "model"
    opts = FinetuneOptions(backbone="facenet", weights="random", settings=TrainSettings(epochs=12, patience=100, seed=3))
    return d, finetune(data / "5-celebrity-faces", d, opts)


@pytest.fixture(scope="module")
def sface_model(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("ft-sface") / "model"
    res = CliRunner().invoke(finetune_cli.main, [str(data / "5-celebrity-faces"), "--model", str(d), "--backbone", "sface",
                                                 "--epochs", "20", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return d, json.loads(res.output)


def test_random_facenet_training_loss_falls_well_below_chance(facenet_model):
    _, report = facenet_model
    losses = [e["train_loss"] for e in report.training["history"]]
    assert len(losses) == 12
    assert losses[0] > 0.8 * math.log(5)
    assert min(losses) < 0.5 * math.log(5), losses


def test_only_unfrozen_blocks_change_and_frozen_ones_are_bit_identical(facenet_model):
    import torch

    from recognizer.network.checkpoint import load_finetuned
    from recognizer.embedding.backbones import FacenetEmbedder
    from recognizer.modeldir.config import load_config

    d, _ = facenet_model
    cfg = load_config(d)
    tuned, _ = load_finetuned(d, cfg)
    base = FacenetEmbedder("random", seed=3).module.state_dict()
    after = tuned.module.state_dict()
    unfrozen = ("block8.", "last_linear.", "last_bn.")
    changed = {k for k in base if not torch.equal(base[k], after[k])}
    assert changed, "training changed nothing"
    assert all(k.startswith(unfrozen) for k in changed), sorted(changed)[:5]
    assert any(k.startswith("block8.") for k in changed) and "last_linear.weight" in changed
    # Every frozen tensor, BatchNorm statistics included, is exactly the base network's.
    frozen = [k for k in base if not k.startswith(unfrozen)]
    assert len(frozen) > 300 and all(torch.equal(base[k], after[k]) for k in frozen)


def test_checkpoint_is_safe_to_load_and_named_by_its_hash(facenet_model):
    import torch

    from recognizer.modeldir.config import load_config
    from facecore.atomic import sha256_file

    d, report = facenet_model
    cfg = load_config(d)
    # finetune.py writes checkpoint-<token>.pt and gallery-<token>, then switches model.json to them.
    assert re.fullmatch(r"checkpoint-[0-9a-f]{12}\.pt", cfg.checkpoint) and cfg.gallery == "gallery-" + cfg.checkpoint[11:23]
    ckpt = torch.load(d / cfg.checkpoint, weights_only=True)
    assert ckpt["classes"] == report.classes == ["ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling"]
    assert ckpt["unfreeze"] == ["block8", "last_linear", "last_bn"]
    assert cfg.model_id == f"facenet-random-seed3-ft{sha256_file(d / cfg.checkpoint)[:12]}" == report.model_id
    assert (d / "curves_loss.png").stat().st_size > 1000 and (d / "curves_accuracy.png").stat().st_size > 1000
    assert set(json.loads((d / "report.json").read_text())) >= {"classifier", "knn", "combined"}


# Same thread count as this process (see one_thread): a different one changes float summation order.
RELOAD = """
import sys, numpy as np, torch
torch.set_num_threads(1)
from recognizer.recognizer import Recognizer
rec = Recognizer.open(sys.argv[1])
emb = rec.embedder.embed(np.load(sys.argv[2]))
np.save(sys.argv[3], rec.classifier.decision_function(emb))
"""


def test_checkpoint_reloads_in_a_new_process_to_identical_logits(facenet_model, data, tmp_path):
    from recognizer.recognizer import Recognizer

    d, _ = facenet_model
    rec = Recognizer.open(d)
    res = rec.pipeline.detect_and_crop(data / FR / "group/barack_obama+joe_biden__two_people.jpg")
    np.save(tmp_path / "crops.npy", res.crops)
    here = rec.classifier.decision_function(rec.embedder.embed(res.crops))
    subprocess.run([sys.executable, "-c", RELOAD, str(d), str(tmp_path / "crops.npy"), str(tmp_path / "logits.npy")],
                   check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy", allow_pickle=False), here)
    assert here.shape == (2, 5)


def test_finetuned_models_get_an_fpir_table_for_their_own_embeddings(facenet_model, sface_model):
    for d, rep in ((facenet_model[0], facenet_model[1].to_dict()), sface_model):
        cfg = json.loads((d / "model.json").read_text())
        assert rep["fpir_table"]["calibrated"] and cfg["fpir_table"] and cfg["target_fpir"] == 0.01
        table = json.loads((d / cfg["fpir_table"]).read_text())
        assert table["model_id"] == cfg["model_id"] == rep["model_id"]
    # facenet's finetuned network makes new embeddings: calibrated on the cohort (the suite's small one);
    # sface's finetuning trains the head alone, so the base model's shipped table is the right one.
    assert "cohort" in facenet_model[1].fpir["how"]
    assert "shipped table" in sface_model[1]["fpir_table"]["how"]


def test_sface_classifier_knn_and_combined_reach_096_on_val(sface_model):
    d, out = sface_model
    acc = {k: out[k]["accuracy"] for k in ("classifier", "knn", "combined")}
    print(f"sface finetune, 5-celebrity-faces val: {acc}")
    assert out["n"] == 25
    assert min(acc.values()) >= 0.96, acc
    assert acc["combined"] >= max(acc["classifier"], acc["knn"])
    assert out["training"]["unfreeze"] == []


def test_person_enrolled_after_finetuning_is_identified_and_kept_by_a_rerun(sface_model, data):
    from recognizer.recognizer import Recognizer

    d, _ = sface_model
    obama = sorted((data / FR / "people/barack_obama").iterdir())
    rec = Recognizer.open(d)
    assert rec.classifier is not None and "barack_obama" not in rec.classifier.classes_
    assert rec.enroll("barack_obama", obama[:-1]).added >= 1
    face = rec.identify(obama[-1]).faces[0]
    assert face.name == "barack_obama", face.to_dict()
    assert set(face.to_dict()["classifier"]) == {"name", "probability"}
    assert face.to_dict()["classifier"]["name"] != "barack_obama"  # the classifier has never seen him
    # A known person is still named, by both deciders.
    madonna = rec.identify(next(iter(sorted((data / "5-celebrity-faces/val/madonna").iterdir())))).faces[0]
    assert madonna.name == "madonna" and madonna.classifier["name"] == "madonna"
    rec.gallery.close()

    # Finetuning again rebuilds the gallery and re-embeds the faces enrolled since.
    res = CliRunner().invoke(finetune_cli.main, [str(data / "5-celebrity-faces"), "--model", str(d), "--backbone", "sface",
                                                 "--epochs", "3", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    gallery = json.loads(res.output)["gallery"]
    assert gallery["people"].get("barack_obama") == len(obama) - 1 and gallery["reembedded_enrolled"] == len(obama) - 1
    rec = Recognizer.open(d)
    assert rec.identify(obama[-1]).faces[0].name == "barack_obama"


def test_run_is_repeatable_with_a_seed(data, tmp_path):
    """Same seed, same cached features: the same curves and the same head, bit for bit."""
    from recognizer.training.run import FinetuneOptions, finetune
    from recognizer.network.loop import TrainSettings

    runs = []
    for i in range(2):
        opts = FinetuneOptions(backbone="sface", settings=TrainSettings(epochs=3, seed=7))
        runs.append(finetune(data / "5-celebrity-faces", tmp_path / f"m{i}", opts))
    h0, h1 = ([e["train_loss"] for e in r.training["history"]] for r in runs)
    assert h0 == h1
    assert runs[0].model_id.split("-ft")[0] == runs[1].model_id.split("-ft")[0]


def test_split_is_stratified_saved_and_reused_without_val(data, tmp_path):
    from recognizer.modeldir.layout import SPLIT_FILE
    from recognizer.training.dataset import load_split

    src = data / "5-celebrity-faces/train"
    for person in ("madonna", "elton_john", "ben_afflek"):
        (tmp_path / "d/train" / person).mkdir(parents=True)
        for f in sorted((src / person).iterdir())[:10]:
            (tmp_path / "d/train" / person / f.name).symlink_to(f)
    split = load_split(tmp_path / "d", tmp_path / "m", seed=1)
    assert split.source == "held-out" and len(split.train) + len(split.val) == 30
    assert sorted(set(split.val.labels)) == ["ben_afflek", "elton_john", "madonna"]
    assert all(split.val.labels.count(p) == 2 for p in set(split.val.labels))
    assert not set(split.train.paths) & set(split.val.paths)
    saved = json.loads((tmp_path / "m" / SPLIT_FILE).read_text())
    assert saved["val"]["paths"] == split.val.paths
    assert load_split(tmp_path / "d", tmp_path / "m", seed=99).val.paths == split.val.paths  # reused, not redrawn


def test_trunk_cache_matches_recomputation_and_is_keyed_by_weights(data, detector, tmp_path):
    from recognizer.embedding.backbones import FacenetEmbedder
    from recognizer.image import load_image
    from recognizer.network.trunk import N_VIEWS, SplitNet, TrunkCache

    img = load_image(data / FR / "group/barack_obama+joe_biden__two_people.jpg")
    emb = FacenetEmbedder("random", seed=0)
    crops = np.stack([emb.crop(img, f) for f in detector.detect(img)])
    net = SplitNet.facenet(emb)
    cold = TrunkCache(net, tmp_path)
    feats = cold.features(crops)
    assert feats.shape[:2] == (len(crops), N_VIEWS) and cold.misses == len(crops)
    np.testing.assert_array_equal(feats[:, 0], net.run_trunk(crops))
    np.testing.assert_array_equal(feats[:, 1], net.run_trunk(np.ascontiguousarray(crops[:, :, ::-1])))
    warm = TrunkCache(net, tmp_path)
    np.testing.assert_array_equal(warm.features(crops), feats)
    assert warm.hits == len(crops) and warm.misses == 0
    other = SplitNet.facenet(FacenetEmbedder("random", seed=1))
    assert other.trunk_key != net.trunk_key
    deeper = SplitNet.facenet(FacenetEmbedder("random", seed=0), ("repeat_3", "block8", "last_linear", "last_bn"))
    assert deeper.trunk_key != net.trunk_key


def test_unfreeze_option_is_validated():
    from recognizer.network.trunk import parse_unfreeze

    assert parse_unfreeze("block8,repeat_3") == ("repeat_3", "block8", "last_linear", "last_bn")
    with pytest.raises(ValueError, match="logits"):
        parse_unfreeze("logits")
    res = CliRunner().invoke(finetune_cli.main, [str(ROOT), "--model", "x", "--backbone", "sface", "--unfreeze", "block8"])
    assert res.exit_code == 2 and "facenet only" in res.output


def test_help_is_fast_and_imports_nothing_heavy():
    code = "import sys; sys.argv=['finetune.py','--help']; import finetune\ntry: finetune.main()\nexcept SystemExit: pass\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--unfreeze" in out.stdout and out.stdout.strip().endswith("False")
