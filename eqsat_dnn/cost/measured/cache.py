"""The measured model's cache: one JSON file of measurements per machine and method.

One file per (CPU model and flags, core count, onnxruntime version, thread count, method
version) under :func:`cache_dir` (``$EQSAT_DNN_CACHE``, else ``$XDG_CACHE_HOME/eqsat-dnn``,
else ``~/.cache/eqsat-dnn``); a configuration measured once is never measured again, and a
failure to build one is remembered too. Entries are keyed by :func:`canonical` text of what
was measured (:func:`type_key`, :func:`attr_key`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import stat
from pathlib import Path
from typing import Any

import numpy as np

from eqsat_dnn.cost.shapes import dims
from eqsat_dnn.errors import InputError, OutputError
from eqsat_dnn.io.files import file_kind, write_atomic
from eqsat_dnn.ir.graph import Node, TensorType
from eqsat_dnn.ir.language import OPAQUE

METHOD = 2
"""Version of the measuring method; part of the cache file name."""


def cache_dir() -> Path:
    """Where measurements are cached: ``$EQSAT_DNN_CACHE``, else ``$XDG_CACHE_HOME/eqsat-dnn``,
    else ``~/.cache/eqsat-dnn``."""
    env = os.environ.get("EQSAT_DNN_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "eqsat-dnn"


def default_threads() -> int:
    try:
        return max(1, int(os.environ.get("EQSAT_DNN_THREADS", "1")))
    except ValueError:
        return 1


def device_description() -> dict[str, Any]:
    """What identifies this machine for the cache: CPU model, its flags, core count."""
    model, flags = platform.processor() or platform.machine(), ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.strip()
    import onnxruntime as ort

    return {
        "cpu": model,
        "flags": hashlib.sha1(flags.encode()).hexdigest()[:12] if flags else "",
        "cores": os.cpu_count() or 1,
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
    }


class Cache:
    """A JSON file of measurements, merged with what other processes wrote on save."""

    def __init__(self, path: Path, device: dict[str, Any]) -> None:
        self.path = path
        self.device = device
        self.entries: dict[str, Any] = {}
        self.dirty: set[str] = set()
        self.load()

    def load(self) -> None:
        with contextlib.suppress(OSError):
            mode = os.stat(self.path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # reading a FIFO would block
                raise InputError(f"{self.path}: the measured cost model's cache is {file_kind(mode)}, "
                                 "not a regular file (see $EQSAT_DNN_CACHE)")
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and isinstance(data.get("entries"), dict):
                self.entries.update(data["entries"])

    def get(self, key: str) -> Any:
        return self.entries.get(key)

    def put(self, key: str, value: Any) -> None:
        self.entries[key] = value
        self.dirty.add(key)

    def save(self) -> None:
        if not self.dirty:
            return
        mine = {k: self.entries[k] for k in self.dirty}
        self.load()  # keep what others measured meanwhile
        self.entries.update(mine)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"device": self.device, "method": METHOD, "entries": self.entries}, indent=0)
            write_atomic(self.path, lambda tmp: tmp.write_text(text))
            self.dirty.clear()
        except (OSError, OutputError):
            pass  # a read-only cache directory: keep the numbers in memory


def cache_file(threads: int, directory: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    device = dict(device_description(), threads=threads, method=METHOD)
    digest = hashlib.sha1(canonical(device).encode()).hexdigest()[:12]
    base = Path(directory).expanduser() if directory is not None else cache_dir()
    return base / f"measured-ort{device['onnxruntime']}-{threads}t-{digest}.json", device


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def canonical(value: Any) -> str:
    """A stable text form of attributes and shapes, for cache keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def type_key(t: TensorType | None) -> Any:
    return None if t is None or t.shape is None else [int(t.dtype), dims(t)]


def attr_key(node: Node) -> Any:
    if node.op == OPAQUE and node.proto is not None:
        blob = b"".join(a.SerializeToString() for a in sorted(node.proto.attribute, key=lambda a: a.name))
        return [node.proto.domain, hashlib.sha1(blob).hexdigest()[:16]]
    return {k: v for k, v in node.attrs.items() if k != "index"}


__all__ = ["Cache", "METHOD", "attr_key", "cache_dir", "cache_file", "canonical", "default_threads",
           "device_description", "type_key"]
