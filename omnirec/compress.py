"""Smaller bundles: the model's large weight matrices stored as int8 (one float32 scale per row) or fp16,
histories as int32, every array file zip-compressed. Loading dequantizes to float32, so a compressed
bundle scores exactly as fast; what changes is its size on disk (and to ship) and, slightly, its scores.

    omnirec compress --bundle runs/shop --out runs/shop-int8 --weights int8

>>> import numpy as np
>>> state = {"emb": np.linspace(-1, 1, 8192, dtype=np.float32).reshape(64, 128), "bias": np.ones(3, np.float32)}
>>> small = compress_state(state, "int8")
>>> sorted(small), small["emb.int8"].dtype.name
(['bias', 'emb.int8', 'emb.scale'], 'int8')
>>> float(np.abs(decompress_state(small)["emb"] - state["emb"]).max()) < 0.005
True
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from omnirec.utils import atomic_savez, atomic_write_text, file_sha256

WEIGHTS = ("int8", "fp16")
MIN_ELEMENTS = 4096  # smaller arrays (biases, norms) stay float32: they weigh nothing


def compress_state(state: dict[str, np.ndarray], weights: str = "int8") -> dict[str, np.ndarray]:
    """Large float matrices as int8 with a per-row scale (`name.int8`, `name.scale`) or as fp16 (`name.fp16`)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}; expected one of {', '.join(WEIGHTS)}")
    out: dict[str, np.ndarray] = {}
    for name, value in state.items():
        value = np.asarray(value)
        if value.dtype != np.float32 or value.ndim != 2 or value.size < MIN_ELEMENTS:
            out[name] = value
        elif weights == "fp16":
            out[f"{name}.fp16"] = value.astype(np.float16)
        else:
            scale = np.abs(value).max(axis=1, keepdims=True) / 127.0  # (rows, 1)
            scale[scale == 0] = 1.0
            out[f"{name}.int8"] = np.clip(np.rint(value / scale), -127, 127).astype(np.int8)
            out[f"{name}.scale"] = scale.astype(np.float32)
    return out


def decompress_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Back to float32 arrays under their original names; a plain state passes through unchanged."""
    out: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if name.endswith(".int8"):
            base = name[: -len(".int8")]
            out[base] = value.astype(np.float32) * state[f"{base}.scale"]
        elif name.endswith(".fp16"):
            out[name[: -len(".fp16")]] = value.astype(np.float32)
        elif not name.endswith(".scale") or f"{name[: -len('.scale')]}.int8" not in state:
            out[name] = value
    return out


def folder_bytes(path: str | Path) -> int:
    """Total size of the files under a folder."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def compress_bundle(source: str | Path, out: str | Path, weights: str = "int8") -> dict[str, int]:
    """Write a compressed copy of the bundle `source` to `out` (written aside, then renamed into place);
    returns the sizes before and after in bytes."""
    source, out = Path(source), Path(out)
    if not (source / "bundle.json").exists():
        raise FileNotFoundError(f"{source}: not a bundle (no bundle.json)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        with np.load(source / "model" / "state.npz", allow_pickle=False) as npz:
            atomic_savez(tmp / "model" / "state.npz", compress_state({k: npz[k] for k in npz.files}, weights), compress=True)
        with np.load(source / "histories.npz", allow_pickle=False) as npz:
            atomic_savez(tmp / "histories.npz", {k: npz[k].astype(np.int32) if npz[k].max(initial=0) < 2**31 else npz[k]
                                                 for k in npz.files}, compress=True)
        _rewrite_checksums(tmp, weights)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"before": folder_bytes(source), "after": folder_bytes(out)}


def _rewrite_checksums(folder: Path, weights: str) -> None:
    model_meta = json.loads((folder / "model" / "model.json").read_text())
    model_meta["state_sha256"] = file_sha256(folder / "model" / "state.npz")
    model_meta["compression"] = weights
    atomic_write_text(folder / "model" / "model.json", json.dumps(model_meta, indent=2))
    document = json.loads((folder / "bundle.json").read_text())
    document["sha256"] = {name: file_sha256(folder / name) for name in document["sha256"]}
    document["compression"] = {"weights": weights, "histories": "int32"}
    atomic_write_text(folder / "bundle.json", json.dumps(document, indent=2))
