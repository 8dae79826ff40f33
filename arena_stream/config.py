"""The one TOML configuration file, decoded into msgspec Structs.

Unknown keys, wrong types and values out of range are errors, reported with
the key's place, players by name, and what would be right::

    arena.toml: players[target]: unknown key 'max_token' (did you mean 'max_tokens'?)
    arena.toml: ratings.k = -4.0 is out of range: must be > 0

Ranges are declared on the fields (``msgspec.Meta``), so they are checked on
every decode, written into the JSON Schema that editors use
(:func:`json_schema`), and re-checked by :func:`validate` for configs built in
code. Leaving ``[broker].bootstrap_servers`` out selects the embedded broker.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

# "reference": no model; the player answers with each prompt's metadata.reference
# (arena_stream/models/reference.py), and skips, visibly, prompts that have none.
Backend = Literal["openai", "transformers", "vllm", "reference"]

# Value ranges, named once: they read as the rule in the field declarations below.
Positive = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]  # a probability or a cosine threshold


class ConfigError(ValueError):
    """The configuration file is missing, malformed or inconsistent."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class BrokerConfig(_Section):
    bootstrap_servers: str | None = None  # None: start the embedded broker
    embedded_port: Port = 0  # 0: pick a free port
    # How long one-shot commands (publish, replay, audit, ...) wait for the broker before
    # giving up with an error; services (worker, trainer, followers) wait for ever.
    connect_timeout_s: Positive = 60.0
    topic_prefix: str = "arena."
    partitions: AtLeastOne = 4  # prompts, generations, battles, training buffers
    replication_factor: AtLeastOne = 1
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal[
        "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"
    ] | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None  # the password is read from this variable
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    exactly_once: bool = False  # faust processing_guarantee; correctness never needs it
    # Which broker's quirks to work around: "auto" = tansu when embedded, else kafka.
    flavor: Literal["auto", "kafka", "tansu"] = "auto"
    # How long the group waits for a silent worker before its partitions move to the
    # others (consumer-group session and rebalance timeout): the pause after a crash.
    # None: 6 s on the embedded broker, faust's 60 s on Kafka. Kafka refuses values
    # outside its group.min/max.session.timeout.ms (6 s .. 30 min by default).
    session_timeout_s: Positive | None = None


class ModelConfig(_Section):
    """What players and the judge share: where the model is and how to decode."""

    backend: Backend = "transformers"
    model: str = "smollm2"  # served name, local path, hub id (OWNER/NAME), or "smollm2"
    base_url: str | None = None  # openai backend: ".../v1"
    api_key_env: str | None = None  # name of the variable holding the API key
    system_prompt: str | None = None
    temperature: NonNegative = 0.0
    top_p: Fraction = 1.0
    max_tokens: AtLeastOne = 256
    timeout_s: Positive = 120.0
    startup_timeout_s: NonNegative = 30.0  # how long a server may take to come up at start
    max_retries: Count = 3
    backoff_s: NonNegative = 0.5  # first retry delay; doubles, capped, with jitter
    backoff_max_s: NonNegative = 20.0
    concurrency: AtLeastOne = 8  # in-flight requests to this model at most
    seed: int | None = None
    extra_body: dict[str, Any] = {}  # passed through to OpenAI-compatible servers
    quantize: bool = False  # transformers backend: int8 linear layers (CPU inference only)
    # US dollars per million prompt (input) and completion (output) tokens, for `costs`
    # and [budget]; 0: free (a local model, or not tracked).
    price_in_per_mtok: NonNegative = 0.0
    price_out_per_mtok: NonNegative = 0.0


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
    max_tokens: AtLeastOne = 384
    # Ask an OpenAI-compatible judge for a JSON-schema-constrained verdict (response_format);
    # a server that refuses it is asked in free text from then on.
    structured: bool = True
    # Each answer shown to the judge is clipped to this many characters (start and end
    # kept, the cut marked), so no answer can push the instructions out of the judge's
    # context. 0: never clipped.
    max_answer_chars: Count = 12_000
    # The template that asks for a prompt's 0-10 difficulty (testset build): a file with
    # the {conversation} and {context} fields; None: the built-in one.
    difficulty_template: str | None = None
    # Judge health (arena_stream.ratings.judge_quality): warn when the two position-swapped
    # games name the same winner in fewer than min_agreement of the last agreement_window
    # battles, once at least agreement_min_judgments of them are in. 0: never warn.
    min_agreement: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.6
    agreement_min_judgments: AtLeastOne = 50
    agreement_window: AtLeastOne = 500


class BattlesConfig(_Section):
    mode: Literal["target-vs-competitors", "round-robin"] = "target-vs-competitors"
    deadline_s: Positive = 600.0  # form battles with whoever answered by then
    # A prompt still missing answers this long after its first one (an event lost in a
    # worker's shutdown) is asked again of the missing players, up to sweep_retries
    # times; then its battles form with whoever answered. 0: deadline_s + 60.
    sweep_after_s: NonNegative = 0.0
    sweep_retries: Count = 2
    tie_margin: NonNegative = 0.0  # |mean score difference| <= this counts as a tie


class RatingsConfig(_Section):
    k: Positive = 4.0
    scale: Positive = 400.0
    base: Annotated[float, msgspec.Meta(gt=1)] = 10.0
    initial: float = 1000.0
    snapshot_every: Count = 50  # judgments between Bradley-Terry snapshots (0: never)


class RoutingConfig(_Section):
    sft_margin: NonNegative = 3.0
    dpo_margin: NonNegative = 2.0


class LimitsConfig(_Section):
    max_prompt_bytes: AtLeastOne = 256_000
    max_turns: AtLeastOne = 64
    max_id_chars: AtLeastOne = 256
    # The largest record the worker sends or writes to a table: the broker's and the
    # producer's 1 MiB limit, less room for headers. Raise it only with both.
    max_record_bytes: AtLeastOne = 1_000_000


class DecontaminationConfig(_Section):
    """Keep test-set prompts out of the stream, so they never become training data."""

    against: list[str] = []  # JSONL test sets (testset build output); empty: off
    threshold: Fraction = 0.85  # cosine similarity (all-MiniLM-L6-v2) at which a prompt is rejected


class TrainingConfig(_Section):
    enabled: bool = True
    sft_batch: AtLeastOne = 64
    dpo_batch: AtLeastOne = 64
    max_wait_s: NonNegative = 0.0  # >0: fire a partial batch after this long (time trigger)
    min_batch: AtLeastOne = 1  # a time-triggered job needs at least this many samples
    # The order jobs fire in, repeated: each entry is a kind of arena_stream/arena/kinds.py.
    schedule: list[str] = msgspec.field(default_factory=lambda: ["sft", "dpo"])
    model_dir: str = ".arena-stream/models"
    # The checkpoint the target's versions are trained from (a path, a hub id, "smollm2").
    # Default: the target's `model` when it is in-process (transformers / vllm);
    # set it when the target is served over HTTP under another name.
    base_checkpoint: str | None = None
    lora: bool = True
    lora_r: AtLeastOne = 8
    lora_alpha: AtLeastOne = 16
    lora_dropout: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    learning_rate: Positive = 2e-4
    epochs: Positive = 1.0
    max_steps: Annotated[int, msgspec.Meta(ge=-1)] = -1  # -1: run `epochs`; else >= 1
    batch_size: AtLeastOne = 4
    gradient_accumulation_steps: AtLeastOne = 1
    max_length: Annotated[int, msgspec.Meta(ge=16)] = 512
    dpo_beta: Positive = 0.1
    # DPO's own step size (unset: learning_rate). Preference optimisation wants far smaller
    # steps than SFT (TRL's defaults: 1e-6 against SFT's 2e-5); at SFT's rate the policy
    # runs away from its reference within a few steps and unlearns what SFT taught.
    dpo_learning_rate: Positive | None = None
    seed: Count = 0
    # Experiment tracking, as TRL takes it: "none", "all", an integration ("tensorboard",
    # "wandb", "mlflow", "comet_ml", ...) or a list of them. Each run is named after its job;
    # TensorBoard writes under the version's directory (runs/) unless
    # TENSORBOARD_LOGGING_DIR says otherwise; W&B / MLflow read their usual variables.
    report_to: str | list[str] = "none"
    # Other SFTConfig / DPOConfig arguments, passed through to every job (checked at load:
    # an unknown name, or one arena-stream sets itself, is an error).
    trl_args: dict[str, Any] = {}
    # Arguments for one kind's jobs only: [training.trl_kind_args.dpo] label_smoothing = 0.1
    trl_kind_args: dict[str, dict[str, Any]] = {}
    # A running job publishes its progress (step, loss, tokens/s, ETA) on the jobs topic at
    # most this often; its first and last steps always.
    progress_every_s: NonNegative = 10.0


class StateConfig(_Section):
    """How long the stages' tables remember finished work (see each table's Retention)."""

    # A prompt id admitted within this window is recognised: a re-send is dropped, a reused
    # id with other content refused. After it, the same id is a new prompt (a new play).
    dedup_window_s: Positive = 7 * 86400.0
    # Finished work (a prompt whose battles formed, a battle judged, a judgment counted or
    # routed, a sample buffered) is remembered this long after its input offset is committed.
    done_retention_s: Positive = 3600.0


class BudgetConfig(_Section):
    """A spending limit: once spent, the intake stops taking new prompts (see arena/costs.py)."""

    usd: NonNegative = 0.0  # 0: no budget


class EvaluationConfig(_Section):
    """``[evaluation]``: the held-out set every new target version plays when published.

    ``heldout`` is a JSONL prompt file (``bundled:NAME`` for a file shipped in
    arena_stream/data). Its prompts are played under ids ``eval:v<N>:<id>``: their
    battles are rated apart (Bradley-Terry, 95% bootstrap intervals, one rating per
    version) and never become training data. List the same file in
    ``[decontamination] against`` so that no training prompt resembles it.
    """

    heldout: str | None = None  # None: no held-out evaluation
    rounds: AtLeastOne = 200  # bootstrap rounds of the held-out ratings


class WebConfig(_Section):
    """The worker's HTTP server: the live page, and /metrics, /healthz, /readyz."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 6066
    page: bool = True  # false: only the operators' endpoints


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
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    web: WebConfig = msgspec.field(default_factory=WebConfig)
    evaluation: EvaluationConfig = msgspec.field(default_factory=EvaluationConfig)
    budget: BudgetConfig = msgspec.field(default_factory=BudgetConfig)
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
    """Check what the types cannot, and the ranges again for a config built in code.

    Every problem is reported, one line each, in one :class:`ConfigError`.
    """
    # A config decoded from TOML had its ranges checked already; one built or changed in
    # code (msgspec.structs.replace) had not. The round trip is cheap and says where.
    problems = _decode_problems(msgspec.to_builtins(config))[1] or _problems(config)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def _problems(config: Config) -> list[str]:
    """What the field types cannot express: roles, names, backends and pairs of values."""
    problems: list[str] = []
    names = [p.name for p in config.players]
    if not config.players:
        return ["at least one [[players]] entry is required"]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"player names must be unique, repeated: {', '.join(dupes)}")
    for name in names:
        if not name or any(c in name for c in "@/ \t"):
            problems.append(
                f"player name {name!r} must be non-empty without '@', '/' or spaces"
            )
    targets = [p.name for p in config.players if p.role == "target"]
    problems += [f'players[{p.name}]: a target cannot have backend "reference" (it is trained)'
                 for p in config.players if p.role == "target" and p.backend == "reference"]
    if len(targets) != 1:
        problems.append(
            f'exactly one player must have role = "target", found {len(targets)}'
        )
    if len(config.players) < 2:
        problems.append("battles need at least two players")
    for spec, where in [
        *((p, f"players[{p.name}]") for p in config.players),
        (config.judge, "judge"),
    ]:
        if spec.backend == "openai" and not spec.base_url:
            problems.append(f'{where}: backend "openai" needs base_url')
        if spec.backend == "reference" and spec is config.judge:
            problems.append('judge: backend "reference" is for players (it answers with '
                            "each prompt's metadata.reference); a judge needs a model")
        if spec.backoff_max_s < spec.backoff_s:
            problems.append(f"{where}: backoff_max_s ({spec.backoff_max_s:g}) must be >= "
                            f"backoff_s ({spec.backoff_s:g})")
    if config.judge.agreement_min_judgments > config.judge.agreement_window:
        problems.append(f"judge: agreement_min_judgments ({config.judge.agreement_min_judgments})"
                        f" cannot exceed agreement_window ({config.judge.agreement_window})")
    if config.judge.scoring == "logprobs" and config.judge.backend != "transformers":
        problems.append('judge: scoring = "logprobs" needs backend = "transformers" '
                        '(use "parse" or "auto" for a server)')
    training = config.training
    if not training.schedule:
        problems.append("training.schedule must name at least one kind")
    from arena_stream.arena.kinds import UnknownKind, kind

    for name in training.schedule:
        try:
            kind(name)
        except UnknownKind as exc:
            problems.append(f"training.schedule: {exc}")
    if training.max_steps == 0:
        problems.append("training.max_steps = 0 is out of range: must be -1 (run `epochs`) "
                        "or >= 1")
    if training.report_to != "none" or training.trl_args or training.trl_kind_args:
        from arena_stream.trainers.arguments import report_to_problems, trl_arg_problems

        problems += report_to_problems(training.report_to)
        problems += trl_arg_problems(training.trl_args, training.trl_kind_args,
                                     training.schedule)
    broker = config.broker
    if broker.security_protocol.startswith("SASL") and not broker.sasl_mechanism:
        problems.append(f"broker: security_protocol = {broker.security_protocol!r} needs "
                        "sasl_mechanism")
    if broker.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
        broker.sasl_username and broker.sasl_password_env
    ):
        problems.append(f"broker: sasl_mechanism = {broker.sasl_mechanism!r} needs "
                        "sasl_username and sasl_password_env")
    return problems


# -- explaining decode errors -----------------------------------------------------------------

_AT = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]+)`")
_MAX_PROBLEMS = 20


def _decode_problems(document: Any) -> tuple[Config | None, list[str]]:
    """Decode ``document``; on errors, drop the offending key and go on, to list them all.

    msgspec stops at the first error. A user with three typos should not need
    three runs, so each bad key is removed (its default then applies) and the
    decode tried again, up to a limit. The config returned, when there is one,
    has the offending keys at their defaults: good enough to check the rest with
    (``arena-stream check``), never to run with.
    """
    import copy

    problems: list[str] = []
    work = copy.deepcopy(document)
    config: Config | None = None
    for _ in range(_MAX_PROBLEMS):
        try:
            config = msgspec.convert(work, type=Config)
            break
        except msgspec.ValidationError as exc:
            line, steps = _explain(str(exc), document)
            problems.append(line)
            if steps is None or not _drop(work, steps):
                break  # nothing to remove (a missing key): later problems stay unknown
    problems += _non_finite(work)
    return config, problems


def _explain(message: str, document: Any) -> tuple[str, list[str | int] | None]:
    """One readable line for a msgspec error, and the path of the key to drop to go on."""
    match = _AT.match(message)
    what, path = (match["what"], match["path"]) if match else (message, None)
    steps: list[str | int] = [
        m[1] if m[1] is not None else int(m[2]) for m in _STEP.finditer((path or "$")[1:])
    ]
    where = _where(steps, document)
    unknown = _UNKNOWN.match(what)
    if unknown:
        key = unknown["key"]
        fields = _fields_at(steps)
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else (
            f" (known keys: {', '.join(fields)})" if fields else "")
        return f"{where or 'top level'}: unknown key {key!r}{hint}", [*steps, key]
    missing = _MISSING.match(what)
    if missing:
        return f"{where or 'top level'}: missing required key {missing['key']!r}", None
    info = _type_at(steps)
    value = _value_at(document, steps)
    bounds = _bounds(info)
    if bounds and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{where} = {value!r} is out of range: must be {bounds}", steps
    values = _choices(info)
    if values and isinstance(value, str):
        return f"{where} = {value!r} is not one of: {', '.join(map(repr, values))}", steps
    return f"{where}: {what}", steps


def _where(steps: list[str | int], document: Any) -> str:
    """``players[target].max_tokens`` for ``$.players[0].max_tokens``: players by name."""
    out = ""
    node = document
    for step in steps:
        if isinstance(step, int):
            item = node[step] if isinstance(node, list) and step < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            out += f"[{name}]" if isinstance(name, str) and name else f"[{step}]"
            node = item
        else:
            out += f".{step}" if out else step
            node = node.get(step) if isinstance(node, dict) else None
    return out


def _info_at(steps: list[str | int]) -> Any:
    import msgspec.inspect as mi

    info: Any = mi.type_info(Config)
    for step in steps:
        info = _unwrap(info)
        if isinstance(step, int) and isinstance(info, mi.ListType):
            info = info.item_type
        elif isinstance(step, str) and isinstance(info, mi.StructType):
            info = next((f.type for f in info.fields if f.encode_name == step), None)
        else:
            return None
    return info


def _unwrap(info: Any) -> Any:
    """The struct or list inside an optional type (``X | None``)."""
    import msgspec.inspect as mi

    if isinstance(info, mi.UnionType):
        inner = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return inner[0] if len(inner) == 1 else info
    return info


def _fields_at(steps: list[str | int]) -> list[str]:
    import msgspec.inspect as mi

    info = _unwrap(_info_at(steps))
    return [f.encode_name for f in info.fields] if isinstance(info, mi.StructType) else []


def _type_at(steps: list[str | int]) -> Any:
    return _unwrap(_info_at(steps))


def _bounds(info: Any) -> str:
    """``> 0``, ``>= 0 and < 1``: a field's declared range in words, or ``""``."""
    parts = []
    for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        bound = getattr(info, attr, None)
        if bound is not None:
            parts.append(f"{op} {bound:g}")
    return " and ".join(parts)


def _choices(info: Any) -> tuple[Any, ...]:
    import msgspec.inspect as mi

    return info.values if isinstance(info, mi.LiteralType) else ()


def _value_at(document: Any, steps: list[str | int]) -> Any:
    node = document
    for step in steps:
        if isinstance(step, int):
            node = node[step] if isinstance(node, list) and step < len(node) else None
        else:
            node = node.get(step) if isinstance(node, dict) else None
    return node


def _drop(document: Any, steps: list[str | int]) -> bool:
    """Remove the key at ``steps`` (its default applies); False when there is none."""
    if not steps or not isinstance(steps[-1], str):
        return False
    parent = _value_at(document, steps[:-1])
    if isinstance(parent, dict) and steps[-1] in parent:
        del parent[steps[-1]]
        return True
    return False


def _non_finite(root: Any) -> list[str]:
    """``inf`` and ``nan`` are valid TOML floats, and never a valid setting here."""
    found: list[str] = []

    def walk(node: Any, steps: list[str | int]) -> None:
        if isinstance(node, float) and not math.isfinite(node):
            found.append(f"{_where(steps, root)} = {node!r} must be a finite number")
        elif isinstance(node, dict):
            for key, value in node.items():
                # passed through to servers / TRL as is
                if key not in ("extra_body", "trl_args", "trl_kind_args"):
                    walk(value, [*steps, key])
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, [*steps, i])

    walk(root, [])
    return found


def parse(text: str) -> tuple[Config | None, list[str]]:
    """Every problem of a TOML config, one line each, and the config as far as it is usable.

    With problems, the config (if any) has the offending keys at their defaults,
    so that ``arena-stream check`` can go on to check secrets, broker and models
    in the same run; :func:`loads` refuses it.
    """
    try:
        document = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        return None, [f"not valid TOML: {exc}"]
    config, problems = _decode_problems(document)
    if config is not None:
        semantic = _problems(config)
        problems += semantic
        if semantic:
            config = None  # no target, no players: nothing sensible to check further
    return config, problems


def loads(text: str, *, source: str = "<config>") -> Config:
    """Decode and check a TOML config; every problem is one line of the :class:`ConfigError`."""
    config, problems = parse(text)
    if problems or config is None:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return config


def json_schema() -> dict[str, Any]:
    """The config's JSON Schema, for editors (Taplo / Even Better TOML: ``#:schema FILE``)."""
    schema = msgspec.json.schema(Config)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "arena-stream configuration",
        "description": "The TOML file given to arena-stream with --config; see "
        "arena_stream/config.py. Generated by `arena-stream check --schema`.",
        **schema,
    }


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
