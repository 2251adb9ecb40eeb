"""What several processes and nodes must agree on, on 2 real processes: the checkpoint to resume from
(`resume_checkpoint`), and under FSDP the whole model, saved and evaluated."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from transformers import AutoModel, AutoModelForPreTraining, AutoTokenizer

from trainers.encoding import encode
from trainers.evaluation.retrieval import retrieval_by_language
from trainers.recipes import get_recipe, load_run_config

from .conftest import torchrun, write_jsonl

REPOSITORY = Path(__file__).resolve().parents[1]


def checkpoint(folder, step):
    (folder / f"checkpoint-{step}").mkdir(parents=True)
    (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")


@pytest.mark.slow
def test_every_process_resumes_from_the_main_process_s_checkpoint_or_all_raise(tmp_path):
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    checkpoint(node0, 20)
    checkpoint(node1, 10)  # an older copy: resuming from it would train other steps than node 0
    stdout = torchrun("distributed_resume.py", str(node0), str(node1))
    for rank in (0, 1):
        assert (f"rank {rank}: error: The main process resumes from checkpoint-20, which process 1 of 2 cannot see "
                f"in its {node1 if rank else node0}") in stdout, stdout
    checkpoint(node1, 20)  # the same checkpoint on both nodes: both resume from it
    stdout = torchrun("distributed_resume.py", str(node0), str(node1))
    assert f"rank 0: resumes from {node0 / 'checkpoint-20'}" in stdout and (
        f"rank 1: resumes from {node1 / 'checkpoint-20'}" in stdout), stdout


# configs/ems_paper.yaml at tiny sizes: its layer shape, dropout, schedule and data sections, a 32-wide model
PAPER_SHAPED = ["model.hidden_size=32", "model.num_hidden_layers=2", "model.num_attention_heads=4",
                "model.intermediate_size=64", "model.max_position_embeddings=32", "model.language_embedding_size=8",
                "model.contrastive_projection_size=16", "tokenizer.vocab_size=1000", "training.max_steps=4",
                "training.save_steps=2", "training.logging_steps=2", "training.warmup_steps=0",
                "training.per_device_train_batch_size=4", "training.gradient_accumulation_steps=2",
                "training.dataloader_num_workers=0", "training.dataloader_persistent_workers=false"]


# configs/multitask_default.yaml at tiny sizes: three tasks cycled (each step leaves two heads without gradient)
MULTITASK_SHAPED = ["model.hidden_size=32", "model.num_hidden_layers=2", "model.num_attention_heads=4",
                    "model.intermediate_size=64", "model.max_position_embeddings=32", "model.head_intermediate_size=16",
                    "tokenizer.vocab_size=1000", "tasks.translation.batch_size=4", "tasks.response.batch_size=4",
                    "tasks.response.max_examples=200", "tasks.quick_thought.batch_size=4",
                    "tasks.quick_thought.max_examples=200", "training.max_steps=4", "training.save_steps=2",
                    "training.logging_steps=2", "training.warmup_steps=0", "training.per_device_train_batch_size=4",
                    "training.gradient_accumulation_steps=2", "training.dataloader_num_workers=0"]


@pytest.mark.slow
@pytest.mark.parametrize("config, shaped, heads_class, encoder_class, code", [
    ("ems_paper", PAPER_SHAPED, "EMSForPreTraining", "EMSModel", {"configuration_ems", "modeling_ems"}),
    ("multitask_default", MULTITASK_SHAPED, "DualEncoderMultiTaskForPreTraining", "DualEncoderMultiTask",
     {"configuration_dual_encoder", "modeling_dual_encoder"}),
])
def test_an_fsdp_run_saves_the_whole_model_as_a_hub_folder_and_evaluates_it(
        tmp_path, small_pairs, heldout_pairs, config, shaped, heads_class, encoder_class, code):
    """`ems-prepare`, then `accelerate launch --use_fsdp` (FSDP2, checkpoints as SHARDED_STATE_DICT) of a shipped
    config at tiny sizes on 2 gloo processes (the EMS paper's; the multi-task default, whose steps each train one
    task's head): the run trains with sharded weights, and ends with the folder a DDP run ends with: the whole
    weights (those of the last sharded checkpoint, consolidated here by torch.distributed.checkpoint), code and
    `auto_map` of the package's own modules, loading with `AutoModel`, and the evaluation of what it holds."""
    output = tmp_path / "fsdp"
    overrides = [f"data.train={write_jsonl(tmp_path / 'train.jsonl', small_pairs[:1200])}",
                 f"data.heldout={write_jsonl(tmp_path / 'heldout.jsonl', heldout_pairs[:120])}", *shaped]
    options = ["--config", config, "--output_dir", str(output), *(f"--set={value}" for value in overrides)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    subprocess.run([sys.executable, "scripts/prepare.py", *options], check=True, capture_output=True, env=env,
                   cwd=REPOSITORY, timeout=300)
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2",
         "--fsdp_state_dict_type", "SHARDED_STATE_DICT", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
         "--num_processes", "2", "--main_process_port", "0", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "tests/distributed_fsdp.py", *options],
        capture_output=True, text=True, env=env, cwd=REPOSITORY, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-5000:]

    checkpoint = output / "checkpoint-4"  # sharded: FSDP ran, and Trainer.save_model alone would save no weights
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir() and not (checkpoint / "model.safetensors").exists()
    dcp_to_torch_save(checkpoint / "pytorch_model_fsdp_0", tmp_path / "consolidated.pt")
    trained = torch.load(tmp_path / "consolidated.pt")["model"]

    folder_config = json.loads((output / "config.json").read_text())
    assert {name.split(".")[0] for name in folder_config["auto_map"].values()} == code
    assert not list(output.glob("_fsdp*.py")), sorted(path.name for path in output.iterdir())
    heads = AutoModelForPreTraining.from_pretrained(output, trust_remote_code=True)
    assert type(heads).__name__ == heads_class and heads.state_dict().keys() == trained.keys()
    for name, tensor in heads.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    encoder = AutoModel.from_pretrained(output, trust_remote_code=True)
    assert type(encoder).__name__ == encoder_class

    results = json.loads((output / "eval_results.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(output)
    run_config = load_run_config(config, overrides)
    _, evaluation = get_recipe(run_config.recipe)(run_config, output).load_data()  # the held-out pairs, as trained
    for name in ("heldout", "out_of_domain"):
        expected = retrieval_by_language(evaluation[name], lambda texts: encode(encoder, tokenizer, texts))
        assert results[name]["model"]["average"]["p@1"] == pytest.approx(expected["average"]["p@1"]), name
    # 4 pairs on each of 2 processes, 2 accumulated batches per optimizer step
    assert results["training"]["processes"] == 2 and results["training"]["global_batch_size"] == 16
    assert "global_batch_size: 16" in (output / "README.md").read_text()
