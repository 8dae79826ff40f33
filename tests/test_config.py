"""Configuration: the documented shape works, mistakes are reported with their place."""

from __future__ import annotations

import pytest

from arena_stream.config import ConfigError, default_config, load, loads

MINIMAL = """
[broker]
bootstrap_servers = "127.0.0.1:9092"

[[players]]
name = "target"
role = "target"
backend = "openai"
base_url = "http://127.0.0.1:8001/v1"
model = "my-model"
api_key_env = "TARGET_API_KEY"

[[players]]
name = "gpt"
backend = "openai"
base_url = "http://127.0.0.1:8002/v1"
model = "other"

[judge]
backend = "openai"
base_url = "http://127.0.0.1:8003/v1"
model = "judge-model"

[battles]
mode = "target-vs-competitors"

[routing]
sft_margin = 3.0
dpo_margin = 2.0
"""


def test_issue_shape_loads() -> None:
    c = loads(MINIMAL)
    assert c.target.name == "target" and [p.name for p in c.competitors] == ["gpt"]
    assert c.routing.sft_margin == 3.0 and c.ratings.k == 4.0 and c.ratings.initial == 1000


def test_embedded_default() -> None:
    c = default_config()
    assert c.broker.bootstrap_servers is None and c.target.model == "smollm2"
    assert [p.backend for p in c.players] == ["transformers", "reference", "transformers",
                                              "transformers"]
    assert c.judge.kind == "verifier" and c.evaluation.heldout is not None
    assert c.web.enabled and c.web.port == 0  # the live page, on a free port


@pytest.mark.parametrize("change, message", [
    (("[routing]", "[routing]\nsft_margn = 1"), "sft_margn"),
    (("sft_margin = 3.0", 'sft_margin = "high"'),
     "routing.sft_margin: Expected `float`, got `str`"),
    (('role = "target"', 'role = "competitor"'), "exactly one player"),
    (('mode = "target-vs-competitors"', 'mode = "swiss"'), "battles.mode = 'swiss' is not one of"),
    (('name = "gpt"', 'name = "target"'), "unique"),
    (('base_url = "http://127.0.0.1:8003/v1"', ""), "needs base_url"),
    (("[broker]", "[broker\n"), "not valid TOML"),
])
def test_errors_name_the_problem(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(MINIMAL.replace(*change))
    assert message in str(err.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.toml")
