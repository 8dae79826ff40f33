"""The reference player, the held-out evaluation stage, lineage and the report's verdict.

All plain functions, without a broker: the generate stage with the reference
client, the evaluate stage's prompts and ids, route and intake on evaluation
prompts, :func:`build_lineage` on hand-made events (what ``versions --json``
prints) and the words the report uses when a run did or did not improve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from arena_stream.arena.lineage import build_lineage
from arena_stream.cli.commands.versions import lineage_lines
from arena_stream.config import ConfigError, LimitsConfig, ModelConfig, RoutingConfig, loads
from arena_stream.datasets.prompts import bundled_path, read_prompts
from arena_stream.judges import checks
from arena_stream.models.clients import build_client
from arena_stream.models.reference import ReferenceClient, reference_answer
from arena_stream.schemas import (
    CheckReport,
    DPOPair,
    Game,
    Judgment,
    Message,
    ModelVersion,
    Prompt,
    RatingUpdate,
    SFTSample,
    TrainingJob,
)
from arena_stream.streams.stages import collect, evaluate, generate, intake, route
from arena_stream.streams.stages.base import MemoryStore
from tests.test_stages import Offsets, clock

# -- the reference player --------------------------------------------------------------------


@pytest.mark.parametrize(("metadata", "answer"), [
    ({"reference": "Paris."}, "Paris."),
    ({"reference": ["", "  ", "Paris.", "paris"]}, "Paris."),  # a list: its first usable one
    ({"reference": 42}, "42"),
    ({"reference": [3.5]}, "3.5"),
    ({}, None),
    ({"reference": ""}, None),
    ({"reference": None}, None),
    ({"reference": True}, None),
    ({"reference": {"text": "x"}}, None),
    ({"reference": []}, None),
])
def test_reference_answer_rules(metadata: dict[str, Any], answer: str | None) -> None:
    assert reference_answer(metadata) == answer


def reference_ctx() -> generate.GenerateContext:
    client = build_client(ModelConfig(backend="reference"), "reference")
    assert isinstance(client, ReferenceClient)
    return generate.GenerateContext(player="reference", client=client, rated_name="reference",
                                    expected_players=["t", "reference"], deadline_s=30,
                                    now=clock())


async def test_reference_player_answers_with_the_reference() -> None:
    rec = Offsets()
    p = Prompt(id="p1", messages=[Message("user", "Capital of France?")],
               metadata={"reference": ["Paris.", "Paris"]})
    out = await generate.generate(rec("accepted", p), reference_ctx())
    [gen] = out.events("generations")
    assert gen.ok and gen.answer == "Paris." and gen.model == "reference"
    assert gen.attempts == 0 and gen.completion_tokens > 0  # counted, never a call
    assert out.dead_letters() == [] and out.counters["generate.reference"] == 1


async def test_reference_player_skips_a_prompt_without_reference_visibly() -> None:
    rec = Offsets()
    p = Prompt(id="p2", messages=[Message("user", "Tell a joke.")])
    out = await generate.generate(rec("accepted", p), reference_ctx())
    [gen] = out.events("generations")
    # A failed generation (collect does not wait for it), a counter, and no dead letter.
    assert not gen.ok and gen.error.startswith("no_reference")
    assert out.counters["generate.reference.skipped"] == 1 and out.dead_letters() == []
    # collect forms the target's other battles without the reference
    store = MemoryStore()
    ctx = collect.CollectContext(mode="target-vs-competitors", target_player="t",
                                 expected_players=["t", "c", "reference"], now=clock())
    for g in (msgspec.structs.replace(gen, expected_players=["t", "c", "reference"]),
              gen_of("t", "p2"), gen_of("c", "p2")):
        out = store.apply(collect.collect(rec("generations", g), store, ctx))
    [battle] = out.events("battles")
    assert {battle.player_a, battle.player_b} == {"t", "c"} and out.dead_letters() == []


def gen_of(player: str, pid: str) -> Any:
    from arena_stream.schemas import Generation

    return Generation(id=f"{pid}/{player}", prompt_id=pid, player=player, model=player,
                      messages=[Message("user", "q")], answer=f"answer of {player}",
                      expected_players=["t", "c", "reference"])


async def test_reference_client_refuses_conversations_and_versions() -> None:
    from arena_stream.models.retry import CallFailed

    client = ReferenceClient(ModelConfig(backend="reference"), "reference")
    await client.ready()
    with pytest.raises(CallFailed):
        await client.complete([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="no versions"):
        await client.use_version(1, "/x")


def test_a_reference_target_or_judge_is_a_config_error() -> None:
    text = """
[[players]]
name = "t"
role = "target"
backend = "reference"
[[players]]
name = "c"
[judge]
backend = "reference"
"""
    with pytest.raises(ConfigError) as err:
        loads(text)
    assert "a target cannot have backend" in str(err.value)
    assert 'judge: backend "reference" is for players' in str(err.value)


# -- the held-out evaluation stage -----------------------------------------------------------


def heldout() -> list[Prompt]:
    return [Prompt(id=f"h{i}", messages=[Message("user", f"q{i}. Reply in capitals.")],
                   metadata={"checks": [{"check": "case", "mode": "upper"}]})
            for i in range(3)]


def test_evaluate_publishes_the_heldout_set_under_version_ids() -> None:
    out = evaluate.evaluate(3, heldout(), now=5.0)
    sent = out.events("prompts")
    assert [p.id for p in sent] == ["eval:v3:h0", "eval:v3:h1", "eval:v3:h2"]
    assert [e.key for e in out.emits] == [p.id for p in sent]
    assert sent[0].metadata == heldout()[0].metadata and sent[0].messages == heldout()[0].messages
    assert evaluate.parse_eval_id("eval:v3:h0") == (3, "h0")
    assert evaluate.parse_eval_id("eval:v3:a:b") == (3, "a:b")
    assert evaluate.parse_eval_id("h0") is None and not evaluate.is_heldout("h0")
    # the same version evaluated twice is the same ids: admit keeps each once
    assert [p.id for p in evaluate.evaluate(3, heldout()).events("prompts")] == \
        [p.id for p in sent]


async def test_evaluation_prompts_pass_intake_and_admit_as_published() -> None:
    """What evaluate emits is a valid prompt (encoded as sent) that admit accepts once."""
    from arena_stream.schemas import encode

    rec = Offsets()
    [p] = evaluate.evaluate(1, heldout()[:1]).events("prompts")
    out = await intake.intake(rec("prompts", encode(p)),
                              intake.IntakeContext(limits=LimitsConfig()))
    [checked] = out.events("checked")
    assert checked.id == "eval:v1:h0" and checked.metadata == p.metadata
    store = MemoryStore()
    ctx = intake.AdmitContext(round=lambda: 0, now=clock())
    assert len(store.apply(intake.admit(rec("checked", checked), store, ctx))
               .events("accepted")) == 1
    assert intake.admit(rec("checked", checked), store, ctx).events("accepted") == []


@dataclass
class Verdict:
    contaminated: bool
    reason: str = "like a test prompt"


class FlagsEverything:
    """A decontaminator that calls every prompt a copy of a test prompt."""

    def check(self, texts: list[str]) -> list[Verdict]:
        return [Verdict(True) for _ in texts]


async def test_intake_decontaminates_training_prompts_but_not_evaluation_prompts() -> None:
    rec = Offsets()
    ctx = intake.IntakeContext(limits=LimitsConfig(), decontaminator=FlagsEverything())
    plain = await intake.intake(rec("prompts", json.dumps({"id": "p", "prompt": "q"}).encode()),
                                ctx)
    [letter] = plain.dead_letters()
    assert letter.reason == "test_set_overlap"
    held = await intake.intake(
        rec("prompts", json.dumps({"id": "eval:v0:h0", "prompt": "q"}).encode()), ctx)
    assert held.dead_letters() == [] and len(held.events("checked")) == 1


def judgment(bid: str, pid: str, a: str, b: str, winner: str,
             passed: tuple[bool, bool] | None = None) -> Judgment:
    scores = {"model_a": (10.0, 1.0), "model_b": (1.0, 10.0), "tie": (10.0, 10.0)}[winner]
    report = None if passed is None else CheckReport(a=[], b=[], passed_a=passed[0],
                                                      passed_b=passed[1], decided=True)
    target = a if a.startswith("target@") else (b if b.startswith("target@") else None)
    return Judgment(battle_id=bid, prompt_id=pid, model_a=a, model_b=b, player_a=a.split("@")[0],
                    player_b=b.split("@")[0], target=target, winner=winner,  # type: ignore[arg-type]
                    score_a=scores[0], score_b=scores[1], margin=abs(scores[0] - scores[1]),
                    games=[Game(order="ab", score_a=scores[0], score_b=scores[1], raw="")],
                    rule="verifier", judge_model="verifier", template_version="checks-v1",
                    messages=[Message("user", "q")], answer_a="A", answer_b="B", checks=report)


def test_route_never_trains_on_a_heldout_battle() -> None:
    rec = Offsets()
    store = MemoryStore()
    ctx = route.RouteContext(routing=RoutingConfig(), now=clock())
    lost = judgment("b1", "eval:v0:h0", "target@v0", "reference", "model_b", (False, True))
    out = route.route(rec("judgments", lost), store, ctx)
    assert out.emits == [] and out.counters["route.heldout_skipped"] == 1
    trained = judgment("b2", "p0", "target@v0", "reference", "model_b", (False, True))
    out = route.route(rec("judgments", trained), store, ctx)
    assert len(out.events("sft")) == 1 and len(out.events("dpo")) == 1


# -- lineage, versions --json and the verdict -------------------------------------------------


def heldout_battles(version: int, passes: int, prompts: int = 16) -> list[Judgment]:
    """The target at ``version`` against the reference (always passing) and a competitor
    that passes every other prompt; the target passes the first ``passes`` prompts."""
    name = f"target@v{version}"
    out = []
    for i in range(prompts):
        pid = f"eval:v{version}:h{i}"
        mine = i < passes
        out.append(judgment(f"r{version}-{i}", pid, name, "reference",
                            "tie" if mine else "model_b", (mine, True)))
        theirs = i % 2 == 0
        winner = "tie" if mine == theirs else ("model_a" if mine else "model_b")
        out.append(judgment(f"s{version}-{i}", pid, name, "sage", winner, (mine, theirs)))
    return out


def events(final_passes: int) -> dict[str, Any]:
    models = [
        ModelVersion(name="target", version=1, parent_version=0, path="/m/v1", job_id="job-1",
                     kind="sft", round=0, metrics={"loss": 1.2}),
        ModelVersion(name="target", version=2, parent_version=1, path="/m/v2", job_id="job-2",
                     kind="dpo", round=0),
    ]
    jobs = [TrainingJob(id="job-1", kind="sft", base_model="target", base_version=0,
                        sample_ids=[f"b{i}" for i in range(30)], topic="arena.train.sft"),
            TrainingJob(id="job-2", kind="dpo", base_model="target", base_version=1,
                        sample_ids=["b1", "b2"], topic="arena.train.dpo")]
    played = [judgment("x1", "p1", "target@v0", "reference", "model_b", (False, True)),
              judgment("x2", "p2", "target@v0", "sage", "model_a", (True, False)),
              judgment("x3", "p3", "target@v0", "sage", "tie", (True, True)),
              judgment("x4", "p4", "target@v2", "sage", "model_a", (True, False))]
    judged = (played + heldout_battles(0, 3) + heldout_battles(1, 9)
              + heldout_battles(2, final_passes))
    ratings = [RatingUpdate(model="target@v0", rating=990.0, battles=3, battle_id="x3",
                            delta=0, opponent="sage", outcome=0.5, judgment_offset=3)]
    sft = [SFTSample(id="x1", battle_id="x1", prompt_id="p1", messages=[], winner="reference",
                     loser="target@v0", margin=9.0)]
    dpo = [DPOPair(id=i, battle_id=i, prompt_id="p", prompt=[], chosen="", rejected="",
                   chosen_model=c, rejected_model=r, margin=9.0)
           for i, c, r in (("x1", "reference", "target@v0"), ("x2", "target@v0", "sage"))]
    return dict(models=models, jobs=jobs, judgments=judged, ratings=ratings, sft=sft, dpo=dpo,
                thresholds=RoutingConfig(sft_margin=3.0, dpo_margin=2.0), rounds=100)


def test_lineage_links_versions_jobs_samples_and_heldout_ratings() -> None:
    lineage = build_lineage("target", **events(final_passes=15))
    data = json.loads(json.dumps(msgspec.to_builtins(lineage)))  # what versions --json prints
    v0, v1, v2 = data["versions"]
    assert [v["model"] for v in data["versions"]] == ["target@v0", "target@v1", "target@v2"]
    assert v0["parent"] is None and v0["kind"] == "base" and v0["samples"] == 0
    assert (v1["parent"], v1["kind"], v1["job_id"], v1["samples"]) == (0, "sft", "job-1", 30)
    assert v1["sample_ids"][:2] == ["b0", "b1"] and len(v1["sample_ids"]) == 20
    assert v1["samples_topic"] == "arena.train.sft" and v1["train_metrics"] == {"loss": 1.2}
    assert (v2["parent"], v2["kind"], v2["samples"]) == (1, "dpo", 2)
    # the round v0 played: held-out battles left out
    assert v0["battles"] == 3
    assert v0["vs"] == {"reference": {"wins": 0, "losses": 1, "ties": 0},
                        "sage": {"wins": 1, "losses": 0, "ties": 1}}
    assert v0["win_rate"] == {"reference": 0.0, "sage": 0.75}
    assert v0["selected"] == {"sft_samples": 1, "dpo_pairs": 2, "sft_margin": 3.0,
                              "dpo_margin": 2.0}
    assert v0["elo"] == 990.0 and v1["elo"] is None
    # held-out: pass rates per prompt, ratings with intervals, increasing with the passes
    h0, h1, h2 = v0["heldout"], v1["heldout"], v2["heldout"]
    assert (h0["passed"], h0["prompts"], h0["battles"]) == (3, 16, 32)
    assert (h1["passed"], h2["passed"]) == (9, 15)
    assert h0["pass_rate"] == pytest.approx(3 / 16)
    for h in (h0, h1, h2):
        assert h["lower"] <= h["rating"] <= h["upper"]
    assert h0["rating"] < h1["rating"] < h2["rating"]
    assert data["improved"] is True
    assert data["verdict"].startswith("The flywheel improved the target: target@v2 held-out")


def test_the_report_says_in_plain_words_when_a_run_did_not_improve() -> None:
    lineage = build_lineage("target", **events(final_passes=3))  # v2 no better than v0
    assert lineage.improved is False
    assert lineage.verdict.startswith("The flywheel did NOT improve the target: target@v2")
    assert "does not lie entirely above target@v0's" in lineage.verdict
    lines = lineage_lines(lineage)
    assert lines[-1] == lineage.verdict
    assert any(line.startswith("target@v1: from v0 by job-1 (sft") for line in lines)
    assert any("passed every check on 3/16 prompts" in line for line in lines)


def test_lineage_without_evaluation_or_versions_says_so() -> None:
    bare = build_lineage("target", models=[], jobs=[], judgments=[])
    assert bare.improved is None and "No held-out evaluation" in bare.verdict
    only_v0 = build_lineage("target", models=[], jobs=[], judgments=heldout_battles(0, 3))
    assert only_v0.improved is None and "No trained version" in only_v0.verdict


# -- the bundled task ------------------------------------------------------------------------


def test_bundled_task_references_pass_their_checks_and_heldout_is_apart() -> None:
    train = read_prompts(bundled_path("instructions.jsonl"), LimitsConfig())
    held = read_prompts(bundled_path("instructions-heldout.jsonl"), LimitsConfig())
    assert not train.bad and not held.bad
    assert len(train.good) >= 100 and len(held.good) >= 30
    for line in [*train.good, *held.good]:
        meta = line.prompt.metadata
        results = checks.evaluate(meta, reference_answer(meta) or "")
        assert results and checks.all_passed(results), (line.prompt.id, results)
    topic = lambda p: p.messages[-1].content.split(".")[0]  # noqa: E731
    assert not {topic(x.prompt) for x in train.good} & {topic(x.prompt) for x in held.good}


def test_run_report_shows_versions_skips_and_the_verdict(capsys) -> None:
    """The end of ``arena-stream run``: reference skips counted, a row per version, the words."""
    from arena_stream.cli.flywheel_run import _final_report
    from arena_stream.cli.progress import Tracker
    from arena_stream.config import default_config
    from arena_stream.schemas import Generation, encode

    tracker = Tracker(default_config())
    skipped = Generation(id="p/reference", prompt_id="p", player="reference", model="reference",
                         messages=[], ok=False, error="no_reference: none")
    tracker.feed("generations", encode(skipped))
    assert tracker.skipped == {"reference": 1}
    lineage = build_lineage("target", **events(final_passes=3))
    _final_report(tracker, 12.0, as_json=False, lineage=lineage)
    out = capsys.readouterr().out
    assert "reference skipped 1 prompt(s) without metadata.reference" in out
    for model in ("target@v0", "target@v1", "target@v2"):
        assert model in out
    assert "win rate vs reference" in out and "held-out rating [95% CI]" in out
    assert out.rstrip().splitlines()[-1].startswith("The flywheel did NOT improve the target")
    _final_report(tracker, 12.0, as_json=True, lineage=lineage)
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert data["lineage"]["improved"] is False and len(data["lineage"]["versions"]) == 3


def test_run_tracker_counts_evaluation_battles_that_came_before_it_expected_them() -> None:
    """The worker evaluates a version as soon as it applies it, possibly before the run
    learns of the version: those battles must not be lost, or the run would wait for ever."""
    from arena_stream.cli.progress import Tracker
    from arena_stream.config import default_config
    from arena_stream.schemas import Battle, RatingUpdate, encode

    tracker = Tracker(default_config())
    tracker.expect(["p1"])
    battle = Battle(id="b-e", prompt_id="eval:v1:h0", mode="target-vs-competitors",
                    messages=[], model_a="target@v1", model_b="reference", player_a="target",
                    player_b="reference", answer_a="a", answer_b="b", of=1)
    tracker.feed("battles", encode(battle))
    assert "eval:v1:h0" in tracker.prompts and not tracker.all_done()
    for model in ("target@v1", "reference"):
        tracker.feed("ratings", encode(RatingUpdate(model=model, rating=1000.0, battles=1,
                                                    battle_id="b-e", delta=0.0,
                                                    opponent="x", outcome=0.5)))
    tracker.expect(["eval:v1:h0"])  # what the run does once it sees v1: nothing is lost
    assert tracker.is_done("eval:v1:h0") and not tracker.is_done("p1")
    other = Battle(id="b-o", prompt_id="p9", mode="target-vs-competitors", messages=[],
                   model_a="a", model_b="b", player_a="a", player_b="b", answer_a="",
                   answer_b="")
    tracker.feed("battles", encode(other))
    assert "p9" not in tracker.prompts  # an ordinary prompt it never expected stays ignored


def test_live_page_draws_the_heldout_rating_per_version() -> None:
    from arena_stream.schemas import encode
    from arena_stream.web.live import LeaderboardView

    view = LeaderboardView("target")
    assert view.payload()["heldout"] == []
    for offset, j in enumerate(heldout_battles(0, 3) + heldout_battles(1, 15)):
        assert view.apply("judgments", encode(j), topic="j", offset=offset)
    payload = view.payload()
    points = payload["heldout"]
    assert [p["model"] for p in points] == ["target@v0", "target@v1"]
    assert points[0]["rating"] < points[1]["rating"]
    assert points[0]["lower"] <= points[0]["rating"] <= points[0]["upper"]
    assert (points[1]["passed"], points[1]["prompts"]) == (15, 16)
    assert payload["heldout_verdict"].startswith("The flywheel improved the target")
    html = (bundled_path("leaderboard.html")).read_text(encoding="utf-8")
    assert 'id="heldout"' in html and "renderHeldout(data.heldout" in html


def test_check_and_the_worker_refuse_a_missing_heldout_file() -> None:
    from arena_stream.cli.checks import file_checks
    from arena_stream.config import EvaluationConfig, default_config
    from arena_stream.streams.app import heldout_prompts

    config = default_config()
    assert [r.ok for r in file_checks(config)] == [True]
    assert len(heldout_prompts(config)) == 32
    missing = msgspec.structs.replace(config, evaluation=EvaluationConfig(heldout="/no/such.jsonl"))
    assert [r.ok for r in file_checks(missing)] == [False]
    with pytest.raises(ConfigError, match=r"evaluation\.heldout: file not found"):
        heldout_prompts(missing)
