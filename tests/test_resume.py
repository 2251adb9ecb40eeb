"""Nothing is lost: a run killed after a checkpoint and started again resumes from it and ends exactly where the
uninterrupted run of the same schedule ends: the same per-step losses and the same final weights."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from .conftest import write_jsonl

HERE = Path(__file__).resolve().parent
STEPS, SAVE_STEPS, DIE_AT = 12, 4, 6


def config_file(tmp_path, tokenizer_dir, small_pairs, heldout_pairs) -> Path:
    raw = {
        "recipe": "ems",
        # dropout on: resuming must restore the RNG states, not only the weights and the optimizer
        "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
                  "max_position_embeddings": 32, "language_embedding_size": 8, "contrastive_projection_size": 16},
        "tokenizer": {"path": str(tokenizer_dir)},
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", small_pairs[:2000])),
                 "heldout": str(write_jsonl(tmp_path / "heldout.jsonl", heldout_pairs[:40])),
                 "out_of_domain": "debian"},
        # length-grouped shuffling: resuming must also replay the sampler's order
        "training": {"per_device_train_batch_size": 16, "max_steps": STEPS, "save_steps": SAVE_STEPS,
                     "logging_steps": 1, "learning_rate": 0.002, "warmup_steps": 2, "seed": 3, "report_to": "none",
                     "train_sampling_strategy": "group_by_length", "disable_tqdm": True, "save_total_limit": 2},
    }
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(script: Path, config: Path, output_dir: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), "--config", str(config), "--output_dir", str(output_dir)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(HERE.parent), **env},
    )


def step_losses(output_dir: Path) -> list[tuple]:
    state = json.loads((output_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [(e["step"], e["loss"], e["xtr_loss"], e["contrastive_loss"]) for e in state["log_history"] if "loss" in e]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_losses_and_weights(tmp_path, tokenizer_dir, small_pairs, heldout_pairs):
    config = config_file(tmp_path, tokenizer_dir, small_pairs, heldout_pairs)
    train = HERE.parent / "scripts" / "train.py"

    straight = run(train, config, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    killed = run(HERE / "train_then_die.py", config, interrupted, DIE_AT_STEP=str(DIE_AT))
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    assert sorted(p.name for p in interrupted.glob("checkpoint-*")) == [f"checkpoint-{SAVE_STEPS}"]
    assert not (interrupted / "model.safetensors").exists()
    before_the_kill = json.loads((interrupted / f"checkpoint-{SAVE_STEPS}" / "training_time.json").read_text())
    # killed, then started again with another config: refused with the differences, and nothing of the run touched
    changed = subprocess.run([sys.executable, str(train), "--config", str(config), "--output_dir", str(interrupted),
                              "--set", "training.learning_rate=0.5"], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert changed.returncode == 2 and "holds a run of another config" in changed.stderr, changed.stderr[-2000:]
    assert "training.learning_rate: 0.002 -> 0.5" in changed.stderr
    assert sorted(p.name for p in interrupted.glob("checkpoint-*")) == [f"checkpoint-{SAVE_STEPS}"]
    # a checkpoint cut short while being written (no trainer_state.json yet) is skipped, not resumed from
    shutil.copytree(interrupted / f"checkpoint-{SAVE_STEPS}", interrupted / "checkpoint-5")
    (interrupted / "checkpoint-5" / "trainer_state.json").unlink()

    resumed = run(train, config, interrupted)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {interrupted / f'checkpoint-{SAVE_STEPS}'}" in resumed.stderr
    assert "Skipping" in resumed.stderr and "checkpoint-5" in resumed.stderr

    # the card's training summary covers the whole run, not the resumed session alone
    summaries = [json.loads((folder / "eval_results.json").read_text())["training"]
                 for folder in (tmp_path / "straight", interrupted)]
    assert summaries[0]["global_step"] == summaries[1]["global_step"] == STEPS
    assert summaries[1]["train_loss"] == pytest.approx(summaries[0]["train_loss"], abs=2e-4)
    assert summaries[1]["train_runtime_s"] >= round(before_the_kill["train_runtime_s"], 1) > 0

    expected, got = step_losses(tmp_path / "straight"), step_losses(interrupted)
    assert [entry[0] for entry in expected] == list(range(1, STEPS + 1))
    assert got == expected  # every step's loss and terms, exactly
    weights = load_file(interrupted / "model.safetensors")
    reference = load_file(tmp_path / "straight" / "model.safetensors")
    assert weights.keys() == reference.keys() and any(k.startswith("xtr_head.") for k in weights)
    for name, tensor in reference.items():
        assert torch.equal(weights[name], tensor), name
