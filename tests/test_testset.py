"""Building the offline test set: clusters, diverse picks, judge-rated hard picks, the cache.

The judge is a real OpenAI-compatible HTTP server on loopback that rates
difficulty by a rule the test controls (a table from prompt text to score).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from arena_stream.cli.commands import testset as command
from arena_stream.config import JudgeConfig
from arena_stream.judges import difficulty
from arena_stream.models.retry import CallFailed
from arena_stream.offline import testset
from arena_stream.offline.cache import OfflineCache, model_fingerprint
from tests.openai_stub import OpenAIStub, Reply, completion

COOKING = ["chicken thighs", "salmon fillets", "sweet potatoes", "pork shoulder",
           "brussels sprouts", "a whole turkey", "lamb chops", "firm tofu", "beef brisket",
           "cauliflower", "duck breast", "eggplant", "shrimp", "butternut squash", "meatballs",
           "zucchini", "chickpeas", "portobello mushrooms", "cod", "carrots"]
CODING = ["parse a CSV file into dictionaries", "merge two sorted lists",
          "validate an email address with a regex", "compute the Levenshtein distance",
          "flatten a nested list", "read a JSON config file", "find duplicate files by hash",
          "implement a binary search", "retry an HTTP request with backoff",
          "count word frequencies in a text file", "convert Roman numerals to integers",
          "detect a cycle in a linked list", "serialize a dataclass to JSON",
          "walk a directory tree recursively", "implement an LRU cache",
          "parse command line arguments", "chunk a list into batches",
          "compute a moving average", "topologically sort a dependency graph",
          "rotate a matrix by 90 degrees"]
SPACE = ["black hole evaporation", "neutron star formation", "the expansion of the universe",
         "gravitational lensing", "stellar nucleosynthesis", "the cosmic microwave background",
         "exoplanet transit detection", "dark matter halos", "supernova explosions",
         "the life cycle of red giants", "pulsar timing", "solar flares",
         "the formation of the Moon", "quasar jets", "the habitable zone of a star",
         "white dwarf cooling", "galaxy mergers", "the Oort cloud", "tidal locking of moons",
         "gamma-ray bursts"]
TRAVEL = ["Lisbon", "Kyoto", "Buenos Aires", "Reykjavik", "Marrakech", "Vancouver", "Hanoi",
          "Prague", "Cape Town", "Lima", "Istanbul", "Seoul", "Edinburgh", "Mexico City",
          "Copenhagen", "Bali", "Nairobi", "Santorini", "Montreal", "Vienna"]

TOPICS = {
    "cooking": [f"What is the best way to roast {x} in the oven? Give cooking times, "
                "temperature and seasoning ideas." for x in COOKING],
    "coding": [f"Write a Python function to {x}, with type hints and unit tests."
               for x in CODING],
    "space": [f"Explain to a curious student how {x} works in astrophysics." for x in SPACE],
    "travel": [f"Plan a one-week travel itinerary for {x}: neighbourhoods to stay in, local "
               "food to try and sights to visit." for x in TRAVEL],
}
UNRATEABLE = {"coding-05", "space-12"}  # the judge never gives a readable score for these


def _prompts() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for topic, texts in TOPICS.items():
        for i, text in enumerate(texts):
            pid = f"{topic}-{i:02d}"
            if topic == "travel" and i < 2:  # a few multi-turn conversations, kept whole
                items.append({"id": pid, "category": topic, "messages": [
                    {"role": "user", "content": "I want to travel next spring."},
                    {"role": "assistant", "content": "Lovely! Where would you like to go?"},
                    {"role": "user", "content": text},
                ]})
            else:
                items.append({"id": pid, "prompt": text, "category": topic})
    return items


PROMPTS = _prompts()
SCORES = {p["id"]: (n * 7) % 11 for n, p in enumerate(PROMPTS)}  # 0..10, spread over topics


def _last_user(item: dict[str, Any]) -> str:
    return item["messages"][-1]["content"] if "messages" in item else item["prompt"]


class Judge:
    """Rates difficulty from the table above; some prompts get unreadable answers."""

    def __init__(self) -> None:
        self.rated: Counter[str] = Counter()

    def __call__(self, path: str, body: dict[str, Any]) -> Reply:
        request = body["messages"][0]["content"]
        item = next(p for p in PROMPTS if _last_user(p) in request)
        self.rated[item["id"]] += 1
        if item["id"] in UNRATEABLE:
            return Reply(body=completion("This is an interesting request about many things."))
        return Reply(body=completion(f"It needs some care.\nDifficulty: {SCORES[item['id']]}"))


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    lines = [json.dumps(p) for p in PROMPTS]
    lines.insert(10, "{not json")  # line 11
    lines.insert(20, json.dumps({"id": "empty", "prompt": "   "}))  # line 21
    lines.insert(30, "")  # blank lines are ignored silently
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "arena.toml"
    path.write_text(f"""
[[players]]
name = "target"
role = "target"
backend = "openai"
base_url = "{url}"
model = "target"

[[players]]
name = "rival"
backend = "openai"
base_url = "{url}"
model = "rival"

[judge]
backend = "openai"
base_url = "{url}"
model = "judge"
max_retries = 0
""", encoding="utf-8")
    return path


def build(prompts: Path, out: Path, config: Path, cache: Path, seed: int = 7) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args([
        "build", "--prompts", str(prompts), "--out", str(out), "--config", str(config),
        "--clusters", "4", "--per-cluster", "3", "--hard-pool", "25", "--hard", "10",
        "--seed", str(seed), "--cache", str(cache),
    ])
    return command.main(args)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cached_ratings(path: Path) -> list[dict[str, Any]]:
    """The ratings in an offline cache file, read with sqlite3 itself."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT value FROM entries WHERE namespace = 'difficulty'")
        return [json.loads(value) for (value,) in rows]


def test_build_diverse_hard_cache_and_reproducibility(
    tmp_path: Path, prompt_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    judge = Judge()
    with OpenAIStub(judge) as stub:
        config = _config(tmp_path, stub.base_url)
        cache = tmp_path / "ratings.sqlite"
        assert build(prompt_file, tmp_path / "a.jsonl", config, cache) == 0
        err = capsys.readouterr().err
        assert ":11: skipped" in err and ":21: skipped" in err

        items = read(tmp_path / "a.jsonl")
        by_id = {p["id"]: p for p in PROMPTS}
        # every record is the input object, whole, plus the test-set fields
        for item in items:
            original = {k: v for k, v in item.items()
                        if k not in {"subset", "subsets", "cluster", "difficulty"}}
            assert original == by_id[item["id"]]
            assert item["subset"] in item["subsets"]
        assert len({i["id"] for i in items}) == len(items)

        # diverse: every cluster represented, per-cluster count respected
        diverse = [i for i in items if "diverse" in i["subsets"]]
        assert Counter(i["cluster"] for i in diverse) == {0: 3, 1: 3, 2: 3, 3: 3}
        # the four topics are clearly apart, so clusters follow them
        assert len({i["category"] for i in diverse}) == 4
        topic_of_cluster = {i["cluster"]: i["category"] for i in items}
        assert all(topic_of_cluster[i["cluster"]] == i["category"] for i in items)

        # hard: the highest rated of everything rated (all 80 fit in the pool of 25/cluster)
        assert set(judge.rated) == set(by_id)
        hard = [i for i in items if "hard" in i["subsets"]]
        assert len(hard) == 10
        assert all(i["subset"] == "hard" for i in hard)  # in both -> "hard"
        assert all(i["difficulty"] == SCORES[i["id"]] for i in hard)
        hard_ids = {i["id"] for i in hard}
        rest = [s for pid, s in SCORES.items() if pid not in hard_ids and pid not in UNRATEABLE]
        assert min(i["difficulty"] for i in hard) >= max(rest)
        assert not hard_ids & UNRATEABLE

        # unreadable answers: asked 3 times, then cached as unrated
        assert all(judge.rated[pid] == difficulty.RATING_ATTEMPTS for pid in UNRATEABLE)
        entries = cached_ratings(cache)
        unrated = {e["id"] for e in entries if e["difficulty"] is None}
        assert unrated == UNRATEABLE

        # re-run with the cache: no call at all, byte-identical output
        calls = len(stub.requests)
        assert build(prompt_file, tmp_path / "b.jsonl", config, cache) == 0
        assert len(stub.requests) == calls
        assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
        summary = json.loads(capsys.readouterr().out)
        assert summary["ratings"]["asked"] == 0 and summary["ratings"]["cached"] == 80

        # same seed from scratch (fresh cache): same test set
        assert build(prompt_file, tmp_path / "c.jsonl", config, tmp_path / "fresh.sqlite") == 0
        assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()


def test_edited_prompt_or_changed_judge_is_rated_again(tmp_path: Path) -> None:
    record = testset.PromptRecord("p1", 1, {"id": "p1", "prompt": "hi"}, "", "hi", "d1")
    edited = testset.PromptRecord("p1", 1, {"id": "p1", "prompt": "hey"}, "", "hey", "d2")
    judge = JudgeConfig(backend="openai", base_url="http://j/v1", model="judge")
    settings = model_fingerprint(judge)
    rater = difficulty.rater_name("judge")
    with OfflineCache(tmp_path / "c.sqlite") as store:
        cache = testset.RatingCache(store, rater, settings)
        cache.put(testset.Rating("p1", "d1", cache.rater, 4.0, "Difficulty: 4", 1))
    with OfflineCache(tmp_path / "c.sqlite") as store:
        reloaded = testset.RatingCache(store, rater, settings)
        assert reloaded.get(record) is not None and reloaded.get(edited) is None
        assert reloaded.get(record).difficulty == 4.0  # type: ignore[union-attr]
        other_judge = testset.RatingCache(store, difficulty.rater_name("other"), settings)
        assert other_judge.get(record) is None
        hotter = model_fingerprint(msgspec.structs.replace(judge, temperature=1.0))
        assert testset.RatingCache(store, rater, hotter).get(record) is None
        elsewhere = model_fingerprint(msgspec.structs.replace(judge, base_url="http://k/v1"))
        assert testset.RatingCache(store, rater, elsewhere).get(record) is None


class FailingClient:
    """A judge whose calls fail outright for one prompt (after the client's retries)."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int | None = None
                       ) -> Any:
        self.calls += 1
        if "broken" in messages[0]["content"]:
            raise CallFailed("http_500", "boom")
        return completion("9/10")["choices"][0]["message"]["content"]


async def test_failed_calls_are_not_cached(tmp_path: Path) -> None:
    records = [
        testset.PromptRecord("ok", 1, {"id": "ok", "prompt": "fine"}, "", "fine", "a"),
        testset.PromptRecord("bad", 2, {"id": "bad", "prompt": "broken"}, "", "broken", "b"),
    ]
    with OfflineCache(tmp_path / "c.sqlite") as store:
        cache = testset.RatingCache(store, "judge|v")
        rater = difficulty.ParsedDifficulty(FailingClient(), model="judge")
        ratings, stats = await testset.rate_prompts(records, rater, cache)
    assert ratings["ok"].difficulty == 9.0 and "bad" not in ratings
    assert (stats.asked, stats.failed) == (1, 1)
    assert [e["id"] for e in cached_ratings(tmp_path / "c.sqlite")] == ["ok"]


@pytest.mark.parametrize(("reply", "score"), [
    ("Difficulty: 7", 7.0),
    ("The scale says 0-2 is trivial.\n**Difficulty:** 8", 8.0),
    ("Difficulty: 3 ... on reflection, Difficulty: 6", 6.0),
    ("I'd say 9/10.", 9.0),
    ("5", 5.0),
    ("Difficulty: 12", None),
    ("It is hard.", None),
    ("Step 1 then step 2.", None),
])
def test_parse_difficulty(reply: str, score: float | None) -> None:
    assert difficulty.parse_difficulty(reply) == score


def test_cluster_clamps_to_distinct_prompts() -> None:
    import numpy as np

    vectors = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], dtype=np.float32)
    labels, centroids = testset.cluster(vectors, 500, seed=0)
    assert labels.tolist() == [0, 0, 1, 1, 1] and len(centroids) == 2


def test_diverse_only_needs_no_judge(tmp_path: Path, prompt_file: Path) -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    out = tmp_path / "diverse.jsonl"
    args = parser.parse_args([
        "build", "--prompts", str(prompt_file), "--out", str(out), "--clusters", "4",
        "--per-cluster", "2", "--hard", "0", "--diverse-pick", "centroid",
    ])
    assert command.main(args) == 0
    items = read(out)
    assert Counter(i["cluster"] for i in items) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert all(i["subset"] == "diverse" and "difficulty" not in i for i in items)


# -- difficulty from any judge ------------------------------------------------------------


class DigitScorer:
    """A client with the token-scoring capability, scripted: it reads a prompt's difficulty
    as a fixed split between "7" and a leading "1" that continues as "10" 80% of the time.
    (tests/test_testset.py::test_bundled_model_rates_every_prompt runs the real model.)"""

    def __init__(self, probs: list[float] | None = None) -> None:
        self.probs = probs or [0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0]
        self.readings: list[str] = []

    async def token_probabilities(self, messages, reply_start, candidates):
        assert "rating how DIFFICULT" in messages[-1]["content"]
        self.readings.append(reply_start)
        if reply_start.endswith(" 1"):
            assert candidates == ["0"]
            return [0.8]
        assert candidates == [str(d) for d in range(10)]
        return self.probs

    async def token_probabilities_twice(self, *args, **kwargs):
        raise AssertionError("difficulty needs no second score")

    async def complete(self, messages, *, max_tokens=None):
        raise AssertionError("a log-prob rater never asks for text")

    async def aclose(self) -> None:
        return None


async def test_logprob_rater_reads_the_expected_difficulty(tmp_path: Path) -> None:

    scorer = DigitScorer()
    rater = difficulty.build_difficulty_rater(JudgeConfig(model="m"), client=scorer)
    assert isinstance(rater, difficulty.LogprobDifficulty)
    assert rater.name == "m|difficulty-v1|logprobs"
    reading = await rater.rate({"id": "x", "prompt": "Prove Fermat's last theorem."})
    # 0.5 * 7 + 0.5 * (0.8 * 10 + 0.2 * 1)
    assert reading.difficulty == pytest.approx(7.6) and reading.attempts == 1
    assert scorer.readings == ["Difficulty: ", "Difficulty: 1"]

    # no mass on "1": no second pass; probabilities that are no rating fail the call
    lone = DigitScorer([0.0] * 9 + [1.0])
    assert (await difficulty.LogprobDifficulty(lone, model="m").rate({"prompt": "p"})
            ).difficulty == 9.0 and lone.readings == ["Difficulty: "]
    for broken, reason in (([float("nan")] * 10, "not_finite"), ([0.0] * 10, "no_probability")):
        with pytest.raises(CallFailed) as err:
            await difficulty.LogprobDifficulty(DigitScorer(broken), model="m").rate({"prompt": "p"})
        assert err.value.reason == reason

    # a served judge keeps writing its rating; asking it for log-probs is a config error
    from arena_stream.config import ConfigError

    served = JudgeConfig(backend="openai", base_url="http://x/v1", model="m")
    assert isinstance(difficulty.build_difficulty_rater(served), difficulty.ParsedDifficulty)
    with pytest.raises(ConfigError):
        difficulty.build_difficulty_rater(msgspec_replace(served, scoring="logprobs"))


def printed_summary(out: str) -> dict[str, Any]:
    """The build's JSON summary, after whatever the log printed before it."""
    start = 0 if out.startswith("{") else out.index("\n{\n") + 1
    return json.loads(out[start:])


def msgspec_replace(spec: Any, **changes: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(spec, **changes)


def test_rating_template_is_configurable(tmp_path: Path, prompt_file: Path) -> None:
    template = tmp_path / "rate.txt"
    template.write_text("RATE THIS{context}: {conversation}\nAnswer 'Difficulty: N'.")
    seen: list[str] = []

    def handler(path: str, body: dict[str, Any]) -> Reply:
        seen.append(body["messages"][0]["content"])
        return Reply(body=completion("Difficulty: 6"))

    with OpenAIStub(handler) as stub:
        config = _config(tmp_path, stub.base_url)
        config.write_text(config.read_text() + f'difficulty_template = "{template}"\n')
        assert build(prompt_file, tmp_path / "t.jsonl", config, tmp_path / "c.sqlite") == 0
    assert seen and all(s.startswith("RATE THIS") for s in seen)
    rater = cached_ratings(tmp_path / "c.sqlite")[0]["rater"]
    assert rater.startswith("judge|d-") and rater != difficulty.rater_name("judge")

    template.write_text("{conversation} {unknown}")
    from arena_stream.config import ConfigError, JudgeConfig

    with pytest.raises(ConfigError, match="difficulty_template"):
        difficulty.load_difficulty_template(JudgeConfig(difficulty_template=str(template)))


def test_a_judge_that_never_rates_fails_the_build_with_the_reason(
    tmp_path: Path, prompt_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(path: str, body: dict[str, Any]) -> Reply:
        return Reply(body=completion("Here is a Python script that scrolls an LED screen..."))

    out, cache = tmp_path / "t.jsonl", tmp_path / "c.sqlite"
    with OpenAIStub(handler) as stub:
        config = _config(tmp_path, stub.base_url)
        assert build(prompt_file, out, config, cache) == 1
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if "error:" in line]
        assert len(errors) == 1
        assert "no hard prompt was kept: 80 of 80 pool prompts have no readable difficulty" \
            in errors[0]
        assert "LED screen" in errors[0] and f"ratings cache: {cache}" in errors[0]
        assert not out.exists()
        summary = printed_summary(captured.out)
        assert (summary["hard_asked"], summary["hard_kept"]) == (10, 0)
        assert summary["ratings"]["unrated"] == 80 and summary["difficulty"]["pool"] == {"n": 0}

        # the diverse half can still be had, knowingly
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        args = parser.parse_args([
            "build", "--prompts", str(prompt_file), "--out", str(out), "--config", str(config),
            "--clusters", "4", "--per-cluster", "3", "--hard-pool", "25", "--hard", "10",
            "--cache", str(cache), "--allow-partial",
        ])
        calls = len(stub.requests)
        assert command.main(args) == 0
        assert len(stub.requests) == calls  # unrated prompts come from the cache
    assert "warning: no hard prompt was kept" in capsys.readouterr().err
    assert len(read(out)) == 12


def test_a_hard_subset_under_half_of_what_was_asked_is_an_error() -> None:
    result = testset.BuildResult([], 2, 4, hard=4, pool=30, hard_asked=10,
                                 pool_difficulties=[5.0] * 4)
    assert testset.shortfall(result) is not None and "only 4 hard" in testset.shortfall(result)
    assert testset.shortfall(testset.BuildResult([], 2, 4, hard=5, pool=30, hard_asked=10)) is None
    # asked for more than the pool holds: judged against what the data allows
    assert testset.shortfall(testset.BuildResult([], 2, 4, hard=6, pool=6, hard_asked=1000)) is None


@pytest.mark.slow
def test_bundled_model_rates_every_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    """Issue 17's check on a prompt file of our own (tests/data/varied_prompts.jsonl: 58
    prompts from greetings to proofs; the 500 arena-hard questions are not available
    offline): the embedded default's SmolLM2 judge rates every pooled prompt."""
    prompts = Path(__file__).parent / "data" / "varied_prompts.jsonl"
    ids = []
    for n in range(2):  # twice from scratch: the same ids
        out = tmp_path / f"t{n}.jsonl"
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        args = parser.parse_args([
            "build", "--prompts", str(prompts), "--out", str(out), "--clusters", "25",
            "--per-cluster", "2", "--hard-pool", "2", "--hard", "10", "--seed", "7",
        ])
        assert command.main(args) == 0
        summary = printed_summary(capsys.readouterr().out)
        assert summary["hard_kept"] == 10 and summary["ratings"]["unrated"] == 0
        assert summary["difficulty"]["pool"]["n"] == summary["hard_pool"]
        items = read(out)
        hard = [i for i in items if i["subset"] == "hard"]
        assert len(hard) == 10 and all(0.0 <= i["difficulty"] <= 10.0 for i in hard)
        assert all(isinstance(i["cluster"], int) for i in items)
        cached = cached_ratings(Path(f"{out}.cache.sqlite"))
        assert all(c["rater"] == "smollm2|difficulty-v1|logprobs" for c in cached)
        assert min(i["difficulty"] for i in hard) >= max(
            c["difficulty"] for c in cached if c["id"] not in {i["id"] for i in hard})
        ids.append([i["id"] for i in items])
    assert ids[0] == ids[1]
