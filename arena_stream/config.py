"""The one TOML configuration file, decoded into msgspec Structs.

Unknown keys and wrong types are errors, reported with the path of the
offending key (``ConfigError: Expected `float`, got `str` - at `$.routing.sft_margin```).
Leaving ``[broker].bootstrap_servers`` out selects the embedded broker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import msgspec

Backend = Literal["openai", "transformers", "vllm"]


class ConfigError(ValueError):
    """The configuration file is missing, malformed or inconsistent."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class BrokerConfig(_Section):
    bootstrap_servers: str | None = None  # None: start the embedded broker
    embedded_port: int = 0  # 0: pick a free port
    # How long one-shot commands (publish, replay, audit, ...) wait for the broker before
    # giving up with an error; services (worker, trainer, followers) wait for ever.
    connect_timeout_s: float = 60.0
    topic_prefix: str = "arena."
    partitions: int = 4  # prompts, generations, battles, training buffers
    replication_factor: int = 1
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password_env: str | None = None  # the password is read from this variable
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    exactly_once: bool = False  # faust processing_guarantee; correctness never needs it
    # Which broker's quirks to work around: "auto" = tansu when embedded, else kafka.
    flavor: Literal["auto", "kafka", "tansu"] = "auto"


class ModelConfig(_Section):
    """What players and the judge share: where the model is and how to decode."""

    backend: Backend = "transformers"
    model: str = "smollm2"  # served name, local path, or "smollm2" (bundled)
    base_url: str | None = None  # openai backend: ".../v1"
    api_key_env: str | None = None  # name of the variable holding the API key
    system_prompt: str | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    timeout_s: float = 120.0
    startup_timeout_s: float = 30.0  # how long a server may take to come up at start
    max_retries: int = 3
    backoff_s: float = 0.5  # first retry delay; doubles, capped, with jitter
    backoff_max_s: float = 20.0
    concurrency: int = 8  # in-flight requests to this model at most
    seed: int | None = None
    extra_body: dict[str, Any] = {}  # passed through to OpenAI-compatible servers
    quantize: bool = False  # transformers backend: int8 linear layers (CPU inference only)


class PlayerConfig(ModelConfig, kw_only=True):
    name: str
    role: Literal["target", "competitor"] = "competitor"


class VerifierConfig(_Section):
    """``[judge.verifier]``: programmatic checks (see ``arena_stream.judges.checks``)."""

    # Checks applied to every prompt's answers, before the prompt's own metadata.checks.
    checks: list[dict[str, Any]] = []
    # Your own checks by name: {no_emoji = "my_checks:no_emoji"}; a prompt's metadata
    # then asks for {"check": "no_emoji"}.
    custom: dict[str, str] = {}
    # Modules whose functions a prompt's metadata may name directly
    # ({"check": "custom", "function": "my_checks:fn"}). Empty: none, because a prompt
    # naming any importable function would let whoever publishes prompts run code.
    modules: list[str] = []
    # An answer's score: "fraction" = 1 + 9 x the share of its checks passed; "all" = 10
    # when every check passes, else 1.
    scoring: Literal["fraction", "all"] = "fraction"


class EnsembleConfig(_Section):
    """``[judge.ensemble]``: how the verifier and the LLM judge share a battle."""

    # "verifier-first": the verifier decides when exactly one answer passes all of its
    # checks, the LLM judge otherwise (it is not called when the verifier decides).
    # "llm-first": the LLM judge decides; the verifier breaks its ties and stands in
    # when the LLM judge fails.
    rule: Literal["verifier-first", "llm-first"] = "verifier-first"


class JudgeConfig(ModelConfig, kw_only=True):
    # "model": a model judges (the settings above); "verifier": programmatic checks
    # only, no model; "ensemble": both, combined by [judge.ensemble] rule.
    kind: Literal["model", "verifier", "ensemble"] = "model"
    verifier: VerifierConfig = msgspec.field(default_factory=VerifierConfig)
    ensemble: EnsembleConfig = msgspec.field(default_factory=EnsembleConfig)
    template: str | None = None  # "default", "compact" (built in) or a template file's path
    template_version: str | None = None
    scoring: Literal["auto", "parse", "logprobs"] = "auto"  # logprobs: in-process only
    max_tokens: int = 384
    # Ask an OpenAI-compatible judge for a JSON-schema-constrained verdict (response_format);
    # a server that refuses it is asked in free text from then on.
    structured: bool = True
    # Each answer shown to the judge is clipped to this many characters (start and end
    # kept, the cut marked), so no answer can push the instructions out of the judge's
    # context. 0: never clipped.
    max_answer_chars: int = 12_000
    # The template that asks for a prompt's 0-10 difficulty (testset build): a file with
    # the {conversation} and {context} fields; None: the built-in one.
    difficulty_template: str | None = None


class BattlesConfig(_Section):
    mode: Literal["target-vs-competitors", "round-robin"] = "target-vs-competitors"
    deadline_s: float = 600.0  # form battles with whoever answered by then
    # A prompt still missing answers this long after its first one (an event lost in a
    # worker's shutdown) is asked again of the missing players, up to sweep_retries
    # times; then its battles form with whoever answered. 0: deadline_s + 60.
    sweep_after_s: float = 0.0
    sweep_retries: int = 2
    tie_margin: float = 0.0  # |mean score difference| <= this counts as a tie


class RatingsConfig(_Section):
    k: float = 4.0
    scale: float = 400.0
    base: float = 10.0
    initial: float = 1000.0
    snapshot_every: int = 50  # judgments between Bradley-Terry snapshots (0: never)


class RoutingConfig(_Section):
    sft_margin: float = 3.0
    dpo_margin: float = 2.0


class LimitsConfig(_Section):
    max_prompt_bytes: int = 256_000
    max_turns: int = 64
    max_id_chars: int = 256
    # The largest record the worker sends or writes to a table: the broker's and the
    # producer's 1 MiB limit, less room for headers. Raise it only with both.
    max_record_bytes: int = 1_000_000


class DecontaminationConfig(_Section):
    """Keep test-set prompts out of the stream, so they never become training data."""

    against: list[str] = []  # JSONL test sets (testset build output); empty: off
    threshold: float = 0.85  # cosine similarity (all-MiniLM-L6-v2) at which a prompt is rejected


class TrainingConfig(_Section):
    enabled: bool = True
    sft_batch: int = 64
    dpo_batch: int = 64
    max_wait_s: float = 0.0  # >0: fire a partial batch after this long (time trigger)
    min_batch: int = 1  # a time-triggered job needs at least this many samples
    # The order jobs fire in, repeated: each entry is a kind of arena_stream/arena/kinds.py.
    schedule: list[str] = msgspec.field(default_factory=lambda: ["sft", "dpo"])
    model_dir: str = ".arena-stream/models"
    # The checkpoint the target's versions are trained from (a path, or "smollm2").
    # Default: the target's `model` when it is in-process (transformers / vllm);
    # set it when the target is served over HTTP under another name.
    base_checkpoint: str | None = None
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    dpo_beta: float = 0.1
    seed: int = 0


class WebConfig(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 6066


class Config(_Section):
    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    players: list[PlayerConfig] = []
    judge: JudgeConfig = msgspec.field(default_factory=JudgeConfig)
    battles: BattlesConfig = msgspec.field(default_factory=BattlesConfig)
    ratings: RatingsConfig = msgspec.field(default_factory=RatingsConfig)
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    decontamination: DecontaminationConfig = msgspec.field(default_factory=DecontaminationConfig)
    training: TrainingConfig = msgspec.field(default_factory=TrainingConfig)
    web: WebConfig = msgspec.field(default_factory=WebConfig)
    app_id: str = "arena-stream"
    data_dir: str = ".arena-stream"

    @property
    def target(self) -> PlayerConfig:
        return next(p for p in self.players if p.role == "target")

    @property
    def competitors(self) -> list[PlayerConfig]:
        return [p for p in self.players if p.role != "target"]

    def player(self, name: str) -> PlayerConfig:
        for p in self.players:
            if p.name == name:
                return p
        raise KeyError(name)


def validate(config: Config) -> Config:
    """Check what the types cannot: one target, unique names, usable backends."""
    names = [p.name for p in config.players]
    if not config.players:
        raise ConfigError("at least one [[players]] entry is required")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"player names must be unique, repeated: {', '.join(dupes)}")
    for name in names:
        if not name or any(c in name for c in "@/ \t"):
            raise ConfigError(f"player name {name!r} must be non-empty without '@', '/' or spaces")
    targets = [p.name for p in config.players if p.role == "target"]
    if len(targets) != 1:
        raise ConfigError(f'exactly one player must have role = "target", found {len(targets)}')
    if len(config.players) < 2:
        raise ConfigError("battles need at least two players")
    for spec, where in [
        *((p, f"players.{p.name}") for p in config.players),
        (config.judge, "judge"),
    ]:
        if spec.backend == "openai" and not spec.base_url:
            raise ConfigError(f'{where}: backend "openai" needs base_url')
        if spec.concurrency < 1 or spec.max_retries < 0 or spec.max_tokens < 1:
            raise ConfigError(f"{where}: concurrency and max_tokens must be >= 1, max_retries >= 0")
    if config.judge.max_answer_chars < 0:
        raise ConfigError("judge.max_answer_chars must be >= 0 (0: never clipped)")
    if config.broker.partitions < 1:
        raise ConfigError("broker.partitions must be >= 1")
    if not config.training.schedule:
        raise ConfigError("training.schedule must name at least one kind")
    from arena_stream.arena.kinds import UnknownKind, kind

    for name in config.training.schedule:
        try:
            kind(name)
        except UnknownKind as exc:
            raise ConfigError(f"training.schedule: {exc}") from None
    return config


def loads(text: str, *, source: str = "<config>") -> Config:
    try:
        config = msgspec.toml.decode(text, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return validate(config)


def load(path: str | os.PathLike[str] | None) -> Config:
    """Load a config file; ``None`` gives the embedded default (bundled SmolLM2)."""
    if path is None:
        return default_config()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    return loads(p.read_text(encoding="utf-8"), source=str(p))


def default_config() -> Config:
    """The embedded default: SmolLM2-135M as target, two competitors and the judge."""
    from importlib.resources import files

    text = files("arena_stream").joinpath("data", "default.toml").read_text(encoding="utf-8")
    return loads(text, source="embedded default")


def env_secret(variable: str | None, what: str) -> str | None:
    """A secret read from the environment variable the config names (never from the file).

    Surrounding whitespace is dropped: a key read from a mounted secret file usually
    ends with a newline, which an HTTP header cannot carry. A value with a control
    character inside is refused rather than sent.
    """
    if not variable:
        return None
    raw = os.environ.get(variable)
    if raw is None:
        raise ConfigError(f"environment variable {variable} ({what}) is not set")
    value = raw.strip()
    if not value:
        raise ConfigError(f"environment variable {variable} ({what}) is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"environment variable {variable} ({what}) holds a control character")
    return value


def api_key(spec: ModelConfig) -> str | None:
    """The API key named by ``api_key_env``, read from the environment at call time."""
    return env_secret(spec.api_key_env, "api_key_env")


def secrets(config: Config) -> list[str]:
    """Every secret value the config points at, for log redaction."""
    names = [p.api_key_env for p in config.players] + [
        config.judge.api_key_env,
        config.broker.sasl_password_env,
    ]
    return [os.environ[n] for n in names if n and os.environ.get(n, "").strip()]
