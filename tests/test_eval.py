"""Offline evaluation against real local HTTP servers: all pairs, two games, caching."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from arena_stream.cli.entry import main as cli
from arena_stream.config import loads
from tests.conftest import config_text


def players(url: str, names: list[str]) -> str:
    out = ""
    for i, name in enumerate(names):
        role = 'role = "target"\n' if i == 0 else ""
        model = {"target": "t", "comp": "c", "mid": "d"}[name]
        out += (f'\n[[players]]\nname = "{name}"\n{role}backend = "openai"\n'
                f'base_url = "{url}"\nmodel = "{model}"\nbackoff_s = 0.01\n')
    return out


def test_eval_judges_all_pairs_and_reuses_its_cache(stub, tmp_path: Path, capsys) -> None:
    testset = tmp_path / "testset.jsonl"
    testset.write_text("\n".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}",
                                             "subset": "diverse", "cluster": i})
                                 for i in range(4)) + "\n")

    def write_config(names: list[str]) -> Path:
        text = config_text(bootstrap="127.0.0.1:1", url=stub.base_url, prefix="e.",
                           app_id="eval", players=players(stub.base_url, names))
        path = tmp_path / f"{len(names)}.toml"
        path.write_bytes(msgspec.toml.encode(loads(text)))
        return path

    out = tmp_path / "battles.jsonl"
    cache = tmp_path / "cache"
    args = ["eval", "--testset", str(testset), "--out", str(out), "--cache-dir", str(cache),
            "--bootstrap", "20", "--json"]
    assert cli([*args, "--config", str(write_config(["target", "comp"]))]) == 0
    board = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in board] == ["comp", "target@v0"]  # the longer answer wins
    assert all({"model", "rating", "lower", "upper", "battles", "rank"} <= set(r) for r in board)
    judge_calls = sum(b.get("model") == "judge" for _, b, _ in stub.requests)
    assert judge_calls == 4 * 2  # 4 prompts, one pair, two games each

    # one more model: only its answers and its battles are new
    before = len(stub.requests)
    assert cli([*args, "--config", str(write_config(["target", "comp", "mid"]))]) == 0
    new = stub.requests[before:]
    assert sum(b.get("model") == "d" for _, b, _ in new) == 4
    assert sum(b.get("model") in ("t", "c") for _, b, _ in new) == 0
    assert sum(b.get("model") == "judge" for _, b, _ in new) == 4 * 2 * 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and {"model_a", "model_b", "winner"} <= set(rows[0])
    board = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in board] == ["comp", "mid", "target@v0"]
    # the battles file is what `leaderboard --battles` reads
    assert cli(["leaderboard", "--battles", str(out), "--json", "--bootstrap", "10"]) == 0
    assert {r["model"] for r in json.loads(capsys.readouterr().out)} == {"comp", "mid",
                                                                         "target@v0"}


def test_eval_asks_again_when_a_player_setting_changes(stub, tmp_path: Path, capsys) -> None:
    """The cache keys answers on the model's settings: a new temperature, system prompt or
    model is asked again; the other players' answers and the judge's verdicts on unchanged
    answers are reused. Both offline commands share this one SQLite cache."""
    testset = tmp_path / "testset.jsonl"
    testset.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n"
                               for i in range(3)))
    cache = tmp_path / "cache"
    (cache).mkdir()
    (cache / "answers.jsonl").write_text('{"key": "target@v0\\u001fq0", "value": "stale"}\n')

    def run(extra: str) -> list[dict]:
        text = config_text(bootstrap="127.0.0.1:1", url=stub.base_url, prefix="e.",
                           app_id="eval", players=players(stub.base_url, ["target", "comp"]))
        text = text.replace('model = "t"\n', f'model = "t"\n{extra}', 1)
        path = tmp_path / "c.toml"
        path.write_bytes(msgspec.toml.encode(loads(text)))
        before = len(stub.requests)
        assert cli(["eval", "--testset", str(testset), "--out", str(tmp_path / "b.jsonl"),
                    "--cache-dir", str(cache), "--config", str(path), "--json"]) == 0
        capsys.readouterr()
        return [body for _, body, _ in stub.requests[before:]]

    first = run("")
    assert sum(b.get("model") == "t" for b in first) == 3  # the old JSONL cache is not read
    assert (cache / "cache.sqlite").is_file()
    assert run("") == []  # nothing changed: everything from the cache
    for extra in ("temperature = 0.7\n", "system_prompt = \"Be brief.\"\n", "seed = 5\n",
                  "max_tokens = 33\n"):
        again = run(extra)
        assert sum(b.get("model") == "t" for b in again) == 3, extra
        assert sum(b.get("model") == "c" for b in again) == 0, extra
    hotter = run("temperature = 0.7\n")
    assert hotter == []  # that setting's answers are cached now too


def test_eval_progress_bars_go_to_stderr_never_into_json(stub, tmp_path: Path, capsys) -> None:
    from arena_stream import progress_bars

    testset = tmp_path / "testset.jsonl"
    testset.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n"
                               for i in range(3)))
    text = config_text(bootstrap="127.0.0.1:1", url=stub.base_url, prefix="e.", app_id="eval",
                       players=players(stub.base_url, ["target", "comp"]))
    path = tmp_path / "c.toml"
    path.write_bytes(msgspec.toml.encode(loads(text)))
    args = ["eval", "--testset", str(testset), "--out", str(tmp_path / "b.jsonl"),
            "--cache-dir", "", "--config", str(path), "--json"]
    progress_bars.set_enabled(True)  # as on a terminal
    try:
        assert cli(args) == 0
    finally:
        progress_bars.set_enabled(None)
    captured = capsys.readouterr()
    assert "answers" in captured.err and "6/6" in captured.err  # 3 prompts x 2 players
    assert "battles" in captured.err and "3/3" in captured.err
    assert {r["model"] for r in json.loads(captured.out)} == {"comp", "target@v0"}
