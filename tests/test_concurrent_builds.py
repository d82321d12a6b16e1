"""Two finetune.py runs started together on one model (issue #25, item 7): one switches the model to its build,
the other changes nothing and says why (exit non-zero, one clear line); the model is left whole: model.json
names the winner's build, report.json is the winner's, no candidate is pending and no file of the loser's build
is left (gallery-*, checkpoint-*.pt, fpir-*.json)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reliability_util import json_reports
from test_reliability_finetune import small_train_dir

TRIALS = int(os.environ.get("FINETUNE_PAIR_TRIALS", "3"))
BUILD_FILE_PREFIXES = ("gallery-", "checkpoint-", "fpir-")


def named_files(model: Path) -> set[str]:
    """The build files model.json and the kept versions name."""
    names = set()
    for p in [model / "model.json", *sorted((model / "versions").glob("v*.json"))]:
        cfg = json.loads(p.read_text())
        names |= {cfg.get("gallery"), cfg.get("checkpoint"), cfg.get("fpir_table")}
    return names - {None}


@pytest.mark.train
def test_two_finetunes_started_together_one_switches_the_other_changes_nothing(tmp_path, data, forkserver, fast_open):
    from recognizer.recognizer import Recognizer

    train = small_train_dir(tmp_path / "train", data)
    model = tmp_path / "model"
    Recognizer.open(model, backbone="sface", create=True).gallery.close()
    args = [[train, "--model", model, "--backbone", "sface", "--epochs", "3", "-q", "--json"]]
    for trial in range(TRIALS):
        outs = [tmp_path / f"ft-{trial}-{i}.out" for i in range(2)]
        pids = [forkserver.start("finetune", args, out) for out in outs]
        codes = [forkserver.wait(pid) for pid in pids]
        errs = [out.with_name(out.name + ".err").read_text() for out in outs]
        assert sorted(codes) == [0, 1], (trial, codes, errs)
        win, lose = (0, 1) if codes[0] == 0 else (1, 0)
        assert "nothing was changed by this one" in errs[lose] or "nothing was switched by this one" in errs[lose], errs[lose]
        [report] = json_reports(outs[win].read_text())
        cfg = json.loads((model / "model.json").read_text())
        assert report["switched"] and report["model_id"] == cfg["model_id"], (report, cfg)
        assert json.loads((model / "report.json").read_text())["model_id"] == cfg["model_id"]
        assert not (model / "candidate.json").exists() and not (model / "candidate-report.json").exists()
        left = {p.name for p in model.iterdir() if p.name.startswith(BUILD_FILE_PREFIXES)}
        assert left <= named_files(model), (trial, left - named_files(model))
        with Recognizer.open(model) as rec:
            assert rec.config.model_id == cfg["model_id"] and set(rec.people()) == {"elton_john", "jerry_seinfeld"}
