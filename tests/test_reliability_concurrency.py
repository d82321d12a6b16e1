"""Two enroll.py processes writing one model directory at once, and identify.py reading it meanwhile.

Both writers start before the model exists, so they also race to create it.
"""
from __future__ import annotations

import time

from reliability_util import bounded, check_reported, json_reports

RUNS_PER_WRITER = 3


def test_two_writers_and_a_reader(tmp_path, forkserver, folders, fast_open):
    model = tmp_path / "shared model"
    writers = {}
    for w in "ab":
        runs = [["--model", model, "--backbone", "sface", "--name", f"{w}{i}", folders[(i + (w == "b")) % 5], "--json"]
                for i in range(RUNS_PER_WRITER)]
        writers[w] = (forkserver.start("enroll", runs, tmp_path / f"writer-{w}.out"), tmp_path / f"writer-{w}.out")
    stop = tmp_path / "stop"
    with bounded("waiting for a writer to create the model", seconds=120):
        while not (model / "model.json").exists():
            time.sleep(0.01)
    photo = folders[1] / "examples__biden.jpg"
    reader = forkserver.start("identify", [["--model", model, photo, "--json"]], tmp_path / "reader.out", until=stop)
    codes = {w: forkserver.wait(pid) for w, (pid, _) in writers.items()}
    stop.touch()
    reader_code = forkserver.wait(reader)
    errors = {w: out.with_name(out.name + ".err").read_text() for w, (_, out) in writers.items()}
    assert codes == {"a": 0, "b": 0}, errors
    reports = {r["name"]: r for _, out in writers.values() for r in json_reports(out.read_text())}
    assert sorted(reports) == sorted(f"{w}{i}" for w in "ab" for i in range(RUNS_PER_WRITER))
    assert all(r["added"] >= 1 for r in reports.values())
    people = check_reported(model, reports)
    assert people == set(reports)
    # The reader ran while the writers wrote; every run read a whole gallery and named the face
    # or called it unknown.
    err = (tmp_path / "reader.out.err").read_text()
    results = json_reports((tmp_path / "reader.out").read_text())
    runs = int(err.split("runs ")[-1].split()[0])
    assert "UNEXPECTED" not in err and "Traceback" not in err, err
    assert reader_code == 0 and len(results) == runs, err
    assert runs >= 2, f"the reader read the model only {runs} times"
    for (res,) in results:
        assert res["photo"] == str(photo) and "error" not in res and len(res["faces"]) >= 1
        assert all(f["name"] in people | {None} for f in res["faces"])
    print(f"\nconcurrency: 2 writers, {len(reports)} enrolments, 0 lost; reader ran {runs} times, "
          "every read whole")
