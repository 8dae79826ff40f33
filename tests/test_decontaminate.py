"""Decontamination: planted paraphrases of test prompts go, unrelated prompts stay."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from arena_stream.cli.commands import decontaminate as command
from arena_stream.offline.decontaminate import (
    Decontaminator,
    find_test_overlaps,
    near_duplicates,
    normalize_text,
)

TESTSET = [
    {"id": "t-sky", "prompt": "Explain why the sky is blue.", "subset": "diverse", "cluster": 0},
    {"id": "t-sql", "messages": [{"role": "user", "content":
        "Write a SQL query that returns the second highest salary from an employees table."}],
     "subset": "hard", "cluster": 1, "difficulty": 7},
    {"id": "t-jupiter", "prompt": "How many moons does Jupiter have and how were they discovered?"},
    {"id": "t-france", "prompt": "What are the main causes of the French Revolution?"},
]
OTHER_TESTSET = [{"id": "t-cake", "prompt": "Give me a recipe for a chocolate cake without eggs."}]

# (id, json line as written, expected reason or None when kept)
TRAIN = [
    ("p-sky", '{"id": "p-sky", "prompt": "Can you explain the reason the sky appears blue?"}',
     "test_overlap"),
    ("k-ocean", '{"id":"k-ocean",   "prompt":"Why is the ocean salty?"}', None),
    ("p-sql", json.dumps({"id": "p-sql", "prompt": "Write an SQL query to get the "
                          "second-highest salary in the employees table."}), "test_overlap"),
    ("k-dept", json.dumps({"id": "k-dept", "prompt": "Write a SQL query that counts employees "
                           "per department."}), None),
    ("p-jupiter", json.dumps({"id": "p-jupiter", "messages": [{"role": "user", "content":
        "How many moons orbit Jupiter, and how were they found?"}]}), "test_overlap"),
    ("k-venus", json.dumps({"id": "k-venus", "prompt": "How hot is the surface of Venus?"}), None),
    ("p-france", json.dumps({"id": "p-france", "prompt": "What were the principal reasons "
                             "behind the French Revolution?"}), "test_overlap"),
    ("k-russia", json.dumps({"id": "k-russia", "prompt": "What were the consequences of the "
                             "Russian Revolution?"}), None),
    ("p-cake", json.dumps({"id": "p-cake", "prompt": "  give me a recipe for a CHOCOLATE cake "
                           "without eggs. "}), "test_overlap"),
    ("k-bread", json.dumps({"id": "k-bread", "prompt": "Give me a recipe for banana bread."}),
     None),
    ("d-bread", json.dumps({"id": "d-bread", "prompt": "Give me a recipe for banana bread, "
                            "please!"}), "near_duplicate"),
    ("x-ocean", json.dumps({"id": "x-ocean", "prompt": "why is the  ocean salty?"}),
     "exact_duplicate"),
    ("k-sunset", json.dumps({"id": "k-sunset", "prompt": "Explain why sunsets are red."}), None),
]
EXPECTED_MATCH = {"p-sky": "t-sky", "p-sql": "t-sql", "p-jupiter": "t-jupiter",
                  "p-france": "t-france", "p-cake": "t-cake", "d-bread": "k-bread",
                  "x-ocean": "k-ocean"}


def _jsonl(path: Path, items: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return str(path)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.main(parser.parse_args(argv))


def test_command_removes_paraphrases_and_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_a = _jsonl(tmp_path / "testset.jsonl", TESTSET)
    test_b = _jsonl(tmp_path / "other.jsonl", OTHER_TESTSET)
    train = tmp_path / "train.jsonl"
    lines = [line for _, line, _ in TRAIN]
    lines.insert(3, '{"id": "broken", "prompt": ')  # line 4
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, report_path = tmp_path / "clean.jsonl", tmp_path / "report.json"

    assert run(["--prompts", str(train), "--against", test_a, test_b, "--out", str(out),
                "--report", str(report_path)]) == 0
    assert f"{train}:4: skipped" in capsys.readouterr().err

    # kept lines are the original lines, unchanged, in order
    kept = [line for _, line, reason in TRAIN if reason is None]
    assert out.read_text(encoding="utf-8").splitlines() == kept

    report = json.loads(report_path.read_text(encoding="utf-8"))
    removed = {r["id"]: r for r in report["removals"]}
    assert {pid: r["reason"] for pid, r in removed.items()} == {
        pid: reason for pid, _, reason in TRAIN if reason is not None
    }
    assert {pid: r["match_id"] for pid, r in removed.items()} == EXPECTED_MATCH
    assert removed["p-cake"]["similarity"] == 1.0
    assert removed["p-cake"]["match_source"] == test_b
    assert removed["p-sky"]["similarity"] >= 0.85
    assert removed["x-ocean"]["match_line"] == 2
    assert report["by_reason"] == {"exact_duplicate": 1, "test_overlap": 5, "near_duplicate": 1}
    assert report["bad_lines"][0]["line"] == 4
    assert report["kept"] == len(kept)


def _unit(*rows: list[float]) -> np.ndarray:
    vectors = np.array(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_top_k_bounds_the_neighbours_removed_per_test_prompt() -> None:
    test = _unit([1, 0, 0])
    train = _unit([1, 0.1, 0], [1, 0.2, 0], [1, 0.3, 0], [0, 1, 0])  # three close, one far
    assert set(find_test_overlaps(train, test, top_k=2, threshold=0.9)) == {0, 1}
    assert set(find_test_overlaps(train, test, top_k=5, threshold=0.9)) == {0, 1, 2}
    assert find_test_overlaps(train, test, top_k=5, threshold=0.999) == {}


def test_near_duplicates_are_greedy_in_file_order() -> None:
    # a~b and b~c, but a and c are apart: b goes, c stays (its only twin was removed)
    vectors = _unit([1, 0], [1, 0.268], [1, 0.577], [1, 0.001])  # 0, 15, 30, ~0 degrees
    dropped = near_duplicates(vectors, threshold=0.95)
    assert sorted(dropped) == [1, 3]
    assert dropped[1][0] == 0 and dropped[3][0] == 0


def test_in_memory_filter() -> None:
    filter_ = Decontaminator([p.get("prompt") or p["messages"][0]["content"] for p in TESTSET],
                             test_ids=[p["id"] for p in TESTSET])
    hit, why = filter_.is_contaminated("Can you explain the reason the sky appears blue?")
    assert hit and why is not None and "t-sky" in why
    hit, why = filter_.is_contaminated("EXPLAIN why the sky is blue.")
    assert hit and why == "same text as test prompt t-sky"
    assert filter_.is_contaminated("Why is the ocean salty?") == (False, None)
    verdicts = filter_.check(["What were the principal reasons behind the French Revolution?",
                              "How hot is the surface of Venus?"])
    assert [v.contaminated for v in verdicts] == [True, False]
    assert verdicts[0].match_id == "t-france"


def test_normalize_text() -> None:
    assert normalize_text("  Hello\n\tWORLD ") == normalize_text("hello world")
    assert normalize_text("ﬁne") == "fine"  # NFKC folds the ligature
