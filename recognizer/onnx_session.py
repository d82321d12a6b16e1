"""The one way the project opens an ONNX Runtime session (MTCNN's networks, facenet, SFace).

CPU only, `threads` intra-op threads, one inter-op thread, sequential, workers never spinning: on a shared
machine spinning workers starve other processes' threads (as OpenMP's OMP_WAIT_POLICY does, see
recognizer/cli/_options.py).

No memory arena: ONNX Runtime's CPU arena keeps the largest buffers any call ever needed (MTCNN's first
stage on a big photo's pyramid takes tens of MB) for the session's life, so a server grew with every new
photo size. Without it each call's buffers go back to the allocator when it ends: the numbers are the
same, the server's RSS stays flat and 50-100 MB lower, at 7-10% more CPU per photo (the big buffers are
mapped again per call). Figures: benchmarks/results/implementation-choices.md.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["cpu_session"]


def cpu_session(model: bytes | str | Path, threads: int):
    """An `onnxruntime.InferenceSession` on `model` (bytes, or a path: then ORT holds the only copy of the weights)."""
    import onnxruntime as ort  # optional and slow to import: only where a network runs

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    opts.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(model) if isinstance(model, Path) else model, opts,
                                providers=["CPUExecutionProvider"])
