"""Pretrained Inception-ResNet-v1 weights (facenet-pytorch's ports of Sandberg's facenet): resolve,
download, verify, cache, load.

Cached in ``$TORCH_HOME/checkpoints``, as facenet-pytorch and ``torch.hub`` do, so a file either already
fetched is reused. Every cached file is verified by SHA-256: against the spec's published checksum, or,
when none is pinned (``sha256=None``), by trust on first use (the first hash is recorded in
``<file>.sha256`` and later uses must match it). torch.hub downloads to a temporary file moved into
place only once complete and verified, so a failed download never leaves a partial file.
"""
from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facecore.atomic import atomic_write, fsync_dir, sha256_file
from facecore.errors import WeightsError
from recognizer.cache import weights_cache_dir

if TYPE_CHECKING:  # pragma: no cover
    import torch  # heavy, and not needed to identify on ONNX Runtime

__all__ = ["DEFAULT_WEIGHTS", "KNOWN_WEIGHTS", "RANDOM", "WeightsSpec", "accepted_values", "build_inception_resnet",
           "download_file", "load_state_dict", "resolve_weights", "weights_tag"]

log = logging.getLogger(__name__)

RANDOM = "random"
# The facenet weights a model gets when none are named (see `backbones.default_weights`).
DEFAULT_WEIGHTS = "vggface2"


@dataclass(frozen=True)
class WeightsSpec:
    """A downloadable weights file; ``sha256=None``: verified by trust on first use."""
    name: str
    url: str
    filename: str
    sha256: str | None


# The registry of known weights. Tests (and callers) may replace entries.
KNOWN_WEIGHTS: dict[str, WeightsSpec] = {
    "vggface2": WeightsSpec(
        name="vggface2",
        url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
        filename="20180402-114759-vggface2.pt",
        # Not published by facenet-pytorch: the value several independent projects pin for this URL
        # (a Dockerfile checking it with `sha256sum -c`, a weights registry recording 111,898,327 bytes).
        sha256="281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
    ),
    "casia-webface": WeightsSpec(
        name="casia-webface",
        url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180408-102900-casia-webface.pt",
        filename="20180408-102900-casia-webface.pt",
        # No trustworthy published checksum found, and we do not invent one: trust on first use.
        sha256=None,
    ),
}


def accepted_values() -> list[str]:
    return [RANDOM, *KNOWN_WEIGHTS]


def _accepted_text() -> str:
    names = ", ".join(repr(n) for n in accepted_values())
    return f"{names}, or a path to a .pt state_dict file"


def _looks_like_path(value: str) -> bool:
    return (os.sep in value or "/" in value or (os.altsep is not None and os.altsep in value)
            or value.startswith(("~", ".")) or value.lower().endswith((".pt", ".pth", ".pkl", ".bin", ".ckpt", ".tar")))


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _offline_hint(spec_or_filename: WeightsSpec | str, url: str, dest: Path) -> str:
    filename = spec_or_filename.filename if isinstance(spec_or_filename, WeightsSpec) else spec_or_filename
    return (f"To work offline, download {filename} from {url} and place it at {dest}, "
            f"or pass --weights /path/to/file.pt / --weights-dir DIR.")


def _read_record(record: Path) -> str | None:
    try:
        text = record.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WeightsError(f"cannot read checksum record {record}: {exc}") from exc
    token = text.split()[0].lower() if text else ""
    if len(token) != 64 or any(c not in "0123456789abcdef" for c in token):
        raise WeightsError(f"checksum record {record} is malformed; delete it (and the weights file next to it "
                           f"if you do not trust it) to record the checksum again")
    return token


def _write_record(path: Path, digest: str) -> None:
    record = _record_path(path)
    try:
        with atomic_write(record, 0o644) as fh:
            fh.write(f"{digest}  {path.name}\n".encode())
    except OSError as exc:
        # Not fatal: only a later change to the file would go unnoticed.
        log.warning("could not write checksum record %s: %s", record, exc)


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    # torch.hub's download takes no timeout; urllib then waits as long as the socket default
    # says, so that default bounds each connect and read while the download runs. It is
    # process-wide, but weights are fetched once, before a model exists.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def download_file(url: str, dest: Path, sha256: str | None, timeout: float) -> str:
    """Download ``url`` to ``dest`` (whole and verified against ``sha256`` when given, or untouched) and return
    its sha256. A WeightsError says what failed, the URL, and where to put the file to work offline."""
    import torch.hub  # heavy: only a download needs it

    dest = Path(dest)
    hint = _offline_hint(dest.name, url, dest)

    def fail(what: str) -> WeightsError:
        return WeightsError(f"download failed: {what}\n  URL: {url}\n  {hint}")

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"cannot create directory {dest.parent} ({exc})") from exc
    log.info("downloading %s to %s", url, dest)
    try:
        with _socket_timeout(timeout):
            torch.hub.download_url_to_file(url, str(dest), hash_prefix=sha256.lower() if sha256 else None,
                                           progress=sys.stderr.isatty())
    except urllib.error.HTTPError as exc:
        raise fail(f"server answered HTTP {exc.code} {exc.reason or ''}".rstrip()) from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise fail(f"timed out after {timeout:g} s waiting for the server ({exc.reason})") from exc
        raise fail(f"could not connect ({exc.reason})") from exc
    except TimeoutError as exc:
        raise fail(f"timed out after {timeout:g} s waiting for data ({exc})") from exc
    except (ConnectionError, http.client.HTTPException) as exc:
        raise fail(f"connection interrupted ({type(exc).__name__}: {exc})") from exc
    except RuntimeError as exc:
        if "invalid hash value" not in str(exc):
            raise fail(f"{type(exc).__name__}: {exc}") from exc
        # An interrupted transfer ends here too: urllib does not check Content-Length.
        raise fail(f"checksum mismatch (a wrong or incomplete file): expected sha256 {sha256}, "
                   f"got {str(exc).rsplit(' ', 1)[-1].strip(chr(34) + ')')}") from exc
    except OSError as exc:
        raise fail(f"cannot write {dest} ({exc})") from exc
    # Durable before its checksum is recorded or the file is used.
    with open(dest, "rb") as fh:
        os.fsync(fh.fileno())
    with contextlib.suppress(OSError):
        fsync_dir(dest.parent)
    actual = sha256_file(dest)
    log.info("downloaded %s (sha256 %s)", dest, actual)
    return actual


def _ensure_cached(spec: WeightsSpec, cache_dir: Path, *, download: bool, timeout: float) -> tuple[Path, str]:
    """(path, sha256) of the verified cached file for ``spec``."""
    path = cache_dir / spec.filename
    record = _record_path(path)
    if path.is_file():
        actual = sha256_file(path)
        if spec.sha256 is not None:
            if actual != spec.sha256.lower():
                raise WeightsError(f"cached weights {path} do not match the published checksum "
                                   f"(expected sha256 {spec.sha256}, got {actual}). Delete the file to download it "
                                   f"again, or pass --weights /path/to/file.pt to use it anyway.")
            return path, actual
        # Trust on first use: no published checksum is pinned for this file.
        recorded = _read_record(record)
        if recorded is None:
            log.warning("no published checksum is pinned for %s; trusting the file already at %s "
                        "(sha256 %s) and recording it in %s", spec.filename, path, actual, record)
            _write_record(path, actual)
        elif recorded != actual:
            raise WeightsError(f"cached weights {path} changed since their checksum was recorded in {record} "
                               f"(recorded sha256 {recorded}, now {actual}). Delete both files to download again.")
        return path, actual

    if path.exists():
        raise WeightsError(f"{path} exists but is not a regular file")
    if not download:
        raise WeightsError(f"weights {spec.name!r} are not in the cache and downloading is disabled. "
                           + _offline_hint(spec, spec.url, path))
    if spec.sha256 is None:
        log.warning("no published checksum is pinned for %s; its sha256 will be recorded on download "
                    "(trust on first use) in %s", spec.filename, record)
    actual = download_file(spec.url, path, spec.sha256, timeout)
    if spec.sha256 is None:
        # Nothing pinned to check the bytes against, and urllib does not check Content-Length:
        # a transfer cut short would be trusted for good once recorded. A file that loads as
        # weights is whole (a truncated torch file loses its zip directory or pickle end).
        try:
            load_state_dict(path)
        except WeightsError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            raise WeightsError(f"download failed: the file from {spec.url} is incomplete or not weights ({exc}); "
                               f"nothing was kept or recorded.\n  {_offline_hint(spec, spec.url, path)}") from exc
        _write_record(path, actual)
    return path, actual


def _resolve(weights: str | WeightsSpec, weights_dir: str | Path | None, *, download: bool,
             timeout: float) -> tuple[Path | None, str | None, str | None]:
    """(path, known name or None, sha256 if already computed)."""
    if isinstance(weights, WeightsSpec):
        spec: WeightsSpec | None = weights
    elif not isinstance(weights, str) or not weights.strip():
        raise WeightsError(f"invalid weights {weights!r}; accepted: {_accepted_text()}")
    elif weights == RANDOM:
        return None, None, None
    else:
        spec = KNOWN_WEIGHTS.get(weights)
    if spec is not None:
        cache_dir = Path(weights_dir).expanduser() if weights_dir is not None else weights_cache_dir()
        path, digest = _ensure_cached(spec, cache_dir, download=download, timeout=timeout)
        return path, spec.name, digest

    assert isinstance(weights, str)
    candidate = Path(weights).expanduser()
    if candidate.is_file():
        return candidate, None, None
    if candidate.is_dir():
        raise WeightsError(f"--weights {weights!r}: {candidate} is a directory, not a weights file")
    if _looks_like_path(weights):
        raise WeightsError(f"weights file not found: {candidate}")
    raise WeightsError(f"unknown weights {weights!r}; accepted: {_accepted_text()}")


def resolve_weights(weights: str | WeightsSpec, weights_dir: str | Path | None = None, *, download: bool = True,
                    timeout: float = 60) -> Path | None:
    """A ``--weights`` value as a local file: None for ``"random"``; for a known name or a WeightsSpec, the verified
    file in ``weights_dir`` (default `weights_cache_dir()`), downloaded if missing and allowed (a name wins over a
    same-named file: write ``./vggface2``); an existing path as is. Anything else raises WeightsError."""
    path, _, _ = _resolve(weights, weights_dir, download=download, timeout=timeout)
    return path


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > limit:
        first = first[:limit] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_state_dict(path: Path) -> dict[str, "torch.Tensor"]:
    """An Inception-ResNet-v1 state_dict loaded with ``weights_only=True``, from a plain one or a checkpoint's
    ``"state_dict"``; a DataParallel ``module.`` prefix is stripped and the pretraining ``logits.*`` dropped."""
    import torch  # heavy, and not needed to identify on ONNX Runtime

    path = Path(path)
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file not found: {path}") from exc
    except Exception as exc:
        raise WeightsError(f"cannot load weights from {path}: not a PyTorch state_dict file, or it contains "
                           f"objects that torch.load(weights_only=True) refuses ({_short(exc)})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path} does not contain a state_dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{path} is not a state_dict: non-tensor entries {bad[:5]!r}")

    keys = list(obj)
    if all(k.startswith("module.") for k in keys):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    state = {k: v for k, v in obj.items() if not (k == "logits" or k.startswith("logits."))}
    if not state:
        raise WeightsError(f"{path} holds no embedding-network weights (only logits.*)")
    return state


def _seeded_random_model(seed: int):
    import torch  # heavy, and not needed to identify on ONNX Runtime
    from facenet_pytorch import InceptionResnetV1

    # fork_rng: building a model never perturbs the caller's randomness; devices=[] keeps CUDA out of it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return InceptionResnetV1(pretrained=None, classify=False)


def weights_tag(weights: str | WeightsSpec, weights_dir: str | Path | None = None, download: bool = True, *,
                seed: int = 0, timeout: float = 60) -> tuple[str, str | None]:
    """The tag `build_inception_resnet` gives these weights and their sha256 (None if random), without torch."""
    path, name, digest = _resolve(weights, weights_dir, download=download, timeout=timeout)
    if path is None:
        return f"random-seed{seed}", None
    if digest is None:
        digest = sha256_file(path)
    return f"{name or 'file'}-{digest[:12]}", digest


def build_inception_resnet(weights: str | WeightsSpec, weights_dir: str | Path | None = None, download: bool = True,
                           *, seed: int = 0, timeout: float = 60) -> tuple["torch.nn.Module", str]:
    """An embedding-mode ``InceptionResnetV1`` in eval mode, and its weights tag for model ids: ``"random-seed<N>"``
    (from ``seed``, the same in every process), else ``"<name>-<sha256[:12]>"`` (name ``"file"`` for a path)."""
    path, name, digest = _resolve(weights, weights_dir, download=download, timeout=timeout)
    model = _seeded_random_model(seed)
    if path is None:
        return model.eval(), f"random-seed{seed}"

    state = load_state_dict(path)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(f"{path} does not fit InceptionResnetV1: {len(missing)} missing keys {missing[:5]}, "
                           f"{len(unexpected)} unexpected keys {unexpected[:5]}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"{path} does not fit InceptionResnetV1: {_short(exc, 500)}") from exc
    if digest is None:
        digest = sha256_file(path)
    return model.eval(), f"{name or 'file'}-{digest[:12]}"
