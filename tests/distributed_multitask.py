"""Run by tests/test_multitask.py under `torchrun --standalone --nproc_per_node 2`: `TOKENIZER_DIR OUTPUT_DIR`.

1. Translation ranking with K hard negatives through a DDP-wrapped projection: each process takes half of a fixed
   batch (with its pairs' negatives); the mean loss and the gradients equal one process's on the whole batch, so the
   labels stay right when candidates and negatives are gathered.
2. A `MultiTaskTrainer` on four tiny tasks for 8 steps: each process prints the task it trained at every step and
   the rows of each batch."""

import json
import sys
from pathlib import Path

import datasets
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoTokenizer

from modeling_ems import DualEncoderMultiTaskConfig, DualEncoderMultiTaskForPreTraining
from trainers.collators import SidesCollator, TaskCollator
from trainers.losses import ranking_loss
from trainers.recipes.base import end_processes
from trainers.recipes.multitask.trainer import MultiTaskTrainer, MultiTaskTrainingArguments, TaskDatasets


def hard_negative_check(rank: int, world: int) -> None:
    torch.manual_seed(0)
    batch, k, dim = 8, 2, 16
    queries, candidates, negatives = torch.randn(batch, dim), torch.randn(batch, dim), torch.randn(batch * k, dim)
    projection = torch.nn.Linear(dim, 8)
    reference = torch.nn.Linear(dim, 8)
    reference.load_state_dict(projection.state_dict())
    full = ranking_loss(reference(queries), reference(candidates), reference(negatives),
                        gather_across_processes=False).mean()
    full.backward()
    model = DistributedDataParallel(projection)
    local = slice(rank * batch // world, (rank + 1) * batch // world)
    local_negatives = slice(local.start * k, local.stop * k)  # each pair's own K negatives
    loss = ranking_loss(model(queries[local]), model(candidates[local]), model(negatives[local_negatives])).mean()
    loss.backward()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    mean /= world
    torch.testing.assert_close(mean, full.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(projection.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-6)
    print(f"rank {rank}: hard-negative loss {mean.item():.6f} == {full.item():.6f}, gradients equal", flush=True)
    # false negatives masked by text ids across processes: rows 1 (process 0) and 6 (process 1) share a source,
    # and a negative of row 2 is row 5's answer; the halves' mean loss is still the whole batch's
    query_ids, candidate_ids = torch.arange(batch), torch.arange(batch) + 100
    query_ids[6] = query_ids[1]
    negative_ids = torch.arange(batch * k) + 200
    negative_ids[2 * k] = candidate_ids[5]
    masked_full = ranking_loss(queries, candidates, negatives, gather_across_processes=False, query_ids=query_ids,
                               candidate_ids=candidate_ids, negative_ids=negative_ids).mean()
    masked = ranking_loss(queries[local], candidates[local], negatives[local_negatives], query_ids=query_ids[local],
                          candidate_ids=candidate_ids[local], negative_ids=negative_ids[local_negatives]).mean()
    dist.all_reduce(masked)
    masked /= world
    unmasked = ranking_loss(queries, candidates, negatives, gather_across_processes=False).mean()
    assert not torch.isclose(masked_full, unmasked)
    torch.testing.assert_close(masked, masked_full, rtol=1e-5, atol=1e-6)
    print(f"rank {rank}: masked loss {masked.item():.6f} == {masked_full.item():.6f}", flush=True)


def tiny_tasks() -> dict[str, datasets.Dataset]:
    words = [f"word{i}" for i in range(48)]
    return {
        "translation": datasets.Dataset.from_dict({"src": [f"the {w}" for w in words],
                                                   "tgt": [f"das {w}" for w in words],
                                                   "src_lang": ["en"] * 48, "tgt_lang": ["de"] * 48}),
        "response": datasets.Dataset.from_dict({"input": [f"hi {w}" for w in words[:40]],
                                                "response": [f"hello {w}" for w in words[:40]]}),
        "quick_thought": datasets.Dataset.from_dict({"previous": words[:36], "current": words[1:37],
                                                     "next": words[2:38]}),
        "nli": datasets.Dataset.from_dict({"premise": words[:32], "hypothesis": words[1:33],
                                           "label": [i % 3 for i in range(32)]}),
    }


def trainer_schedule(rank: int, tokenizer_dir: str, output_dir: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = DualEncoderMultiTaskConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                        head_intermediate_size=8, nli_hidden_size=8, similarity="cosine")
    torch.manual_seed(0)
    model = DualEncoderMultiTaskForPreTraining(config)
    sides = {"translation": ("src", "tgt"), "response": ("input", "response"),
             "quick_thought": ("previous", "current", "next"), "nli": ("premise", "hypothesis")}
    collator = TaskCollator({task: SidesCollator(tokenizer, 32, columns,
                                                 label_column="label" if task == "nli" else None)
                             for task, columns in sides.items()})
    args = MultiTaskTrainingArguments(output_dir=output_dir, max_steps=8, per_device_train_batch_size=2,
                                      learning_rate=1e-3, use_cpu=True, ddp_backend="gloo", report_to="none",
                                      save_strategy="no", logging_steps=4, seed=3, disable_tqdm=True)
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=TaskDatasets(tiny_tasks()),
                               data_collator=collator, task_batch_sizes={"translation": 3})
    seen = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *rest, **kwargs):
        seen.append([inputs["task"], inputs["input_ids"].tolist()])
        return compute_loss(model, inputs, *rest, **kwargs)

    trainer.compute_loss = recording
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    logged = [sorted(k for k in entry if k.endswith("_loss")) for entry in logs]
    figures = [{k: v for k, v in entry.items() if k.endswith(("_global_batch", "_in_batch_candidates"))}
               for entry in logs]
    # a file per rank: two processes' long lines on one stdout pipe can interleave
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / f"schedule-rank{rank}.json").write_text(json.dumps(
        {"steps": seen, "logged": logged, "figures": figures}))


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    hard_negative_check(rank, world)
    trainer_schedule(rank, sys.argv[1], sys.argv[2])
    dist.barrier()
    end_processes()


if __name__ == "__main__":
    sys.exit(main())
