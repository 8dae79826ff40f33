"""The stream keeps test-set prompts out of arena.prompts, so they never become training data."""

from __future__ import annotations

import json

from arena_stream.schemas import DeadLetter, Generation
from tests.helpers import count, events, prompt, publish_raw, wait_for
from tests.test_restart_audit import run_until


async def test_intake_rejects_test_set_prompts_and_their_paraphrases(make_config, stub, tmp_path):
    testset = tmp_path / "testset.jsonl"
    testset.write_text("\n".join(json.dumps(r) for r in [
        {"id": "t1", "prompt": "How do I bake sourdough bread at home with a starter?"},
        {"id": "t2", "prompt": "Explain how vaccines train the immune system."},
    ]) + "\n")
    extra = f'\n[decontamination]\nagainst = ["{testset}"]\nthreshold = 0.85\n'
    config = make_config(stub.base_url, extra=extra)
    await publish_raw(config, [
        prompt("same", "Explain how vaccines train the immune system."),
        prompt("para", "How can I bake sourdough bread at home using a starter?"),
        prompt("fine", "Write a haiku about a lighthouse in winter."),
    ])
    await run_until(config, "ratings", 2, timeout=120)

    async def rejected_both() -> bool:
        return await count(config, "deadletter") >= 2

    await wait_for(rejected_both, timeout=30)
    dead = await events(config, "deadletter", DeadLetter)
    assert sorted((d.ref, d.reason) for d in dead) == [
        ("para", "test_set_overlap"), ("same", "test_set_overlap")]
    assert "t1" in next(d.error for d in dead if d.ref == "para")
    gens = await events(config, "generations", Generation)
    assert {g.prompt_id for g in gens} == {"fine"}
