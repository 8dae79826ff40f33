"""Style control: the counts, the features, the contextual fit, arena-rank as oracle, the CLI."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from arena_stream.ratings import bradley_terry as bt
from arena_stream.ratings import style_control as sc
from arena_stream.ratings.style import (
    count_tokens,
    counts_from_conv_metadata,
    markdown_counts,
    relative_difference,
    style_counts,
)
from arena_stream.schemas.events import Judgment, StyleCounts
from tests.lmarena_battles import STRENGTHS, generate
from tests.oracles import run_arena_rank

MARKDOWN = """# Title
Some **bold** text and __also bold__ and ** not bold
## Section
1. first
2. second
- dash item
  * nested star
+ plus item
#not a header (no space)
```python
# a comment, not a header
- not a list item
**not bold either**
```
"""


def test_markdown_counts_follow_lmarena_definitions() -> None:
    headers, bold, lists = markdown_counts(MARKDOWN)
    assert (headers, bold, lists) == (2, 2, 5)


def test_tokens_count_words_punctuation_and_cjk_characters() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("数据 data") == 3
    assert count_tokens("") == 0


def test_style_counts_of_two_answers() -> None:
    sc_ = style_counts("# A\n- x\n- y", "plain text here")
    assert sc_ == StyleCounts(tokens_a=count_tokens("# A\n- x\n- y"), tokens_b=3, headers_a=1,
                              headers_b=0, bold_a=0, bold_b=0, lists_a=2, lists_b=0)
    given = style_counts("a b", "c", tokens_a=120, tokens_b=80)
    assert (given.tokens_a, given.tokens_b) == (120, 80)
    with pytest.raises(ValueError, match="both"):
        style_counts("a", "b", tokens_a=3)


def test_relative_difference_takes_a_zero_total_as_one() -> None:
    assert relative_difference(0, 0) == 0.0
    assert relative_difference(3, 1) == 0.5


def test_conv_metadata_sums_dict_counts_and_reports_gaps() -> None:
    meta = {"sum_assistant_a_tokens": 10, "sum_assistant_b_tokens": 30,
            "header_count_a": {"h1": 1, "h2": 2}, "header_count_b": {"h1": 0},
            "bold_count_a": {"**": 1, "__": 1}, "bold_count_b": 3,
            "list_count_a": {"ordered": 0, "unordered": 4}, "list_count_b": {}}
    got = counts_from_conv_metadata(meta)
    assert got == StyleCounts(tokens_a=10, tokens_b=30, headers_a=3, headers_b=0, bold_a=2,
                              bold_b=3, lists_a=4, lists_b=0)
    with pytest.raises(ValueError, match="sum_assistant_b_tokens"):
        counts_from_conv_metadata({k: v for k, v in meta.items()
                                   if k != "sum_assistant_b_tokens"})


def test_counts_from_metadata_struct_and_from_answers_agree() -> None:
    answers = ["# H\n**b** and text", "- one\n- two\n- three", "plain", "## x\n1. y"]
    rows = []
    for i in range(4):
        a, b = answers[i], answers[(i + 1) % 4]
        c = style_counts(a, b)
        meta = {"sum_assistant_a_tokens": c.tokens_a, "sum_assistant_b_tokens": c.tokens_b,
                "header_count_a": {"h1": c.headers_a}, "header_count_b": {"h1": c.headers_b},
                "bold_count_a": {"**": c.bold_a}, "bold_count_b": {"**": c.bold_b},
                "list_count_a": {"unordered": c.lists_a}, "list_count_b": {"unordered": c.lists_b}}
        rows.append({"model_a": "x", "model_b": "y", "winner": "model_a", "conv_metadata": meta,
                     "answer_a": a, "answer_b": b})
    df = pl.DataFrame(rows)
    from_meta = sc.style_columns(df).select(sc.COUNT_NAMES)
    from_text = sc.style_columns(df.drop("conv_metadata")).select(sc.COUNT_NAMES)
    assert from_meta.equals(from_text)
    convo = df.drop("conv_metadata", "answer_a", "answer_b").with_columns(
        conversation_a=pl.Series([[{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": r["answer_a"]}] for r in rows]),
        conversation_b=pl.Series([[{"role": "assistant", "content": r["answer_b"]}]
                                  for r in rows]),
    )
    assert sc.style_columns(convo).select(sc.COUNT_NAMES).equals(from_text)
    with pytest.raises(bt.BattleDataError, match="style control needs style counts"):
        sc.style_columns(df.select("model_a", "model_b", "winner"))


def test_features_are_standardised_relative_differences() -> None:
    counts = np.array([[10, 30, 0, 0, 1, 1, 2, 0], [30, 10, 2, 0, 0, 0, 0, 0],
                       [20, 20, 0, 2, 3, 1, 0, 0]])
    x = sc.style_features(counts)
    raw = np.array([-0.5, 0.5, 0.0])
    assert np.allclose(x[:, 0], (raw - raw.mean()) / raw.std())
    assert np.allclose(x.mean(axis=0), 0.0)


# --- the fit ----------------------------------------------------------------


@pytest.fixture(scope="module")
def planted() -> pl.DataFrame:
    """20,000 battles; longer answers win (1.5 log-odds per unit of (a-b)/(a+b)); model-1 is
    verbose (three times the tokens), so its raw rating is inflated by length. No ties:
    random ties would shrink every effect towards zero."""
    return sc.style_columns(generate(20_000, seed=1, length_effect=1.5, tie_rate=0.0))


def test_planted_length_bonus_is_recovered_with_the_right_sign(planted: pl.DataFrame) -> None:
    default = sc.fit_style(planted)
    tokens = default.coefficients()[0]
    assert tokens["feature"] == "tokens" and tokens["lower"] > 0  # right sign, beyond doubt
    for other in default.coefficients()[1:]:  # nothing else was planted
        assert other["lower"] < 0 < other["upper"]

    # Without arena-rank's strong default penalty the size comes back too: the truth per
    # standard deviation of the feature is 1.5 * sd((a - b) / (a + b)).
    counts = planted.select(sc.COUNT_NAMES).to_numpy()
    raw = (counts[:, 0] - counts[:, 1]) / (counts[:, 0] + counts[:, 1])
    light = sc.fit_style(planted, reg=1e-6).coefficients()[0]
    assert light["lower"] < 1.5 * raw.std() < light["upper"]


def test_style_control_takes_the_length_bonus_out_of_the_verbose_model(
    planted: pl.DataFrame,
) -> None:
    r = sc.fit_style(planted, reg=1e-6)
    i = r.models.index("model-1")
    truth = bt.ALPHA * (STRENGTHS["model-1"] - np.mean(list(STRENGTHS.values()))) + 1000
    assert abs(r.rating[i] - truth) < abs(r.raw[i] - truth)
    assert r.raw[i] - r.rating[i] > 20  # the verbose model loses its length bonus
    assert r.lower[i] < truth < r.upper[i]


def test_without_style_terms_it_is_the_plain_leaderboard() -> None:
    """With equal weights and no features left, the contextual fit is Bradley-Terry."""
    df = sc.style_columns(generate(4000, seed=5))
    r = sc.fit_style(df, reweight=False)
    plain = bt.fit(df.select("model_a", "model_b", "winner"), method="sandwich")
    assert np.abs(r.raw - plain.rating).max() < 1e-6
    assert np.abs(r.raw_upper - plain.upper).max() < 0.05  # same sandwich, battle by battle


# --- arena-rank as oracle ------------------------------------------------------


def test_agrees_with_arena_rank_contextual_bradley_terry(tmp_path: Path) -> None:
    battles = generate(20_000, seed=3, length_effect=1.0, bold_effect=0.5)
    path = tmp_path / "battles.parquet"
    battles.write_parquet(path)
    theirs = run_arena_rank("arena_rank_fit.py", path, model="style")
    ours = sc.fit_style(sc.style_columns(bt._validate(battles, "battles",
                                                      keep=["conv_metadata"])))
    assert theirs["competitors"] == ours.models
    assert np.abs(np.asarray(theirs["ratings"]) - ours.rating).max() < 0.5
    assert np.abs(np.asarray(theirs["coeffs"]) - ours.coef).max() < 1e-3
    # Intervals: arena-rank's sandwich leaves the penalty out of H (its bread); ours keeps it,
    # as the penalised estimate's sandwich should, so ours are slightly narrower.
    width_theirs = np.asarray(theirs["rating_upper"]) - np.asarray(theirs["rating_lower"])
    width_ours = ours.upper - ours.lower
    assert np.all(width_ours <= width_theirs + 0.05)
    assert np.abs(width_ours - width_theirs).max() < 0.2 * width_theirs.mean()


# --- CLI ----------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    from arena_stream.cli import entry as cli_module

    monkeypatch.setattr(cli_module, "COMMANDS", {"leaderboard": "leaderboard"})
    return cli_module.main


def test_cli_style_control_from_a_battles_file(cli, tmp_path: Path, capsys) -> None:
    path = tmp_path / "lm.jsonl"
    generate(3000, seed=4, length_effect=1.5).write_ndjson(path)
    plot = tmp_path / "style.png"
    assert cli(["leaderboard", "--battles", str(path), "--style-control", "--plot",
                str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "Style-controlled leaderboard, 3000 battles" in out
    assert "answer tokens" in out and "raw rank" in out
    assert cli(["leaderboard", "--battles", str(path), "--style-control", "--json",
                "--style-penalty", "0.01", "--no-pair-weights"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["penalty"] == 0.01 and data["pair_weights"] is False
    assert [c["feature"] for c in data["coefficients"]] == ["tokens", "headers", "bold", "lists"]
    assert data["coefficients"][0]["lower"] > 0
    row = data["ratings"][0]
    assert set(row) >= {"model", "rating", "lower", "upper", "raw_rating", "raw_rank",
                        "rank_change", "battles", "provisional"}
    assert cli(["leaderboard", "--battles", str(path), "--style-control", "--tie-model",
                "davidson"]) == 2
    assert "does not take" in capsys.readouterr().err
    plain = tmp_path / "plain.jsonl"
    generate(50, seed=4).select("model_a", "model_b", "winner").write_ndjson(plain)
    assert cli(["leaderboard", "--battles", str(plain), "--style-control"]) == 2
    assert "style control needs style counts" in capsys.readouterr().err


def _judgment(a: str, b: str, winner: str, answer_a: str, answer_b: str,
              style: StyleCounts | None = None) -> Judgment:
    return Judgment(battle_id=f"{a}-{b}-{answer_a}", prompt_id="p", model_a=a, model_b=b,
                    player_a=a, player_b=b, winner=winner, score_a=0, score_b=0,  # type: ignore[arg-type]
                    margin=0, games=[], rule="r", judge_model="j", template_version="t",
                    messages=[], answer_a=answer_a, answer_b=answer_b, ts=1.0, style=style)


def test_cli_style_control_from_the_judgments_topic(cli, monkeypatch, capsys) -> None:
    long, short = "word " * 200, "word " * 20
    recorded = style_counts("x", "y", tokens_a=500, tokens_b=50)
    judgments = []
    for i in range(60):
        # the longer answer wins 4 times in 5, whichever model gave it
        a_long = i % 2 == 0
        winner = "model_a" if (a_long == (i % 5 != 0)) else "model_b"
        judgments.append(_judgment("p", "q", winner, long if a_long else short,
                                   short if a_long else long))
    judgments.append(_judgment("p", "q", "model_a", "x", "y", style=recorded))
    monkeypatch.setitem(sys.modules, "arena_stream.kafka.replay",
                        types.SimpleNamespace(read_judgments=lambda config, **kw: judgments))
    monkeypatch.setattr("arena_stream.config.load", lambda path: object())
    assert cli(["leaderboard", "--config", "x.toml", "--style-control", "--json",
                "--style-penalty", "0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["battles"] == 61
    assert data["coefficients"][0]["coef"] > 0  # counted from the answers; length wins
    frame = bt.battles_from_judgments(judgments, style=True)
    assert frame["tokens_a"][-1] == 500  # the recorded counts are used as they are
