"""``arena-stream check`` and the config's own checks: precise lines, every problem at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from arena_stream.cli.checks import model_dir_check
from arena_stream.cli.entry import main
from arena_stream.config import ConfigError, json_schema, loads, validate
from arena_stream.kafka.broker import free_port
from tests.conftest import config_text, length_judge
from tests.openai_stub import OpenAIStub
from tests.test_config import MINIMAL

ROOT = Path(__file__).parents[1]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "arena.toml"
    path.write_text(text)
    return str(path)


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line]


def test_typo_missing_secret_and_dead_server_are_three_precise_lines(
    broker, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("ARENA_TEST_JUDGE_KEY", raising=False)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with OpenAIStub(length_judge, models=["t", "c", "judge"]) as stub:
        text = config_text(bootstrap=broker.address, url=stub.base_url, prefix="chk1.",
                           app_id="chk-1", data_dir=str(tmp_path / "d"))
        text = text.replace('model = "t"', 'model = "t"\nmax_token = 64')  # the typo
        text = text.replace('model = "judge"', 'model = "judge"\napi_key_env = '
                            '"ARENA_TEST_JUDGE_KEY"')  # the missing secret
        text = text.replace(f'base_url = "{stub.base_url}"\nmodel = "c"',
                            f'base_url = "{dead}"\nmodel = "c"\nstartup_timeout_s = 1')
        code = main(["check", "--config", _write(tmp_path, text)])
    lines = _lines(capsys.readouterr().out)
    failed = [line for line in lines if line.startswith("FAIL")]
    assert code == 1
    assert len(failed) == 3, lines
    assert failed[0].endswith(
        "players[target]: unknown key 'max_token' (did you mean 'max_tokens'?)")
    assert failed[1].startswith("FAIL environment variable ARENA_TEST_JUDGE_KEY: not set "
                                "(judge api_key_env)")
    assert failed[2].startswith(f"FAIL player comp (openai c): cannot reach {dead}")
    # The typo did not stop the rest: the broker, the healthy servers were checked.
    assert f"ok   broker {broker.address}" in lines
    assert "ok   player target (openai t)" in lines
    # The judge cannot be asked without its key; that is said once, as a skip, not a failure.
    assert "skip judge (openai judge): not checked without $ARENA_TEST_JUDGE_KEY" in lines


def test_a_good_config_passes_every_check(broker, tmp_path, capsys) -> None:
    with OpenAIStub(length_judge, models=["t", "c", "judge"]) as stub:
        text = config_text(bootstrap=broker.address, url=stub.base_url, prefix="chk2.",
                           app_id="chk-2", data_dir=str(tmp_path / "d"))
        text = text.replace("enabled = false", f'enabled = true\nbase_checkpoint = "{tmp_path}"'
                            f'\nmodel_dir = "{tmp_path / "models"}"')
        code = main(["check", "--config", _write(tmp_path, text)])
    lines = _lines(capsys.readouterr().out)
    assert code == 0, lines
    assert all(line.startswith("ok   ") for line in lines), lines
    names = " | ".join(lines)
    for what in ("config", "model directory", "training base checkpoint", "broker",
                 "player target", "player comp", "judge"):
        assert what in names
    assert not (tmp_path / "models").exists()  # checked, not created


@pytest.mark.parametrize("change, message", [
    (("[routing]", "[ratings]\nk = -4\n\n[routing]"),
     "ratings.k = -4 is out of range: must be > 0"),
    (("[routing]", "[ratings]\nscale = 0\n\n[routing]"),
     "ratings.scale = 0 is out of range: must be > 0"),
    (("[routing]", "[training]\nsft_batch = 0\n\n[routing]"),
     "training.sft_batch = 0 is out of range: must be >= 1"),
    (("[routing]", "[training]\nlora_dropout = 1.5\n\n[routing]"),
     "training.lora_dropout = 1.5 is out of range: must be >= 0 and < 1"),
    (("[routing]", "[training]\nmax_steps = 0\n\n[routing]"),
     "training.max_steps = 0 is out of range: must be -1 (run `epochs`) or >= 1"),
    (("[routing]", "[decontamination]\nthreshold = 1.2\n\n[routing]"),
     "decontamination.threshold = 1.2 is out of range: must be > 0 and <= 1"),
    (('model = "other"', 'model = "other"\ntop_p = 0'),
     "players[gpt].top_p = 0 is out of range: must be > 0 and <= 1"),
    (('model = "other"', 'model = "other"\nconcurrency = 0'),
     "players[gpt].concurrency = 0 is out of range: must be >= 1"),
    (('model = "other"', 'model = "other"\ntemperature = nan'),
     "players[gpt].temperature = nan is out of range: must be >= 0"),
    (("[routing]", "[ratings]\ninitial = inf\n\n[routing]"),
     "ratings.initial = inf must be a finite number"),
    (('model = "judge-model"', 'model = "judge-model"\nscoring = "logprobs"'),
     'judge: scoring = "logprobs" needs backend = "transformers"'),
    (("[broker]", "[broker]\nsecurity_protocol = \"SASL_SSL\""),
     "broker: security_protocol = 'SASL_SSL' needs sasl_mechanism"),
    (("[broker]", '[broker]\nsecurity_protocol = "sasl_ssl"'),
     "broker.security_protocol = 'sasl_ssl' is not one of: "),
    (("[routing]", "[rating]\nk = 8\n\n[routing]"),
     "top level: unknown key 'rating' (did you mean 'ratings'?)"),
    (('model = "my-model"', 'model = "my-model"\nmax_token = 8'),
     "players[target]: unknown key 'max_token' (did you mean 'max_tokens'?)"),
    (("[routing]", "[routing]\nfoo = 1"),
     "routing: unknown key 'foo' (known keys: sft_margin, dpo_margin)"),
])
def test_config_mistakes_say_where_and_what_is_valid(change: tuple[str, str],
                                                     message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(MINIMAL.replace(*change), source="arena.toml")
    assert f"arena.toml: {message}" in str(err.value).splitlines()[0]


def test_every_mistake_is_reported_at_once() -> None:
    text = MINIMAL.replace("[routing]", "[ratings]\nk = -4\nscale = 0\n\n[routing]").replace(
        'model = "other"', 'model = "other"\nmax_tokns = 3')
    with pytest.raises(ConfigError) as err:
        loads(text, source="arena.toml")
    assert str(err.value).splitlines() == [
        "arena.toml: players[gpt]: unknown key 'max_tokns' (did you mean 'max_tokens'?)",
        "arena.toml: ratings.k = -4 is out of range: must be > 0",
        "arena.toml: ratings.scale = 0 is out of range: must be > 0",
    ]


def test_validate_checks_ranges_of_a_config_built_in_code() -> None:
    config = loads(MINIMAL)
    changed = msgspec.structs.replace(
        config, training=msgspec.structs.replace(config.training, dpo_batch=0))
    with pytest.raises(ConfigError, match=r"training.dpo_batch = 0 is out of range: must be >= 1"):
        validate(changed)


def test_cli_prints_each_config_problem_as_its_own_line(tmp_path, capsys) -> None:
    text = MINIMAL.replace("[routing]", "[ratings]\nk = -4\nscale = 0\n\n[routing]")
    assert main(["ratings", "--config", _write(tmp_path, text)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 2
    assert all(line.startswith("arena-stream ratings: error: ") for line in err)


@pytest.mark.parametrize("command", ["worker", "trainer", "run"])
def test_services_stop_on_a_missing_secret_before_waiting_for_anything(
    command: str, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("ARENA_TEST_KAFKA_PASSWORD", raising=False)
    text = config_text(bootstrap=f"127.0.0.1:{free_port()}", url="http://127.0.0.1:1/v1",
                       prefix="chk3.", app_id="chk-3", data_dir=str(tmp_path / "d"))
    text = text.replace('flavor = "tansu"', 'flavor = "tansu"\nsecurity_protocol = '
                        '"SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\nsasl_username = "arena"\n'
                        'sasl_password_env = "ARENA_TEST_KAFKA_PASSWORD"')
    assert main([command, "--config", _write(tmp_path, text)]) == 2
    err = _lines(capsys.readouterr().err)
    assert err == [f"arena-stream {command}: error: environment variable "
                   "ARENA_TEST_KAFKA_PASSWORD: not set (broker sasl_password_env); export it "
                   "where this command runs, or fix the name in the config"]


def test_trainer_stops_on_a_model_directory_it_cannot_write(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    text = config_text(bootstrap=f"127.0.0.1:{free_port()}", url="http://127.0.0.1:1/v1",
                       prefix="chk4.", app_id="chk-4", data_dir=str(tmp_path / "d"))
    text = text.replace("enabled = false", f'enabled = true\nmodel_dir = "{blocker}/models"')
    assert main(["trainer", "--config", _write(tmp_path, text)]) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert f"model directory {blocker}/models: {blocker} is not a directory" in err[0]


def test_model_dir_check_is_off_without_training() -> None:
    assert model_dir_check(loads(MINIMAL.replace("[routing]", "[training]\nenabled = false\n"
                                                 "\n[routing]"))) is None


def test_schema_flag_prints_the_schema(capsys) -> None:
    assert main(["check", "--schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_schema_file_is_current() -> None:
    """docs/config.schema.json is what editors are pointed at; regenerate it with
    ``arena-stream check --schema > docs/config.schema.json``."""
    committed = json.loads((ROOT / "docs" / "config.schema.json").read_text())
    assert committed == json_schema()


def _schema_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in node:  # X | None
        node = next(n for n in node["anyOf"] if n.get("type") != "null")
        return _schema_node(schema, node)
    return node


def _assert_covered(schema: dict[str, Any], node: dict[str, Any], value: Any, where: str) -> None:
    node = _schema_node(schema, node)
    if isinstance(value, dict) and node.get("type") == "object" and "properties" in node:
        assert node.get("additionalProperties") is False, where
        for key, item in value.items():
            assert key in node["properties"], f"{where}.{key} not in the schema"
            _assert_covered(schema, node["properties"][key], item, f"{where}.{key}")
    elif isinstance(value, list) and node.get("type") == "array":
        for i, item in enumerate(value):
            _assert_covered(schema, node["items"], item, f"{where}[{i}]")


@pytest.mark.parametrize("path", ["deploy/arena.toml", "arena_stream/data/default.toml"])
def test_schema_covers_the_shipped_configs_and_carries_ranges(path: str) -> None:
    schema = json_schema()
    document = msgspec.toml.decode((ROOT / path).read_bytes())
    _assert_covered(schema, schema, document, "$")
    ratings = schema["$defs"]["RatingsConfig"]["properties"]
    assert ratings["k"]["exclusiveMinimum"] == 0 and ratings["k"]["default"] == 4.0
    assert schema["$defs"]["TrainingConfig"]["properties"]["sft_batch"]["minimum"] == 1


def test_only_some_checks(broker, tmp_path, capsys) -> None:
    """What the trainer's container health check runs: no model server is asked."""
    text = config_text(bootstrap=broker.address, url="http://127.0.0.1:1/v1", prefix="chk5.",
                       app_id="chk-5", data_dir=str(tmp_path / "d"))
    text = text.replace("enabled = false", f'enabled = true\nmodel_dir = "{tmp_path / "m"}"')
    code = main(["check", "--config", _write(tmp_path, text), "--only", "broker,model-dir"])
    lines = _lines(capsys.readouterr().out)
    assert code == 0, lines
    assert [line.split()[1] for line in lines] == ["config", "model", "broker"]


def test_only_rejects_unknown_checks(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--config", "x.toml", "--only", "broker,modles"])
    assert "unknown check(s) modles; choose from secrets, files" in capsys.readouterr().err
