"""finetune.py and enroll.py on one model at once, with random SIGKILLs of either.

Every enrolment reported done is in the model afterwards (whichever gallery is current), every
removal reported done stays done, and the model always loads.

FINETUNE_RACE_TRIALS=20 pytest tests/test_reliability_finetune.py   # or benchmarks/crash_trials.py
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from pathlib import Path

from reliability_util import check_reported, json_reports

TRIALS = int(os.environ.get("FINETUNE_RACE_TRIALS", "3"))
KILL_WINDOW_S = float(os.environ.get("CRASH_KILL_WINDOW_S", "5.0"))
CELEB = "5-celebrity-faces"


def small_train_dir(root: Path, data: Path) -> Path:
    for person in ("elton_john", "jerry_seinfeld"):
        (root / "train" / person).mkdir(parents=True)
        for p in sorted((data / CELEB / "train" / person).iterdir())[:4]:
            (root / "train" / person / p.name).symlink_to(p)
    return root


def test_enrolments_and_removals_during_killed_finetunes(tmp_path, data, forkserver, folders, fast_open):
    from recognizer.recognizer import Recognizer
    from recognizer.training.versions import kept_checkpoints

    rnd = random.Random(int(os.environ.get("CRASH_SEED", "20261202")))
    train = small_train_dir(tmp_path / "train", data)
    model = tmp_path / "model"
    Recognizer.open(model, backbone="sface", create=True).gallery.close()
    reported: dict[str, dict] = {}
    removed: set[str] = set()
    in_flight: set[str] = set()  # an enrolment a kill interrupted may or may not have landed
    kills = {"finetune": 0, "enroll": 0}
    finetunes_done = 0
    for trial in range(TRIALS):
        ft_out, en_out = tmp_path / f"ft-{trial}.out", tmp_path / f"en-{trial}.out"
        ft = forkserver.start("finetune", [[train, "--model", model, "--backbone", "sface", "--epochs", "3", "-q",
                                            "--json"]], ft_out)
        runs = [["--model", model, "--name", f"p{trial}-{i}", folders[(trial + i) % 5], "--json"] for i in range(6)]
        victims = sorted(set(reported) - removed)[:1]
        runs[3:3] = [["--model", model, "--remove", v, "--json"] for v in victims]
        en = forkserver.start("enroll", runs, en_out)
        victim = (None, "enroll", "finetune")[trial % 3]  # each case in every run; when, at random
        if victim:
            time.sleep(rnd.uniform(0.5, KILL_WINDOW_S))
            # The victim may have finished (and been reaped) before its moment came: then nothing is
            # killed, and it must have exited 0 like an unkilled run (checked below).
            with contextlib.suppress(ProcessLookupError):
                os.kill(ft if victim == "finetune" else en, signal.SIGKILL)
        codes = {"finetune": forkserver.wait(ft), "enroll": forkserver.wait(en)}
        for tool, code in codes.items():
            out = ft_out if tool == "finetune" else en_out
            err = out.with_name(out.name + ".err").read_text()
            assert code == 0 or code == -signal.SIGKILL and victim == tool, f"{tool}: {code}\n{err}"
            kills[tool] += code == -signal.SIGKILL
        finetunes_done += codes["finetune"] == 0
        for r in json_reports(en_out.read_text()):
            if "removed" in r:
                removed.add(r["removed"])
                reported.pop(r["removed"], None)
            elif "name" in r:
                reported[r["name"]] = r
        if codes["enroll"] != 0:  # killed: its next enrolment or removal may have landed unreported
            in_flight |= {f"p{trial}-{i}" for i in range(6)} - set(reported)
            for v in set(victims) - removed:
                reported.pop(v, None)
                in_flight.add(v)
        people = check_reported(model, reported)  # the model loads and holds every reported enrolment
        assert not people & removed, people & removed
        assert people <= set(reported) | in_flight | {"elton_john", "jerry_seinfeld"}
        cfg = json.loads((model / "model.json").read_text())
        leftovers = [p.name for p in model.iterdir() if p.name.startswith(("gallery", "checkpoint"))
                     and p.name not in {cfg["gallery"], cfg["checkpoint"], *kept_checkpoints(model)}]
        assert codes["finetune"] != 0 or not leftovers, leftovers
    print(f"\nconcurrency: finetune races: {TRIALS} trials ({finetunes_done} finetunes finished, {kills['finetune']} "
          f"finetunes and {kills['enroll']} enrollers killed), {len(reported)} enrolments and {len(removed)} removals "
          "reported, 0 lost, 0 removed people back; every model loaded")
    assert finetunes_done, "no finetune finished: raise CRASH_KILL_WINDOW_S"
