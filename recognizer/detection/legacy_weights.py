"""A restricted reader of torch's legacy (non-zip) state-dict files: MTCNN's weights without torch.

facenet-pytorch's pnet.pt, rnet.pt and onet.pt are pickles written by `torch.save` before 1.6:
five consecutive pickles (magic number, format version, system info, the state dict with each
tensor's storage as a persistent id, the storage keys) followed by each storage's raw bytes
(an int64 element count, then the elements, little-endian). Unpickling them would run whatever
callables the file names, so this module never does (no `pickle.load`, no `torch.load`): it walks
the opcodes with `pickletools.genops` and interprets only an allow-list of them, on an
allow-list of three globals (OrderedDict, torch's FloatStorage and `_rebuild_tensor_v2`, each
mapped to a harmless stand-in). Anything else, an unknown opcode or global, a non-float32
storage, a view reaching outside its storage, a short storage, raises `WeightsError`.
"""
from __future__ import annotations

import hashlib
import io
import pickletools
import struct
from pathlib import Path

import numpy as np

from facecore.errors import WeightsError

__all__ = ["MAX_BYTES", "MTCNN_SHA256", "read_state_dict", "weights_dir"]

# The vendored files (byte for byte facenet-pytorch 2.6.0's data/*.pt; see mtcnn_weights/README.md).
MTCNN_SHA256 = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
MAX_BYTES = 64 << 20  # far above MTCNN's 2 MB: a guard against reading a huge file into memory
_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION
_MARK = object()


class _Callable:
    """A stand-in for an allowed global: what REDUCE may call."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Storage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


_ORDERED_DICT, _REBUILD, _FLOAT_STORAGE = _Callable("OrderedDict"), _Callable("_rebuild_tensor_v2"), _Callable("FloatStorage")
_GLOBALS = {
    "collections OrderedDict": _ORDERED_DICT,
    "torch._utils _rebuild_tensor_v2": _REBUILD,
    "torch FloatStorage": _FLOAT_STORAGE,
}
# Opcodes that push one constant: their argument as genops decoded it.
_CONSTANTS = {"BINUNICODE", "SHORT_BINUNICODE", "SHORT_BINSTRING", "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT"}
_SINGLETONS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def weights_dir() -> Path:
    """The vendored MTCNN weight files' folder (inside this package)."""
    return Path(__file__).resolve().parent / "mtcnn_weights"


def _pop_mark(stack: list) -> list:
    items = []
    while True:
        if not stack:
            raise WeightsError("pickle: MARK missing")
        x = stack.pop()
        if x is _MARK:
            return items[::-1]
        items.append(x)


def _reduce(fn, args):
    """REDUCE on an allowed global: a dict, or a tensor reference (storage, offset, size, stride)."""
    if fn is _ORDERED_DICT and args == ():
        return {}
    if fn is _REBUILD and isinstance(args, tuple) and len(args) == 6 and isinstance(args[0], _Storage):
        storage, offset, size, stride = args[:4]
        if not all(isinstance(v, int) for v in (offset, *size, *stride)):
            raise WeightsError("pickle: a tensor with non-integer geometry")
        return ("tensor", storage, offset, tuple(size), tuple(stride))
    raise WeightsError(f"pickle: REDUCE of {getattr(fn, 'name', type(fn).__name__)} is not allowed")


def _persistent(pid):
    """BINPERSID: ('storage', FloatStorage, key, location, numel[, view metadata])."""
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage" and pid[1] is _FLOAT_STORAGE
            and isinstance(pid[2], str) and isinstance(pid[4], int) and (len(pid) == 5 or pid[5] is None)):
        raise WeightsError(f"pickle: persistent id {pid!r:.80} is not a float32 storage")
    return _Storage(pid[2], pid[4])


def _setitems(stack: list, items: list) -> None:
    target = stack[-1]
    if not isinstance(target, dict) or len(items) % 2:
        raise WeightsError("pickle: SETITEM(S) on a non-dict")
    for k, v in zip(items[::2], items[1::2]):
        if not isinstance(k, (str, int)):
            raise WeightsError("pickle: a dict key that is not a string or number")
        target[k] = v


def _op_tuple(op, arg, stack, memo):
    if op == "TUPLE":
        stack.append(tuple(_pop_mark(stack)))
        return
    n = _TUPLES[op]
    items = tuple(stack[-n:])
    if len(items) != n:
        raise WeightsError(f"pickle: {op} on a short stack")
    del stack[-n:]
    stack.append(items)


def _op_setitems(op, arg, stack, memo):
    items = [stack.pop() for _ in range(2)][::-1] if op == "SETITEM" else _pop_mark(stack)
    _setitems(stack, items)


def _op_appends(op, arg, stack, memo):
    items = [stack.pop()] if op == "APPEND" else _pop_mark(stack)
    if not isinstance(stack[-1], list):
        raise WeightsError("pickle: APPEND(S) on a non-list")
    stack[-1].extend(items)


def _op_global(op, arg, stack, memo):
    if arg not in _GLOBALS:
        raise WeightsError(f"pickle: global {arg!r} is not allowed")
    stack.append(_GLOBALS[arg])


def _op_reduce(op, arg, stack, memo):
    args = stack.pop()
    stack.append(_reduce(stack.pop(), args))


def _op_build(op, arg, stack, memo):
    """OrderedDict's state: the `_metadata` attribute (module versions), dropped."""
    state = stack.pop()
    if not (isinstance(stack[-1], dict) and isinstance(state, dict)):
        raise WeightsError("pickle: BUILD on something other than a dict")


def _op_put(op, arg, stack, memo):
    memo[arg] = stack[-1]


# The allowed opcodes (besides PROTO and STOP) and what each does to the stack and memo.
_OPS = {
    **{op: lambda op, arg, stack, memo: stack.append(arg) for op in _CONSTANTS},
    **{op: lambda op, arg, stack, memo: stack.append(_SINGLETONS[op]) for op in _SINGLETONS},
    "EMPTY_DICT": lambda op, arg, stack, memo: stack.append({}),
    "EMPTY_LIST": lambda op, arg, stack, memo: stack.append([]),
    "EMPTY_TUPLE": lambda op, arg, stack, memo: stack.append(()),
    "MARK": lambda op, arg, stack, memo: stack.append(_MARK),
    "BINPUT": _op_put, "LONG_BINPUT": _op_put,
    "BINGET": lambda op, arg, stack, memo: stack.append(memo[arg]),
    "LONG_BINGET": lambda op, arg, stack, memo: stack.append(memo[arg]),
    "TUPLE": _op_tuple, **{op: _op_tuple for op in _TUPLES},
    "SETITEM": _op_setitems, "SETITEMS": _op_setitems,
    "APPEND": _op_appends, "APPENDS": _op_appends,
    "GLOBAL": _op_global,
    "REDUCE": _op_reduce,
    "BINPERSID": lambda op, arg, stack, memo: stack.append(_persistent(stack.pop())),
    "BUILD": _op_build,
}


def _step(op: str, arg, stack: list, memo: dict) -> None:
    handler = _OPS.get(op)
    if handler is None:
        raise WeightsError(f"pickle: opcode {op} is not allowed")
    handler(op, arg, stack, memo)


def _read_pickle(fh: io.BytesIO):
    """One pickle from `fh` (left just after its STOP), interpreted on the allow-lists."""
    stack, memo = [], {}
    try:
        for opcode, arg, _pos in pickletools.genops(fh):
            op = opcode.name
            if op == "PROTO":
                if arg != 2:
                    raise WeightsError(f"pickle: protocol {arg}, expected 2")
            elif op == "STOP":
                if len(stack) != 1:
                    raise WeightsError("pickle: stack not one object at STOP")
                return stack[0]
            else:
                _step(op, arg, stack, memo)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise WeightsError(f"pickle: malformed ({type(exc).__name__}: {exc})") from None
    raise WeightsError("pickle: no STOP")


def _storages(fh: io.BytesIO, keys: list, wanted: dict[str, int]) -> dict[str, np.ndarray]:
    """The raw storages after the pickles: per key, an int64 element count and the float32s."""
    out = {}
    for key in keys:
        head = fh.read(8)
        if len(head) != 8:
            raise WeightsError(f"storage {key}: truncated")
        (numel,) = struct.unpack("<q", head)
        if numel != wanted.get(key):
            raise WeightsError(f"storage {key}: {numel} elements, the pickle said {wanted.get(key)}")
        raw = fh.read(4 * numel)
        if len(raw) != 4 * numel:
            raise WeightsError(f"storage {key}: truncated")
        out[key] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if fh.read(1):
        raise WeightsError("trailing bytes after the storages")
    return out


def _tensor(ref, storages: dict[str, np.ndarray]) -> np.ndarray:
    """The tensor's elements, C-contiguous: `size` and `stride` (in elements) over its storage
    from `offset`, every element checked to lie inside the storage."""
    _, storage, offset, size, stride = ref
    data = storages[storage.key]
    if any(n < 0 for n in size) or any(s < 0 for s in stride) or len(size) != len(stride) or offset < 0:
        raise WeightsError(f"tensor of size {size}, strides {stride}: negative or mismatched")
    if 0 in size:
        return np.zeros(size, np.float32)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= data.size:
        raise WeightsError(f"tensor of size {size}, strides {stride} at {offset}: outside its storage")
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=size, strides=tuple(4 * s for s in stride), writeable=False)
    return np.ascontiguousarray(view, dtype=np.float32)


def _header(fh: io.BytesIO, path: Path) -> None:
    magic, protocol, info = (_read_pickle(fh) for _ in range(3))
    if magic != _MAGIC or protocol != _PROTOCOL or not isinstance(info, dict) or info.get("little_endian") is not True:
        raise WeightsError(f"{path}: not a little-endian legacy torch file")


def _tensor_refs(state, keys, path: Path) -> dict:
    """The state dict's tensor references, checked to be all of it and to match the storage keys."""
    if not isinstance(state, dict) or not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise WeightsError(f"{path}: not a state dict")
    refs = {k: v for k, v in state.items() if isinstance(v, tuple) and v[:1] == ("tensor",)}
    if len(refs) != len(state) or not refs:
        raise WeightsError(f"{path}: a state dict entry is not a tensor")
    if sorted({v[1].key for v in refs.values()}) != sorted(keys):
        raise WeightsError(f"{path}: the storage keys do not match the tensors'")
    return refs


def read_state_dict(path: str | Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The float32 arrays of a legacy torch state-dict file, by name, in the file's order; with
    `sha256`, the file's bytes are checked against it first."""
    path = Path(path)
    if path.stat().st_size > MAX_BYTES:
        raise WeightsError(f"{path}: over {MAX_BYTES} bytes")
    blob = path.read_bytes()
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise WeightsError(f"{path}: sha256 does not match the expected {sha256[:16]}...")
    fh = io.BytesIO(blob)
    _header(fh, path)
    state = _read_pickle(fh)
    keys = _read_pickle(fh)
    refs = _tensor_refs(state, keys, path)
    storages = _storages(fh, keys, {v[1].key: v[1].numel for v in refs.values()})
    return {name: _tensor(ref, storages) for name, ref in refs.items()}
