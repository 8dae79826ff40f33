"""Every event that crosses a topic, as msgspec Structs.

Events are plain JSON so that any Kafka client can read or write them. Each
carries ``v`` (schema version). Optional fields have defaults so that a newer
producer's extra fields never break an older consumer (msgspec ignores unknown
fields) and an older producer's message still decodes.

The human-readable reference of these events lives in ``docs/events.md``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

SCHEMA_VERSION = 1

Role = Literal["system", "user", "assistant"]
Winner = Literal["model_a", "model_b", "tie"]
# Where a call's token counts come from: "reported" by the model (the server's usage, or
# the in-process tokenizer), "counted" by arena_stream.arena.tokens' estimate because the
# model gave none, "" from a producer that predates the field.
TokenSource = Literal["", "reported", "counted"]


class Event(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Base of every event: a schema version and a creation time (unix seconds)."""

    v: int = SCHEMA_VERSION
    ts: float = 0.0


class Message(msgspec.Struct, frozen=True):
    """One turn of a conversation, in the OpenAI chat format."""

    role: Role
    content: str


class PromptIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """A prompt as users publish it on ``arena.prompts``.

    Either ``messages`` (a whole conversation ending with a user turn) or
    ``prompt`` (a single user turn). Validation beyond the shape lives in
    :func:`arena_stream.validation.parse_prompt`.
    """

    id: str
    messages: list[Message] | None = None
    prompt: str | None = None
    category: str | None = None
    metadata: dict[str, Any] = {}


class Prompt(Event, kw_only=True):
    """A validated prompt, normalised to ``messages``; what the players answer."""

    id: str
    messages: list[Message]
    category: str | None = None
    metadata: dict[str, Any] = {}
    digest: str = ""  # sha256 of the canonical content, to spot reused ids
    round: int = 0
    only_players: list[str] = []  # a re-request: only these players answer (empty: all)
    # One admission of this prompt (set by admit). Battle ids hash it, so a prompt re-sent
    # after the dedup window is a new play, never taken for the battles of the old one.
    play: str = ""


class Generation(Event, kw_only=True):
    """One player's answer to one prompt (or the reason it has none)."""

    id: str  # "{prompt_id}/{player}@v{version}"
    prompt_id: str
    player: str  # configured player name, e.g. "target"
    model: str  # rated identity: "target@v2" for versioned targets, else the name
    version: int = 0
    round: int = 0
    messages: list[Message]
    category: str | None = None
    answer: str = ""
    ok: bool = True
    error: str | None = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_source: TokenSource = ""  # see TokenSource; "" with 0 tokens: not known
    attempts: int = 1
    expected_players: list[str] = []  # every player asked for this prompt
    play: str = ""  # the prompt's admission (Prompt.play)
    metadata: dict[str, Any] = {}  # the prompt's, carried for the verifier judge (checks)


class Battle(Event, kw_only=True):
    """Two answers to the same prompt, waiting for the judge."""

    id: str  # deterministic: hash of prompt id and both models
    prompt_id: str
    mode: str
    round: int = 0
    messages: list[Message]
    category: str | None = None
    model_a: str
    model_b: str
    player_a: str
    player_b: str
    answer_a: str
    answer_b: str
    target: str | None = None  # the target model's rated name when it plays
    metadata: dict[str, Any] = {}  # the prompt's, for the verifier judge (checks, reference)
    of: int = 1  # how many battles this prompt formed: a reader knows when it has them all
    tokens_a: int = 0  # completion tokens of each answer, as its server counted (0: unknown)
    tokens_b: int = 0


class Game(msgspec.Struct, kw_only=True):
    """One judge call: the answers in one order, and what the judge said."""

    order: Literal["ab", "ba"]  # "ba": model_b's answer was shown first
    score_a: float  # always the score of model_a's answer, whatever the order
    score_b: float
    raw: str  # the judge's own output, verbatim
    explanation: str = ""
    method: str = "parse"  # "parse", "structured" (schema-bound), "logprobs", "verifier"
    attempts: int = 1
    # Tokens the judge model read and wrote for this game, every call of it (a reply asked
    # again because it had no readable verdict was paid for too); log-prob scoring writes none.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_source: TokenSource = ""


class StyleCounts(msgspec.Struct, kw_only=True):
    """Length and markdown counts of both answers, for style control.

    Computed by :func:`arena_stream.ratings.style.style_counts` with the
    definitions of LMArena's ``conv_metadata`` (``sum_assistant_a_tokens``,
    ``header_count_a``, ``bold_count_a``, ``list_count_a``, ...), summed.
    """

    tokens_a: int
    tokens_b: int
    headers_a: int
    headers_b: int
    bold_a: int
    bold_b: int
    lists_a: int
    lists_b: int


class CheckResult(msgspec.Struct, kw_only=True):
    """One programmatic check of one answer (see ``arena_stream.judges.checks``)."""

    check: str  # the check's name: "words", "ends_with", "reference", a custom check's name
    passed: bool
    detail: str = ""  # what was found, e.g. "412 words, at most 300"


class CheckReport(msgspec.Struct, kw_only=True):
    """Which checks each answer passed, on a Judgment from a verifier or an ensemble.

    The checks see one answer at a time, never its position: a verifier's two
    games are the same results mapped to both orders, so it has no position bias.
    """

    a: list[CheckResult]  # model_a's answer
    b: list[CheckResult]
    passed_a: bool  # every check passed
    passed_b: bool
    decided: bool  # the checks decided this battle (an ensemble may leave it to its LLM)
    version: str = ""  # the check library and configured checks, hashed


class Judgment(Event, kw_only=True):
    """The combined verdict of both games of a battle."""

    battle_id: str
    prompt_id: str
    round: int = 0
    model_a: str
    model_b: str
    player_a: str
    player_b: str
    target: str | None = None
    winner: Winner
    score_a: float  # mean over both games
    score_b: float
    margin: float  # |score_a - score_b|
    games: list[Game]
    rule: str  # the combination rule that decided it, see arena_stream.judge
    judge_model: str
    template_version: str
    messages: list[Message]
    category: str | None = None
    answer_a: str
    answer_b: str
    style: StyleCounts | None = None  # for `leaderboard --style-control`; None: count the answers
    checks: CheckReport | None = None  # verifier / ensemble judges: each answer's checks


class RatingUpdate(Event, kw_only=True):
    """A player's Elo after one judgment; published on ``arena.ratings``."""

    model: str
    rating: float
    battles: int
    battle_id: str
    delta: float
    opponent: str
    outcome: float  # 1 win, 0.5 tie, 0 loss, from this model's side
    wins: int = 0
    losses: int = 0
    ties: int = 0
    judgment_offset: int = -1


class SFTSample(Event, kw_only=True):
    """A battle the target lost clearly: the conversation plus the winner's answer."""

    id: str  # = battle id; one sample per battle
    battle_id: str
    prompt_id: str
    round: int = 0
    messages: list[Message]  # the conversation, ending with the winner's assistant turn
    winner: str
    loser: str
    margin: float


class DPOPair(Event, kw_only=True):
    """A decided battle involving the target: chosen = winner, rejected = loser."""

    id: str
    battle_id: str
    prompt_id: str
    round: int = 0
    prompt: list[Message]  # the conversation up to the last user turn
    chosen: str
    rejected: str
    chosen_model: str
    rejected_model: str
    margin: float


class DeadLetter(Event, kw_only=True):
    """Something that could not be processed, with why, and the original bytes."""

    stage: str  # "intake", "generate", "battle", "judge", "ratings", "route", "train"
    reason: str  # short machine-readable reason, e.g. "invalid_json"
    error: str  # human-readable explanation
    topic: str
    partition: int = -1
    offset: int = -1
    key: str | None = None
    original: str | None = None  # the original message as text when it is UTF-8
    original_b64: str | None = None  # else the exact original bytes, base64
    original_size: int = 0  # bytes of the original message
    original_sha256: str | None = None
    truncated: bool = False  # only the first bytes of a very large original were kept
    ref: str | None = None  # id of the prompt / battle concerned, when known
    attempts: int = 0


class TrainingJob(Event, kw_only=True):
    """A batch of buffered samples for one training run."""

    id: str
    kind: str  # a training kind of arena_stream/arena/kinds.py: "sft", "dpo"
    round: int = 0
    base_model: str  # player name, e.g. "target"
    base_version: int
    sample_ids: list[str]
    topic: str
    offsets: dict[str, list[int]] = {}  # partition -> [first, last] offsets covered
    hyperparameters: dict[str, Any] = {}
    attempt: int = 1


class TrainingProgress(msgspec.Struct, kw_only=True):
    """Where a running training job is, carried by a ``progress`` :class:`JobStatus`.

    Sent on a job's first and last logging steps and otherwise at most every
    ``[training] progress_every_s`` seconds. Speeds and the ETA are measured
    from the start of training; the ETA is the mean time per step so far times
    the steps left. ``null`` where the trainer does not know (no step count yet,
    a trainer that does not count tokens).
    """

    step: int
    max_steps: int = 0  # the job's total optimizer steps (0: unknown)
    epoch: float | None = None
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    elapsed_s: float = 0.0  # since training started (model loading not included)
    eta_s: float | None = None  # seconds of training left, estimated


class JobStatus(Event, kw_only=True):
    """Progress or the end of a training job, published on ``arena.train.jobs``."""

    job_id: str
    # "tick" is the trigger's own clock, for time-based jobs; consumers skip it.
    state: Literal["started", "progress", "finished", "failed", "tick"]
    kind: str = ""
    message: str = ""
    # progress: every number the trainer logged at that step (loss, grad_norm, rewards/...)
    metrics: dict[str, float] = {}
    version: int | None = None  # the version a finished job published
    progress: TrainingProgress | None = None  # state "progress": step, loss, speed, ETA


class ModelVersion(Event, kw_only=True):
    """A trained version of a player, published on ``arena.models``."""

    name: str  # player name
    version: int
    parent_version: int
    path: str  # adapter or checkpoint directory
    adapter: bool = True
    job_id: str
    kind: str
    round: int = 0
    metrics: dict[str, float] = {}
    served_name: str | None = None  # name to ask an OpenAI-compatible server for


class LeaderboardRow(msgspec.Struct, kw_only=True):
    model: str
    rating: float
    lower: float
    upper: float
    battles: int
    rank: int
    # the rating rests on too few battles, or the data do not bound it (never lost / never
    # won); its interval is then a profile-likelihood one, see arena_stream.ratings.bradley_terry
    provisional: bool = False
    note: str = ""  # why it is provisional, e.g. "14 battles (< 30)"
    # "upper" / "lower" / "both": the data set no bound on that side (never lost / never
    # won); the number shown there comes from the weak prior alone
    open_side: str = ""


class LeaderboardSnapshot(Event, kw_only=True):
    """A periodic Bradley-Terry leaderboard with intervals, from the stream."""

    method: str
    judgments: int
    rows: list[LeaderboardRow]


EVENT_TYPES: dict[str, type[Event]] = {
    "prompt": Prompt,
    "generation": Generation,
    "battle": Battle,
    "judgment": Judgment,
    "rating": RatingUpdate,
    "sft": SFTSample,
    "dpo": DPOPair,
    "deadletter": DeadLetter,
    "job": TrainingJob,
    "job_status": JobStatus,
    "model": ModelVersion,
    "leaderboard": LeaderboardSnapshot,
}


class _JobsRecordProbe(msgspec.Struct):
    state: str | None = None


_probe = msgspec.json.Decoder(_JobsRecordProbe)
_job = msgspec.json.Decoder(TrainingJob)
_status = msgspec.json.Decoder(JobStatus)


def decode_jobs_record(data: bytes) -> TrainingJob | JobStatus:
    """The jobs topic carries jobs and their statuses; a status is the one with a ``state``."""
    if _probe.decode(data).state is not None:
        return _status.decode(data)
    return _job.decode(data)
