"""The event reference is generated from the code and must be current."""

from pathlib import Path

from arena_stream.schemas.docs import render


def test_events_reference_is_current() -> None:
    path = Path(__file__).parent.parent / "docs" / "events.md"
    assert path.read_text() == render(), "run: python -m arena_stream.schemas.docs > docs/events.md"


def test_deploy_config_is_in_step_with_the_format() -> None:
    from arena_stream.config import load

    root = Path(__file__).parent.parent
    config = load(root / "deploy" / "arena.toml")
    compose = (root / "docker-compose.yml").read_text()
    assert "./deploy/arena.toml:/config/arena.toml" in compose
    for player in config.players:
        host = (player.base_url or "").split("//")[1].split(":")[0]
        assert f"  {host}:" in compose, f"{player.name}'s server {host} is not a compose service"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in compose and "--enable-lora" in compose
