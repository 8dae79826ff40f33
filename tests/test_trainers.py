"""Training jobs: LoRA SFT and DPO on the local SmolLM2, and ``python -m arena_stream.trainers``.

The slow tests train for a few steps on eight tiny battles and check what the
flywheel relies on: the adapter changes, the loss on the job's own data goes
down (measured by the same function before and after, not read from the
trainer's logs), the saved adapter reproduces the in-memory model when loaded
onto the bare base, and a new version continues its parent's adapter.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import msgspec
import pytest

from arena_stream import trainers
from arena_stream.config import TrainingConfig
from arena_stream.schemas.events import DPOPair, Message, SFTSample, TrainingJob

REPO = Path(__file__).resolve().parent.parent

# (question, winner's answer, loser's answer)
BATTLES = [
    ("What is the capital of France?", "The capital of France is Paris.", "I think it is Lyon."),
    ("What is 2 + 2?", "2 + 2 equals 4.", "It is 5."),
    ("Name a primary color.", "Red is a primary color.", "Green, probably."),
    ("What do bees make?", "Bees make honey.", "Bees make milk."),
    ("How many days are in a week?", "A week has seven days.", "A week has ten days."),
    ("What is frozen water called?", "Frozen water is called ice.", "It is called steam."),
    ("Which planet do we live on?", "We live on planet Earth.", "We live on Mars."),
    ("What color is a clear sky?", "A clear sky is blue.", "A clear sky is green."),
]

# lr 1e-3 with LoRA r=8 moves a 135M model measurably in 3 steps of 4 samples
# (SFT loss on the job's answers roughly halves); the usual 2e-4 would need
# several times the steps to clear noise.
CFG = TrainingConfig(
    learning_rate=1e-3, max_steps=3, batch_size=4, max_length=128, lora_r=8, lora_alpha=16, seed=7,
    progress_every_s=0.0,  # every step reported: the tests compare them with the result
)


def sft_samples() -> list[SFTSample]:
    return [
        SFTSample(
            id=f"sft-{i}", battle_id=f"b{i}", prompt_id=f"p{i}",
            messages=[Message("user", q), Message("assistant", good)],
            winner="gpt", loser="target@v0", margin=4.0,
        )
        for i, (q, good, _) in enumerate(BATTLES)
    ]


def dpo_pairs() -> list[DPOPair]:
    return [
        DPOPair(
            id=f"dpo-{i}", battle_id=f"b{i}", prompt_id=f"p{i}",
            prompt=[Message("user", q)], chosen=good, rejected=bad,
            chosen_model="gpt", rejected_model="target@v0", margin=4.0,
        )
        for i, (q, good, bad) in enumerate(BATTLES)
    ]


def make_job(kind: str, samples: list[Any], **extra: Any) -> TrainingJob:
    return TrainingJob(
        id=f"job-{kind}", kind=kind, base_model="target", base_version=0,  # type: ignore[arg-type]
        sample_ids=[s.id for s in samples], topic=f"arena.train.{kind}", **extra,
    )


def lora_weights(model: Any) -> dict[str, Any]:
    """The active adapter's weights, keyed as in a saved adapter file, detached copies."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_saved(path: str) -> Any:
    """A fresh base model with the saved adapter loaded, as a server would hot-load it."""
    from peft import PeftModel

    from arena_stream.models.local import load_model

    model = PeftModel.from_pretrained(load_model("smollm2"), path)
    model.eval()
    return model


def probe_logits(model: Any, tokenizer: Any) -> Any:
    import torch

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": BATTLES[0][0]}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def run_prepared(kind: str, samples: list[Any], out: Path, cfg: TrainingConfig, **kw: Any) -> dict:
    """Train one job in process and gather what the tests compare."""
    from arena_stream.trainers.dpo import dpo_loss
    from arena_stream.trainers.sft import sft_loss

    logs: list[dict] = []
    prepared = trainers.prepare_job(
        make_job(kind, samples), samples, cfg, base_model="smollm2", out_dir=out,
        on_log=logs.append, **kw,
    )
    model, tokenizer = prepared.trainer.model, prepared.tokenizer

    def loss(m: Any) -> float:
        if kind == "sft":
            return sft_loss(m, tokenizer, samples, max_length=cfg.max_length)
        return dpo_loss(m, tokenizer, samples, beta=cfg.dpo_beta, max_length=cfg.max_length)

    before_weights = lora_weights(model)
    before = loss(model)
    result = prepared.run()
    model = prepared.trainer.model
    return {
        "result": result, "logs": logs, "tokenizer": tokenizer, "model": model,
        "before_weights": before_weights, "after_weights": lora_weights(model),
        "loss_before": before, "loss_after": loss(model), "loss_fn": loss,
    }


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_prepared("sft", sft_samples(), tmp_path_factory.mktemp("sft"), CFG,
                        parent_adapter=None)


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_prepared("dpo", dpo_pairs(), tmp_path_factory.mktemp("dpo"), CFG,
                        parent_adapter=None)


# -- fast: no model --------------------------------------------------------------------------


def test_a_kind_without_a_registry_entry_is_refused_before_any_model_loads(
    tmp_path: Path,
) -> None:
    job = make_job("ppo", [])
    known = "unknown training kind 'ppo'; known: sft, dpo"
    with pytest.raises(trainers.UnsupportedJobKind, match=known):
        trainers.run_job(job, sft_samples(), CFG, base_model="smollm2", parent_adapter=None,
                         out_dir=tmp_path)
    assert issubclass(trainers.UnsupportedJobKind, NotImplementedError)


def test_samples_must_match_the_job_kind(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="SFTSample"):
        trainers.prepare_job(make_job("sft", []), dpo_pairs(), CFG, base_model="smollm2",
                             parent_adapter=None, out_dir=tmp_path)


def test_job_hyperparameters_override_and_typos_fail() -> None:
    from arena_stream.trainers.common import job_config

    cfg = job_config(CFG, make_job("sft", [], hyperparameters={"learning_rate": 5e-5}))
    assert cfg.learning_rate == 5e-5 and cfg.lora_r == CFG.lora_r
    with pytest.raises(ValueError, match="learnig_rate"):
        job_config(CFG, make_job("sft", [], hyperparameters={"learnig_rate": 1.0}))


def test_cli_exits_3_for_a_kind_without_a_registry_entry(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_bytes(msgspec.json.encode(make_job("ppo", [])))
    (tmp_path / "s.jsonl").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "arena_stream.trainers", "--job", str(tmp_path / "job.json"),
         "--samples", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "out"),
         "--result", str(tmp_path / "r.json")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert "unknown training kind 'ppo'; known: sft, dpo" in proc.stderr


# -- slow: SFT ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_changes_the_adapter(sft_run: dict) -> None:
    before, after = sft_run["before_weights"], sft_run["after_weights"]
    assert before.keys() == after.keys() and before
    changed = [k for k in before if not bool((before[k] == after[k]).all())]
    assert len(changed) == len(before)  # A and B of every adapted projection moved
    config = json.loads((Path(sft_run["result"].path) / "adapter_config.json").read_text())
    assert config["r"] == 8
    assert {"q_proj", "v_proj", "down_proj"} <= set(config["target_modules"])


@pytest.mark.slow
def test_sft_lowers_the_loss_on_the_job_data(sft_run: dict) -> None:
    assert sft_run["loss_after"] < 0.8 * sft_run["loss_before"], (
        sft_run["loss_before"], sft_run["loss_after"]
    )


@pytest.mark.slow
def test_sft_result_and_progress(sft_run: dict) -> None:
    result, logs = sft_run["result"], sft_run["logs"]
    assert result.adapter is True
    assert result.metrics["steps"] == 3 and result.metrics["samples"] == 8
    assert result.metrics["tokens_per_second"] > 0 and result.metrics["seconds"] > 0
    assert result.losses == [entry["loss"] for entry in logs]
    assert result.metrics["train_loss_first"] == logs[0]["loss"]
    assert result.metrics["train_loss_last"] == logs[-1]["loss"]
    assert [entry["step"] for entry in logs] == [1, 2, 3]
    assert all("learning_rate" in entry for entry in logs)
    msgspec.json.encode(result)  # the result travels as JSON


@pytest.mark.slow
def test_saved_sft_adapter_matches_the_model_in_memory(sft_run: dict) -> None:
    import torch

    loaded = load_saved(sft_run["result"].path)
    tokenizer = sft_run["tokenizer"]
    torch.testing.assert_close(
        probe_logits(loaded, tokenizer), probe_logits(sft_run["model"], tokenizer),
        rtol=1e-5, atol=1e-5,
    )
    assert sft_run["loss_fn"](loaded) == pytest.approx(sft_run["loss_after"], rel=1e-5)


# -- slow: DPO ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_dpo_changes_the_adapter_and_lowers_the_loss(dpo_run: dict) -> None:
    before, after = dpo_run["before_weights"], dpo_run["after_weights"]
    assert any(not bool((before[k] == after[k]).all()) for k in before)
    # A fresh adapter is the identity over the base, which is also the reference.
    assert dpo_run["loss_before"] == pytest.approx(math.log(2), abs=1e-4)
    assert dpo_run["loss_after"] < 0.6, dpo_run["loss_after"]
    metrics = dpo_run["result"].metrics
    assert metrics["steps"] == 3 and metrics["tokens_per_second"] > 0
    assert metrics["last_rewards_accuracies"] >= 0.5


@pytest.mark.slow
def test_saved_dpo_adapter_matches_the_model_in_memory(dpo_run: dict) -> None:
    import torch

    loaded = load_saved(dpo_run["result"].path)
    tokenizer = dpo_run["tokenizer"]
    torch.testing.assert_close(
        probe_logits(loaded, tokenizer), probe_logits(dpo_run["model"], tokenizer),
        rtol=1e-5, atol=1e-5,
    )


# -- slow: versions continue their parent --------------------------------------------------------


@pytest.mark.slow
def test_dpo_continues_the_parent_adapter(sft_run: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    parent = sft_run["result"].path
    cfg = msgspec.structs.replace(CFG, max_steps=1, lora_r=4)  # r comes from the parent
    prepared = trainers.prepare_job(
        make_job("dpo", dpo_pairs()), dpo_pairs(), cfg, base_model="smollm2",
        parent_adapter=parent, out_dir=tmp_path / "v2",
    )
    saved_parent = load_file(str(Path(parent) / "adapter_model.safetensors"))
    start = lora_weights(prepared.trainer.model)
    assert start.keys() == saved_parent.keys()
    assert all(bool((start[k] == saved_parent[k]).all()) for k in start)
    trainable = [n for n, p in prepared.trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all(".default." in n for n in trainable)

    result = prepared.run()
    # The reference is the parent itself, so the first DPO loss is exactly log 2.
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-4)
    out = Path(result.path)
    assert not (out / "ref").exists()  # the frozen reference copy is not part of the version
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    child = load_file(str(out / "adapter_model.safetensors"))
    assert child.keys() == saved_parent.keys()
    assert any(not bool((child[k] == saved_parent[k]).all()) for k in child)
    # The new version alone on the bare base reproduces the trained model.
    import torch

    torch.testing.assert_close(
        probe_logits(load_saved(result.path), prepared.tokenizer),
        probe_logits(prepared.trainer.model, prepared.tokenizer), rtol=1e-5, atol=1e-5,
    )


# -- slow: the subprocess entry ------------------------------------------------------------------


@pytest.mark.slow
def test_python_m_trainers_runs_a_tiny_job_deterministically(tmp_path: Path) -> None:
    samples = sft_samples()[:2]
    (tmp_path / "job.json").write_bytes(msgspec.json.encode(make_job("sft", samples)))
    (tmp_path / "samples.jsonl").write_bytes(b"\n".join(msgspec.json.encode(s) for s in samples))
    (tmp_path / "config.toml").write_text(
        "[[players]]\nname = \"target\"\nrole = \"target\"\nmodel = \"smollm2\"\n\n"
        "[training]\nmax_steps = 2\nbatch_size = 2\nmax_length = 64\nlora_r = 4\n"
        "learning_rate = 1e-3\nseed = 3\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "arena_stream.trainers", "--job", str(tmp_path / "job.json"),
         "--samples", str(tmp_path / "samples.jsonl"), "--config", str(tmp_path / "config.toml"),
         "--out", str(tmp_path / "v1"), "--result", str(tmp_path / "result.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = msgspec.json.decode((tmp_path / "result.json").read_bytes(), type=trainers.TrainResult)
    assert result.adapter and (Path(result.path) / "adapter_config.json").is_file()
    assert result.metrics["steps"] == 2 and len(result.losses) == 2
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # stdout is only JSON lines
    assert [e["event"] for e in events] == ["log", "log", "result"]
    assert [e["loss"] for e in events[:2]] == result.losses

    # Same job, same seed, in this process: the same losses.
    cfg = TrainingConfig(max_steps=2, batch_size=2, max_length=64, lora_r=4, learning_rate=1e-3,
                         seed=3)
    again = trainers.run_job(make_job("sft", samples), samples, cfg, base_model="smollm2",
                             parent_adapter=None, out_dir=tmp_path / "again")
    assert again.losses == pytest.approx(result.losses, rel=1e-5)
