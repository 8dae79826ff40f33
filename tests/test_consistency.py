"""Leaderboard consistency measures, each checked on a small case worked out by hand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from arena_stream.cli.commands import consistency as command
from arena_stream.offline.consistency import compare, load_leaderboard, separated, spearman
from arena_stream.schemas.events import LeaderboardRow


def row(model: str, lower: float, upper: float, rating: float | None = None) -> LeaderboardRow:
    mid = (lower + upper) / 2 if rating is None else rating
    return LeaderboardRow(model=model, rating=mid, lower=lower, upper=upper, battles=10, rank=0)


# Reference: A [90,110] B [70,85] C [40,60] D [55,75] (+ F, only here)
# It separates A>B, A>C, A>D, B>C; B~D and C~D overlap.
REFERENCE = [row("A", 90, 110), row("B", 70, 85), row("C", 40, 60), row("D", 55, 75),
             row("F", 0, 10)]
# Ours: A [95,105] B [60,80] C [81,90] D [70,100] (+ E, only here)
# On the reference's 4 separated pairs: A>B agree, A>C agree, A~D undecided, C>B disagrees.
# Ours separates AB, AC, BC; AD, BD, CD overlap -> separability 3/6.
# Ratings: ours A100 B70 C85.5 D85 -> ranks 4,1,3,2; reference A100 B77.5 C50 D65 -> 4,3,1,2;
# sum d^2 = 0+4+4+0 = 8 -> rho = 1 - 6*8/(4*15) = 0.2.
OURS = [row("A", 95, 105), row("B", 60, 80), row("C", 81, 90), row("D", 70, 100),
        row("E", 0, 1000)]


def test_spearman_by_hand() -> None:
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # 1 - 6*2/(3*8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties take average ranks: x ranks 1.5,1.5,3 ; y ranks 1,2,3 -> 1.5/sqrt(1.5*2)
    assert spearman([5, 5, 9], [1, 2, 3]) == pytest.approx(1.5 / 3**0.5)
    assert spearman([1], [2]) is None
    assert spearman([4, 4], [1, 2]) is None


def test_spearman_matches_scipy() -> None:
    from scipy.stats import spearmanr

    x = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    y = [2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0]
    assert spearman(x, y) == pytest.approx(float(spearmanr(x, y).statistic))


def test_separated_uses_closed_intervals() -> None:
    assert separated(row("a", 10, 20), row("b", 0, 9)) == 1
    assert separated(row("a", 0, 9), row("b", 10, 20)) == -1
    assert separated(row("a", 10, 20), row("b", 0, 10)) == 0  # touching counts as overlap


def test_measures_by_hand() -> None:
    result = compare(OURS, REFERENCE)
    assert result.models == ["A", "B", "C", "D"]
    assert result.only_ours == ["E"] and result.only_reference == ["F"]
    assert result.pairs == 6
    assert result.spearman == pytest.approx(0.2)
    assert (result.reference_separated, result.agree, result.disagree, result.undecided) == (
        4, 2, 1, 1,
    )
    assert result.agreement == pytest.approx((2 - 1) / 4)
    assert result.ours_separated == 3
    assert result.separability == pytest.approx(0.5)
    assert result.average == pytest.approx((0.2 + 0.25 + 0.5) / 3)


def test_identical_boards_agree_fully() -> None:
    result = compare(REFERENCE, REFERENCE)
    assert result.spearman == pytest.approx(1.0)
    assert result.agreement == pytest.approx(1.0)
    assert result.separability == pytest.approx(8 / 10)  # of 10 pairs only B~D and C~D overlap


def test_undefined_agreement_is_left_out_of_the_average() -> None:
    wide = [row("A", 0, 100, 60), row("B", 0, 100, 40)]
    result = compare(wide, wide)
    assert result.agreement is None
    assert result.separability == 0.0
    assert result.average == pytest.approx((1.0 + 0.0) / 2)


def _write(path: Path, rows: list[LeaderboardRow]) -> str:
    path.write_text(json.dumps([
        {"model": r.model, "rating": r.rating, "lower": r.lower, "upper": r.upper,
         "battles": r.battles, "rank": i + 1}
        for i, r in enumerate(rows)
    ]))
    return str(path)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.main(parser.parse_args(argv))


def test_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ours = _write(tmp_path / "ours.json", OURS)
    ref = _write(tmp_path / "ref.json", REFERENCE)
    assert run(["--ours", ours, "--reference", ref, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spearman"] == pytest.approx(0.2)
    assert out["agreement"] == pytest.approx(0.25)
    assert out["separability"] == pytest.approx(0.5)
    assert out["average"] == pytest.approx(0.95 / 3)
    assert out["common_models"] == 4 and out["pairs"] == 6
    assert run(["--ours", ours, "--reference", ref]) == 0
    assert "agreement (95% CI)" in capsys.readouterr().out


def test_command_rejects_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"model": "A"}]')
    ref = _write(tmp_path / "ref.json", REFERENCE)
    assert run(["--ours", str(bad), "--reference", ref]) == 2
    assert "bad.json" in capsys.readouterr().err
    snapshot = tmp_path / "snap.json"
    snapshot.write_text(json.dumps({"rows": json.loads(Path(ref).read_text())}))
    assert [r.model for r in load_leaderboard(snapshot)] == ["A", "B", "C", "D", "F"]
