"""What the arena spends: tokens and dollars per model and per judge, and the budget.

Why here and not in ``ratings/``: ratings are numbers about the models, read
from the judgments log. Cost is about running the arena: the players'
generations (which ratings never read) and the judge's calls, priced by the
arena's own config, and the budget is a control on the flywheel's intake, like
validation. Everything here is a pure function of events and the config, so the
``costs`` command, the stream's budget and any metrics endpoint agree.

**What is counted.** Every record on the generations and judgments topics is a
call that was made and paid for. A record delivered twice by Kafka is a second
call (the stage ran again), so records are counted as they are, not
de-duplicated; battles (the denominator of "cost per battle") are counted once
each. Tokens are the model's own counts where it gave them, else estimates
(:mod:`arena_stream.arena.tokens`); a generation from a producer that recorded
neither is estimated here the same way. Failed calls (a generation that failed,
a battle the judge dead-lettered) are not counted: their tokens are not known.

**Prices** are ``price_in_per_mtok`` / ``price_out_per_mtok`` (US dollars per
million prompt / completion tokens) of each ``[[players]]`` entry and of
``[judge]``; a generation is priced by its player's entry (every version of the
target shares the target's prices), a judgment by ``[judge]`` when its
``judge_model`` is the configured model, alone or in an ensemble
(``verifier+<model>``). A game no model played (a verifier's: ``attempts`` 0)
costs nothing. Anything else (a player since removed from the config, an
earlier judge) is reported with its tokens and flagged as unpriced, never
silently priced at zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from arena_stream.arena.tokens import with_token_counts
from arena_stream.config import Config, ModelConfig
from arena_stream.schemas import Generation, Judgment

Sample = tuple[str, dict[str, str], float]


class Price(msgspec.Struct, frozen=True):
    """US dollars per million prompt (in) and completion (out) tokens."""

    in_per_mtok: float = 0.0
    out_per_mtok: float = 0.0

    @classmethod
    def of(cls, spec: ModelConfig) -> Price:
        return cls(spec.price_in_per_mtok, spec.price_out_per_mtok)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.in_per_mtok + completion_tokens * self.out_per_mtok) / 1e6


class PriceList:
    """The config's prices: players by name, the judge by its model name."""

    def __init__(self, config: Config) -> None:
        self.players = {p.name: Price.of(p) for p in config.players}
        self.judge_model = config.judge.model
        self.judge = Price.of(config.judge)

    def for_player(self, player: str) -> Price | None:
        return self.players.get(player)

    def for_judge(self, judge_model: str) -> Price | None:
        """``[judge]``'s prices for its model, alone or in an ensemble (``verifier+model``)."""
        if judge_model == self.judge_model or judge_model.endswith("+" + self.judge_model):
            return self.judge
        return None


def generation_tokens(gen: Generation) -> tuple[int, int, bool]:
    """``(prompt_tokens, completion_tokens, estimated)`` of a generation (0s when it failed)."""
    if not gen.ok:
        return 0, 0, False
    filled = with_token_counts(gen)
    return filled.prompt_tokens, filled.completion_tokens, filled.token_source == "counted"


def judgment_tokens(j: Judgment) -> tuple[int, int, int, int]:
    """``(prompt_tokens, completion_tokens, estimated_games, unrecorded_games)`` of a judgment.

    Only games a model played count (a verifier's record no call). An unrecorded
    game comes from a judge that predates token counts: it adds 0.
    """
    p = c = estimated = unrecorded = 0
    for g in j.games:
        if g.attempts <= 0:
            continue
        p += g.prompt_tokens
        c += g.completion_tokens
        if g.token_source == "counted":
            estimated += 1
        elif not g.token_source and not (g.prompt_tokens or g.completion_tokens):
            unrecorded += 1
    return p, c, estimated, unrecorded


def judgment_cost(j: Judgment, prices: PriceList) -> tuple[float, bool]:
    """``(cost, priced)``: a judgment no model took part in is free, and priced."""
    p, c, _, _ = judgment_tokens(j)
    if not any(g.attempts > 0 for g in j.games):
        return 0.0, True
    price = prices.for_judge(j.judge_model)
    return (price.cost(p, c), True) if price else (0.0, False)


def _per_battle(cost: float, battles: int) -> float | None:
    return round(cost / battles, 8) if battles else None


class ModelCost(msgspec.Struct, kw_only=True):
    """One rated model's generations (every version of the target is its own row)."""

    model: str
    player: str
    generations: int  # answers given
    failed: int  # generations that failed (not counted: their cost is not known)
    prompt_tokens: int
    completion_tokens: int
    estimated: int  # answers whose token counts are estimates, not the model's own
    priced: bool  # False: its player has no entry in the config
    cost_usd: float
    battles: int  # judged battles it played
    cost_per_battle_usd: float | None


class JudgeCost(msgspec.Struct, kw_only=True):
    """One judge (model and template version)'s calls on the judgments it gave."""

    judge: str
    template_version: str
    judgments: int
    games: int  # games a model played (a verifier's are free and not counted)
    calls: int  # requests, retries included
    prompt_tokens: int
    completion_tokens: int
    estimated_games: int  # games whose token counts are estimates
    unrecorded_games: int  # games from a judge that did not record tokens (counted as 0)
    priced: bool  # False: a model played its games but it is not the configured judge
    cost_usd: float
    battles: int
    cost_per_battle_usd: float | None


class CostReport(msgspec.Struct, kw_only=True):
    models: list[ModelCost]
    judges: list[JudgeCost]
    battles: int  # judged battles, each once
    generation_cost_usd: float
    judge_cost_usd: float
    total_cost_usd: float
    cost_per_battle_usd: float | None  # everything spent / judged battles
    budget_usd: float | None  # None: no budget
    budget_left_usd: float | None
    notes: list[str]  # what the numbers leave out, one line each


class _ModelAcc(msgspec.Struct):
    player: str
    generations: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: int = 0
    cost: float = 0.0


class _JudgeAcc(msgspec.Struct):
    judgments: int = 0
    games: int = 0
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: int = 0
    unrecorded: int = 0
    unpriced: int = 0  # judgments a model played that no price covers
    cost: float = 0.0


class CostTally:
    """Tokens and cost, record by record; :meth:`report` summarises them.

    Memory: one accumulator per model and per judge, and the ids of the battles
    judged (for the per-battle figures).
    """

    def __init__(self, config: Config) -> None:
        self.prices = PriceList(config)
        self.budget = config.budget.usd
        self.models: dict[str, _ModelAcc] = {}
        self.judges: dict[tuple[str, str], _JudgeAcc] = {}
        self.battles: set[str] = set()
        self.model_battles: dict[str, set[str]] = {}
        self.judge_battles: dict[tuple[str, str], set[str]] = {}

    def add_generation(self, gen: Generation) -> float:
        """Count one generation; returns what it cost (0 when unpriced)."""
        acc = self.models.setdefault(gen.model, _ModelAcc(player=gen.player))
        if not gen.ok:
            acc.failed += 1
            return 0.0
        p, c, estimated = generation_tokens(gen)
        price = self.prices.for_player(gen.player)
        cost = price.cost(p, c) if price else 0.0
        acc.generations += 1
        acc.prompt_tokens += p
        acc.completion_tokens += c
        acc.estimated += estimated
        acc.cost += cost
        return cost

    def add_judgment(self, j: Judgment) -> float:
        """Count one judgment; returns what its games cost (0 when unpriced)."""
        key = (j.judge_model, j.template_version)
        acc = self.judges.setdefault(key, _JudgeAcc())
        p, c, estimated, unrecorded = judgment_tokens(j)
        cost, priced = judgment_cost(j, self.prices)
        acc.judgments += 1
        acc.unpriced += not priced
        acc.games += sum(g.attempts > 0 for g in j.games)
        acc.calls += sum(max(0, g.attempts) for g in j.games)
        acc.prompt_tokens += p
        acc.completion_tokens += c
        acc.estimated += estimated
        acc.unrecorded += unrecorded
        acc.cost += cost
        self.battles.add(j.battle_id)
        self.judge_battles.setdefault(key, set()).add(j.battle_id)
        for model in (j.model_a, j.model_b):
            self.model_battles.setdefault(model, set()).add(j.battle_id)
        return cost

    def report(self) -> CostReport:
        models = []
        for model, acc in sorted(self.models.items()):
            battles = len(self.model_battles.get(model, ()))
            models.append(ModelCost(
                model=model, player=acc.player, generations=acc.generations, failed=acc.failed,
                prompt_tokens=acc.prompt_tokens, completion_tokens=acc.completion_tokens,
                estimated=acc.estimated, priced=self.prices.for_player(acc.player) is not None,
                cost_usd=round(acc.cost, 8), battles=battles,
                cost_per_battle_usd=_per_battle(acc.cost, battles),
            ))
        judges = []
        for (judge, version), jacc in sorted(self.judges.items()):
            battles = len(self.judge_battles.get((judge, version), ()))
            judges.append(JudgeCost(
                judge=judge, template_version=version, judgments=jacc.judgments,
                games=jacc.games, calls=jacc.calls, prompt_tokens=jacc.prompt_tokens,
                completion_tokens=jacc.completion_tokens, estimated_games=jacc.estimated,
                unrecorded_games=jacc.unrecorded, priced=jacc.unpriced == 0,
                cost_usd=round(jacc.cost, 8),
                battles=battles, cost_per_battle_usd=_per_battle(jacc.cost, battles),
            ))
        gen_cost = sum(a.cost for a in self.models.values())
        judge_cost = sum(a.cost for a in self.judges.values())
        total = gen_cost + judge_cost
        budget = self.budget if self.budget > 0 else None
        return CostReport(
            models=models, judges=judges, battles=len(self.battles),
            generation_cost_usd=round(gen_cost, 8), judge_cost_usd=round(judge_cost, 8),
            total_cost_usd=round(total, 8),
            cost_per_battle_usd=_per_battle(total, len(self.battles)),
            budget_usd=budget,
            budget_left_usd=None if budget is None else round(max(0.0, budget - total), 8),
            notes=_notes(models, judges),
        )


def _notes(models: list[ModelCost], judges: list[JudgeCost]) -> list[str]:
    notes = []
    unpriced = [m.model for m in models if not m.priced]
    if unpriced:
        notes.append(f"no price for {', '.join(unpriced)} (its player is not in the config): "
                     "counted as free")
    for j in judges:
        if not j.priced:
            notes.append(f"judge {j.judge} is not the configured [judge]: its "
                         f"{j.judgments} judgment(s) are counted as free")
        if j.unrecorded_games:
            notes.append(f"judge {j.judge}: {j.unrecorded_games} game(s) recorded no tokens "
                         "(judged before token counts were recorded)")
    estimated = sum(m.estimated for m in models) + sum(j.estimated_games for j in judges)
    if estimated:
        notes.append(f"{estimated} call(s) reported no token usage; their tokens are "
                     "estimates (arena_stream/arena/tokens.py)")
    if any(m.failed for m in models):
        notes.append("failed generations and judge dead letters are not counted (their "
                     "tokens are not known)")
    return notes


def cost_report(
    config: Config, generations: Iterable[Generation], judgments: Iterable[Judgment]
) -> CostReport:
    """The whole logs' tokens and costs (what ``arena-stream costs`` prints)."""
    tally = CostTally(config)
    for gen in generations:
        tally.add_generation(gen)
    for j in judgments:
        tally.add_judgment(j)
    return tally.report()


def metric_samples(report: CostReport) -> list[Sample]:
    """Prometheus-style samples ``(name, labels, value)`` of a cost report."""
    out: list[Sample] = []
    for m in report.models:
        labels = {"model": m.model, "player": m.player}
        out += [("arena_generation_prompt_tokens_total", labels, float(m.prompt_tokens)),
                ("arena_generation_completion_tokens_total", labels, float(m.completion_tokens)),
                ("arena_generation_cost_usd_total", labels, m.cost_usd)]
    for j in report.judges:
        labels = {"judge": j.judge, "template": j.template_version}
        out += [("arena_judge_prompt_tokens_total", labels, float(j.prompt_tokens)),
                ("arena_judge_completion_tokens_total", labels, float(j.completion_tokens)),
                ("arena_judge_cost_usd_total", labels, j.cost_usd)]
    out.append(("arena_cost_usd_total", {}, report.total_cost_usd))
    if report.budget_usd is not None:
        out.append(("arena_budget_usd", {}, report.budget_usd))
    return out


_generation = msgspec.json.Decoder(Generation)
_judgment = msgspec.json.Decoder(Judgment)


class Budget:
    """A spending limit for the stream: feed it every generation and judgment, ask if spent.

    ``Budget(config)`` reads ``[budget] usd`` (0 or absent: no budget, never
    exhausted) and the prices. The worker tails the generations and judgments
    topics from their beginning into :meth:`add_record` (or decoded events into
    :meth:`add`); once :meth:`exhausted`, the intake stops taking new prompts and
    logs :meth:`why`. Work already admitted still finishes, so the final spend
    passes the limit by what the prompts in flight cost.

    Costs are summed as records arrive (a record delivered twice was paid for
    twice, see the module docstring) in constant memory; nothing is stored, so
    the budget is recomputed from the topics at every start.
    """

    def __init__(self, config: Config) -> None:
        self.limit = config.budget.usd
        self.prices = PriceList(config)
        self.generations_usd = 0.0
        self.judge_usd = 0.0
        self.events = 0

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    @property
    def spent(self) -> float:
        return self.generations_usd + self.judge_usd

    def add(self, event: Generation | Judgment) -> float:
        """Count one event; returns its cost (0 when failed or unpriced)."""
        self.events += 1
        if isinstance(event, Judgment):
            cost, _ = judgment_cost(event, self.prices)
            self.judge_usd += cost
            return cost
        price = self.prices.for_player(event.player)
        p, c, _ = generation_tokens(event)
        cost = price.cost(p, c) if price else 0.0
        self.generations_usd += cost
        return cost

    def add_record(self, key: str, value: bytes | None) -> bool:
        """A raw record of topic ``key`` (``"generations"`` or ``"judgments"``).

        Returns whether it was counted: anything that does not decode is skipped
        (the stream dead-letters bad records; the budget only has to survive them).
        """
        decoder: Any = {"generations": _generation, "judgments": _judgment}.get(key)
        if decoder is None or not value:
            return False
        try:
            self.add(decoder.decode(value))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return True

    def exhausted(self) -> bool:
        return self.enabled and self.spent >= self.limit

    def remaining(self) -> float | None:
        return None if not self.enabled else max(0.0, self.limit - self.spent)

    def why(self) -> str:
        """One line for the log and the intake's message."""
        spent = (f"${self.spent:.4f} of the ${self.limit:.2f} budget (generations "
                 f"${self.generations_usd:.4f}, judge ${self.judge_usd:.4f})")
        if not self.enabled:
            return f"no budget set ([budget] usd); spent ${self.spent:.4f}"
        if self.exhausted():
            return (f"budget spent: {spent}; new prompts are not taken "
                    "(raise [budget] usd and restart to go on)")
        return f"within budget: {spent}"

    def metric_samples(self) -> list[Sample]:
        out: list[Sample] = [
            ("arena_budget_spent_usd", {"part": "generations"}, self.generations_usd),
            ("arena_budget_spent_usd", {"part": "judge"}, self.judge_usd),
        ]
        if self.enabled:
            out += [("arena_budget_usd", {}, self.limit),
                    ("arena_budget_exhausted", {}, 1.0 if self.exhausted() else 0.0)]
        return out
