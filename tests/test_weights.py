"""Tests for recognizer.embedding.weights against a real HTTP server on 127.0.0.1.

Nothing here touches the internet: every URL points at the local server (or a
closed local port), and the registry of known weights is monkeypatched.
"""
from __future__ import annotations

import hashlib
import http.server
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from recognizer.detection.networks import torch_threads
from recognizer.cache import weights_cache_dir
from recognizer.embedding import weights as W
from facecore.errors import WeightsError

REPO = Path(__file__).resolve().parents[1]
FILENAME = "test-net.pt"


# --------------------------------------------------------------------------- fixtures


class _Custom:
    """Not a tensor: torch.load(weights_only=True) must refuse to unpickle it."""

    def __init__(self) -> None:
        self.x = 1


@pytest.fixture(scope="session")
def sample_input() -> torch.Tensor:
    # Small (the network pools adaptively) and a single image: CPU forwards are the slow part.
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(1, 3, 80, 80, generator=gen)


@pytest.fixture(scope="session")
def good(tmp_path_factory):
    """A real InceptionResnetV1 state_dict (with a logits layer, like the published files)."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(7)
    src = InceptionResnetV1(pretrained=None, classify=True, num_classes=5)
    # Make batch-norm statistics non-trivial so a wrong load shows in the outputs.
    with torch.no_grad():
        for name, buf in src.named_buffers():
            if name.endswith("running_mean"):
                buf.uniform_(-0.1, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    state = src.state_dict()
    assert any(k.startswith("logits.") for k in state)
    path = tmp_path_factory.mktemp("files") / "good.pt"
    torch.save(state, path)
    data = path.read_bytes()
    src.classify = False  # the same network in embedding mode gives the reference outputs
    src.eval()
    return {"path": path, "bytes": data, "sha256": hashlib.sha256(data).hexdigest(), "state": state,
            "model": src}


@pytest.fixture(scope="session")
def small():
    """A small file for the tests that exercise caching, not the network weights."""
    data = b"small weights file\n" * 4096
    return {"bytes": data, "sha256": hashlib.sha256(data).hexdigest()}


@pytest.fixture(scope="session")
def reference_output(good, sample_input):
    with torch.no_grad():
        return good["model"](sample_input)


def _same_params(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits[self.path] = type(self).hits.get(self.path, 0) + 1
        if self.path == "/500":
            self.send_error(500, "boom")
            return
        if self.path in ("/truncated", "/truncated-good.pt"):
            # The server promises the whole file, sends the first quarter, then hangs up.
            whole = self.routes["/good.pt"] if self.path == "/truncated-good.pt" else b"x" * 200_000
            body = whole[: len(whole) // 4]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(whole)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path == "/slow":
            time.sleep(2.0)
            try:
                self.send_response(200)
                self.send_header("Content-Length", "1")
                self.end_headers()
                self.wfile.write(b"x")
            except OSError:
                pass
            return
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404, "not found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="session")
def server(good, small):
    _Handler.routes = {"/good.pt": good["bytes"], "/small.pt": small["bytes"], "/wrong.pt": b"not the weights you are looking for" * 100}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/good.pt"


@pytest.fixture
def registry(monkeypatch, server, good, small):
    """Replace the known-weights registry with specs pointing at the local server."""
    reg = {
        "testnet": W.WeightsSpec("testnet", f"{server}/good.pt", FILENAME, good["sha256"]),
        "small": W.WeightsSpec("small", f"{server}/small.pt", "small.pt", small["sha256"]),
        "tofu": W.WeightsSpec("tofu", f"{server}/good.pt", "tofu.pt", None),
    }
    monkeypatch.setattr(W, "KNOWN_WEIGHTS", reg)
    return reg


@pytest.fixture(autouse=True)
def _no_real_cache(monkeypatch, tmp_path):
    # Never touch the real ~/.cache/torch, whatever a test forgets to pass.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------- success


def test_download_success_into_weights_dir(registry, good, tmp_path, sample_input, reference_output):
    cache = tmp_path / "cache"
    path = W.resolve_weights("testnet", cache)
    assert path == cache / FILENAME
    assert W.sha256_file(path) == good["sha256"]
    assert _files(cache) == [FILENAME]  # no temp file left behind
    assert not (tmp_path / "torch-home").exists()  # weights_dir wins over TORCH_HOME

    model, tag = W.build_inception_resnet("testnet", cache)
    assert tag == f"testnet-{good['sha256'][:12]}"
    assert not model.training
    with torch.no_grad():
        out = model(sample_input)
    assert torch.equal(out, reference_output)


def test_cached_file_is_reused_without_download(registry, server, tmp_path):
    cache = tmp_path / "cache"
    W.resolve_weights("small", cache)
    hits = _Handler.hits.get("/small.pt", 0)
    assert hits >= 1
    assert W.resolve_weights("small", cache, download=False) == cache / "small.pt"
    assert W.resolve_weights("small", cache) == cache / "small.pt"
    assert _Handler.hits.get("/small.pt", 0) == hits


def test_torch_home_honoured(registry, monkeypatch, tmp_path):
    home = tmp_path / "th"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert weights_cache_dir() == home / "checkpoints"
    assert W.resolve_weights("small") == home / "checkpoints" / "small.pt"
    assert _files(home / "checkpoints") == ["small.pt"]


def test_default_cache_dir_fallbacks(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights_cache_dir() == tmp_path / "xdg" / "torch" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights_cache_dir() == tmp_path / "home" / ".cache" / "torch" / "checkpoints"


def test_spec_passed_directly(server, small, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "KNOWN_WEIGHTS", {})
    spec = W.WeightsSpec("adhoc", f"{server}/small.pt", "adhoc.pt", small["sha256"])
    assert W.resolve_weights(spec, tmp_path) == tmp_path / "adhoc.pt"
    assert W.sha256_file(tmp_path / "adhoc.pt") == small["sha256"]


def test_download_file_direct(server, small, tmp_path):
    dest = tmp_path / "d" / "x.pt"
    assert W.download_file(f"{server}/small.pt", dest, small["sha256"], 10) == small["sha256"]
    assert dest.read_bytes() == small["bytes"]
    assert _files(dest.parent) == ["x.pt"]


# --------------------------------------------------------------------------- failures


def _spec(registry, monkeypatch, url: str, sha256: str | None) -> None:
    registry["testnet"] = W.WeightsSpec("testnet", url, FILENAME, sha256)


def test_checksum_mismatch_leaves_nothing(registry, monkeypatch, server, good, tmp_path):
    _spec(registry, monkeypatch, f"{server}/wrong.pt", good["sha256"])
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("testnet", cache)
    msg = str(err.value)
    assert "checksum mismatch" in msg
    assert f"{server}/wrong.pt" in msg
    assert str(cache / FILENAME) in msg
    assert _files(cache) == []


@pytest.mark.parametrize("route,status", [("/missing.pt", "404"), ("/500", "500")])
def test_http_error_leaves_nothing(registry, monkeypatch, server, good, tmp_path, route, status):
    _spec(registry, monkeypatch, f"{server}{route}", good["sha256"])
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("testnet", cache)
    assert f"HTTP {status}" in str(err.value)
    assert f"{server}{route}" in str(err.value)
    assert _files(cache) == []


def test_connection_refused_names_url_and_target(registry, monkeypatch, closed_port_url, good, tmp_path):
    _spec(registry, monkeypatch, closed_port_url, good["sha256"])
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("testnet", cache, timeout=5)
    msg = str(err.value)
    assert "could not connect" in msg
    assert closed_port_url in msg
    assert f"place it at {cache / FILENAME}" in msg
    assert FILENAME in msg and "--weights" in msg and "--weights-dir" in msg
    assert _files(cache) == []


def test_truncated_body_leaves_nothing(registry, monkeypatch, server, good, tmp_path):
    # The server promises four times what it sends, then hangs up: the pinned checksum refuses
    # the incomplete file.
    _spec(registry, monkeypatch, f"{server}/truncated", good["sha256"])
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("testnet", cache)
    assert "incomplete" in str(err.value) and f"{server}/truncated" in str(err.value)
    assert _files(cache) == []


def test_timeout_leaves_nothing(server, tmp_path):
    dest = tmp_path / "cache" / "slow.pt"
    with pytest.raises(WeightsError) as err:
        W.download_file(f"{server}/slow", dest, None, timeout=0.5)
    assert "timed out" in str(err.value)
    assert _files(dest.parent) == []


def test_no_download_when_disabled(registry, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("testnet", cache, download=False)
    assert str(cache / FILENAME) in str(err.value)
    assert _files(cache) == []


def test_corrupt_cached_file_refused(registry, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / FILENAME).write_bytes(b"garbage")
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("testnet", cache)
    assert str(cache / FILENAME) in str(err.value)
    assert (cache / FILENAME).read_bytes() == b"garbage"  # never deletes a user's file


# --------------------------------------------------------------------------- trust on first use


def test_tofu_records_and_verifies(registry, good, tmp_path, caplog):
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="recognizer.embedding.weights"):
        path = W.resolve_weights("tofu", cache)
    assert "no published checksum" in caplog.text
    record = cache / "tofu.pt.sha256"
    assert record.read_text().split()[0] == good["sha256"]
    assert _files(cache) == ["tofu.pt", "tofu.pt.sha256"]
    assert W.resolve_weights("tofu", cache, download=False) == path

    path.write_bytes(good["bytes"][:-10] + b"0123456789")  # changed after recording
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("tofu", cache)
    assert str(path) in str(err.value)


def test_tofu_download_cut_short_is_neither_kept_nor_trusted(registry, monkeypatch, server, tmp_path):
    # Nothing is pinned, and the server hangs up after a quarter of the file: the partial file
    # must not be recorded as the trusted one (a retry would then refuse the whole file).
    monkeypatch.setitem(registry, "tofu", W.WeightsSpec("tofu", f"{server}/truncated-good.pt", "tofu.pt", None))
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("tofu", cache)
    assert "incomplete" in str(err.value) and f"{server}/truncated-good.pt" in str(err.value)
    assert _files(cache) == []


def test_tofu_trusts_existing_file_and_records_it(registry, small, tmp_path, caplog):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tofu.pt").write_bytes(small["bytes"])  # e.g. downloaded earlier by facenet-pytorch
    with caplog.at_level(logging.WARNING, logger="recognizer.embedding.weights"):
        assert W.resolve_weights("tofu", cache, download=False) == cache / "tofu.pt"
    assert "trusting" in caplog.text
    assert (cache / "tofu.pt.sha256").read_text().split()[0] == small["sha256"]


# --------------------------------------------------------------------------- files and names


def test_state_dict_path_loads_identically(good, tmp_path, sample_input, reference_output):
    model, tag = W.build_inception_resnet(str(good["path"]))
    assert tag == f"file-{good['sha256'][:12]}"
    with torch.no_grad():
        assert torch.equal(model(sample_input), reference_output)

    wrapped = tmp_path / "ckpt.pt"
    torch.save({"state_dict": good["state"], "epoch": 3}, wrapped)
    assert W.resolve_weights(str(wrapped)) == wrapped
    model2, tag2 = W.build_inception_resnet(str(wrapped))
    assert tag2.startswith("file-") and tag2 != tag
    assert _same_params(model2, model)  # same parameters -> same outputs


def test_load_state_dict_drops_logits(good):
    state = W.load_state_dict(good["path"])
    assert state and not any(k.startswith("logits") for k in state)


def test_non_torch_file_rejected(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello, I am not a checkpoint")
    with pytest.raises(WeightsError) as err:
        W.build_inception_resnet(str(bad))
    assert str(bad) in str(err.value)


def test_pickled_custom_object_refused(tmp_path):
    zipped = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "payload": _Custom()}, zipped)
    legacy = tmp_path / "evil.pkl"
    torch.save({"payload": _Custom()}, legacy, _use_new_zipfile_serialization=False)  # the legacy, bare-pickle format
    for path in (zipped, legacy):
        with pytest.raises(WeightsError) as err:
            W.load_state_dict(path)
        assert str(path) in str(err.value)
        assert "weights_only" in str(err.value)


def test_missing_keys_rejected(good, tmp_path):
    partial = tmp_path / "partial.pt"
    keys = list(good["state"])
    torch.save({k: good["state"][k] for k in keys[: len(keys) // 2]}, partial)
    with pytest.raises(WeightsError) as err:
        W.build_inception_resnet(str(partial))
    assert str(partial) in str(err.value)
    assert "missing" in str(err.value)


def test_unknown_name_lists_accepted_values(registry):
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("imagenet")
    msg = str(err.value)
    assert "'imagenet'" in msg and "'random'" in msg and "'testnet'" in msg and "path" in msg


def test_missing_path_named(tmp_path):
    missing = tmp_path / "nope" / "weights.pt"
    with pytest.raises(WeightsError) as err:
        W.resolve_weights(str(missing))
    assert str(missing) in str(err.value)
    with pytest.raises(WeightsError) as err:
        W.resolve_weights("weights.pth")
    assert "weights.pth" in str(err.value)


def test_real_registry_shape(tmp_path):
    """The real registry (not monkeypatched here) names the files facenet-pytorch publishes, and
    resolving each name goes through its entry: the file is looked for under its published name,
    vggface2's pinned checksum refuses any other file, casia-webface's is trusted on first use."""
    base = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
    want = {"vggface2": ("20180402-114759-vggface2.pt", "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b"),
            "casia-webface": ("20180408-102900-casia-webface.pt", None)}
    assert {n: (s.filename, s.sha256) for n, s in W.KNOWN_WEIGHTS.items()} == want
    for name, (filename, _) in want.items():
        spec = W.KNOWN_WEIGHTS[name]
        assert spec.name == name and spec.url == base + filename
        with pytest.raises(WeightsError) as err:  # not cached, no download: names the file and where it goes
            W.resolve_weights(name, tmp_path / "empty", download=False)
        assert spec.url in str(err.value) and str(tmp_path / "empty" / filename) in str(err.value)
    cache = tmp_path / "cache"
    cache.mkdir()
    for filename, _ in want.values():
        (cache / filename).write_bytes(b"not the published file")
    with pytest.raises(WeightsError, match="published checksum"):
        W.resolve_weights("vggface2", cache)
    assert W.resolve_weights("casia-webface", cache) == cache / want["casia-webface"][0]
    assert (cache / (want["casia-webface"][0] + ".sha256")).is_file()
    # The default a facenet model gets is in the registry; sface takes none.
    from recognizer.embedding.backbones import default_weights

    assert default_weights("facenet", None) == W.DEFAULT_WEIGHTS == "vggface2"
    assert default_weights("facenet", "casia-webface") == "casia-webface"
    assert default_weights("sface", None) is None and default_weights("sface", "vggface2") is None


# --------------------------------------------------------------------------- random


_RANDOM_SCRIPT = """
import hashlib, sys, torch
torch.set_num_threads(1)
from recognizer.embedding.weights import build_inception_resnet
model, tag = build_inception_resnet("random", seed=int(sys.argv[1]))
digest = hashlib.sha256()
for name, value in model.state_dict().items():
    digest.update(name.encode() + value.numpy().tobytes())
x = torch.randn(1, 3, 80, 80, generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    out = model(x)
sys.stdout.write(tag + " " + digest.hexdigest() + " " + " ".join(map(repr, out[0].tolist())))
"""


def test_random_is_none_and_reproducible_across_processes():
    assert W.resolve_weights("random") is None
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # Another process builds seed 3 while this one does: the two must agree.
    proc = subprocess.Popen([sys.executable, "-c", _RANDOM_SCRIPT, "3"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        model, tag = W.build_inception_resnet("random", seed=3)
        digest = hashlib.sha256()
        for name, value in model.state_dict().items():
            digest.update(name.encode() + value.numpy().tobytes())
        x = torch.randn(1, 3, 80, 80, generator=torch.Generator().manual_seed(5))
        with torch.no_grad(), torch_threads(1):
            here = model(x)[0]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    other_tag, other_digest, *values = out.split()
    assert (other_tag, tag) == ("random-seed3", "random-seed3")
    assert other_digest == digest.hexdigest()  # bit-identical weights in both processes
    # Outputs: bit-identical, since both processes run the network on one thread (a thread count
    # of its own would change the convolutions' summation order); repr round-trips a float.
    there = torch.tensor([float(v) for v in values])
    torch.testing.assert_close(there, here, rtol=0, atol=0)


def test_random_seed_matters_and_global_rng_untouched():
    torch.manual_seed(99)
    expected = torch.rand(3)
    torch.manual_seed(99)
    model_a, tag = W.build_inception_resnet("random", seed=11)
    assert torch.equal(torch.rand(3), expected)  # fork_rng: caller's RNG state restored
    assert tag == "random-seed11"
    model_b, _ = W.build_inception_resnet("random", seed=11)
    model_c, _ = W.build_inception_resnet("random", seed=12)
    assert _same_params(model_a, model_b)
    assert not _same_params(model_a, model_c)
