"""Run by tests/test_grad_cache.py under `torchrun --standalone --nproc_per_node 2`.

GradCache (`mini_batch_size`) in the EMS trainer on a DDP-wrapped `EMSForPreTraining`: each process takes its half
of a fixed batch of pairs and encodes it one pair at a time; the mean of the processes' losses and the DDP-averaged
gradients must equal one process's loss and gradients on the whole batch at once (no mini-batches, nothing
gathered), and the first training log must state 8 in-batch candidates.

The same for the multi-task trainer's translation ranking with 2 hard negatives per pair (`cached_loss`, rows through
their sides' heads), where a negative of process 0 is an answer of process 1 (a false negative masked across
processes): the reference is one process's plain forward and `task_loss` on the whole batch, taken before the
process group exists, so that nothing is gathered."""

import sys
import tempfile

import datasets
import torch
import torch.distributed as dist
from distributed_ems import pair_batch
from torch.nn.parallel import DistributedDataParallel

from modeling_ems import DualEncoderMultiTaskConfig, DualEncoderMultiTaskForPreTraining, EMSConfig, EMSForPreTraining
from trainers.collators import TaskCollator
from trainers.losses import ems_objective
from trainers.recipes.base import end_processes
from trainers.recipes.ems.trainer import EMSTrainer, EMSTrainingArguments
from trainers.recipes.multitask.tasks import task_loss
from trainers.recipes.multitask.trainer import MultiTaskTrainer, MultiTaskTrainingArguments, TaskDatasets

PAIRS, NEGATIVES = 4, 2  # the multi-task translation batch: pairs over both processes, hard negatives per pair


def multitask_model() -> DualEncoderMultiTaskForPreTraining:
    torch.manual_seed(0)
    return DualEncoderMultiTaskForPreTraining(DualEncoderMultiTaskConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        head_intermediate_size=8, nli_hidden_size=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        similarity="cosine", tasks=["translation"])).train()


def translation_rows() -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged token rows and text ids of PAIRS sources, their targets and NEGATIVES negatives per pair, side by side
    (`SidesCollator`'s layout); the first negative of pair 0 is the target of pair PAIRS - 1."""
    generator = torch.Generator().manual_seed(5)
    rows = PAIRS * (2 + NEGATIVES)
    input_ids = torch.randint(3, 50, (rows, 9), generator=generator)
    input_ids[torch.arange(9) >= torch.randint(2, 10, (rows, 1), generator=generator)] = 0
    text_ids = torch.arange(rows)
    text_ids[2 * PAIRS] = text_ids[2 * PAIRS - 1]
    return input_ids, text_ids


def translation_batch(pairs: slice) -> dict:
    """The rows of `pairs` (sources, targets, their negatives) as a collated translation batch."""
    input_ids, text_ids = translation_rows()
    negatives = torch.arange(2 * PAIRS, len(input_ids)).view(PAIRS, NEGATIVES)[pairs].flatten()
    rows = torch.cat([torch.arange(PAIRS)[pairs], torch.arange(PAIRS, 2 * PAIRS)[pairs], negatives])
    return {"task": "translation", "input_ids": input_ids[rows], "attention_mask": (input_ids[rows] != 0).long(),
            "num_examples": len(torch.arange(PAIRS)[pairs]), "text_ids": text_ids[rows]}


def multitask_reference() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One process, the whole batch at once, no process group: the loss and every gradient."""
    model, batch = multitask_model(), translation_batch(slice(None))
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], task="translation",
                    num_examples=batch["num_examples"])
    loss = task_loss("translation", outputs, similarity="cosine", temperature=model.config.temperature,
                     text_ids=batch["text_ids"])
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def multitask_check(rank: int, world: int, reference_loss, reference_gradients) -> None:
    model = multitask_model()
    with tempfile.TemporaryDirectory() as folder:
        args = MultiTaskTrainingArguments(output_dir=folder, report_to=[], use_cpu=True, mini_batch_size=1,
                                          per_device_train_batch_size=PAIRS // world)
        data = TaskDatasets({"translation": datasets.Dataset.from_dict({"src": ["a"], "tgt": ["b"]})})
        trainer = MultiTaskTrainer(model=model, args=args, train_dataset=data, data_collator=TaskCollator({}))
        local = slice(rank * PAIRS // world, (rank + 1) * PAIRS // world)
        loss = trainer.compute_loss(DistributedDataParallel(model), translation_batch(local))
        loss.backward()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    mean /= world
    torch.testing.assert_close(mean, reference_loss, rtol=1e-5, atol=1e-6)
    gradients = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert set(gradients) == set(reference_gradients), set(gradients) ^ set(reference_gradients)
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, reference_gradients[name], rtol=1e-4, atol=1e-5, msg=name)
    candidates = trainer.batch_figures()["translation_in_batch_candidates"]
    assert candidates == PAIRS * (1 + NEGATIVES), trainer.batch_figures()
    print(f"rank {rank}: multi-task loss {mean.item():.6f} == {reference_loss.item():.6f}, gradients of "
          f"{len(gradients)} parameters equal, {candidates} in-batch candidates", flush=True)


def main():
    reference_loss, reference_gradients = multitask_reference()  # before the group: nothing gathered
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = EMSConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=12, language_embedding_size=8,
                       contrastive_projection_size=16, languages=["de", "en", "fr"], hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    pairs, length = 8, 10
    sides = torch.randint(3, 50, (2, pairs, length))
    sides[torch.arange(length) >= torch.randint(2, length + 1, (2, pairs, 1))] = 0  # ragged: real padding
    source_languages = torch.full((pairs,), config.language_id("en"))
    target_languages = torch.tensor([config.language_id(code) for code in ["de", "fr"] * (pairs // 2)])

    reference = EMSForPreTraining(config).train()
    model = EMSForPreTraining(config).train()
    model.load_state_dict(reference.state_dict())
    whole = pair_batch(sides[0], sides[1], source_languages, target_languages)
    outputs = reference(whole["input_ids"], whole["attention_mask"], target_language_ids=whole["target_language_ids"])
    full_loss, _ = ems_objective(outputs.xtr_logits, outputs.contrastive_embeddings, whole["translation_ids"],
                                 whole["translation_mask"], config.temperature, gather_across_processes=False)
    full_loss.backward()

    with tempfile.TemporaryDirectory() as folder:
        args = EMSTrainingArguments(output_dir=folder, report_to=[], use_cpu=True, mini_batch_size=1,
                                    per_device_train_batch_size=pairs // world)
        trainer = EMSTrainer(model=model, args=args)
        ddp = DistributedDataParallel(model)
        local = slice(rank * pairs // world, (rank + 1) * pairs // world)
        batch = pair_batch(sides[0][local], sides[1][local], source_languages[local], target_languages[local])
        local_loss = trainer.compute_loss(ddp, batch)
        local_loss.backward()
        logs = {"loss": 0.0}
        trainer.log(logs)
    mean = local_loss.detach().clone()
    dist.all_reduce(mean)
    mean /= world
    torch.testing.assert_close(mean, full_loss.detach(), rtol=1e-5, atol=1e-6)
    assert logs["in_batch_candidates"] == logs["global_batch_pairs"] == pairs and logs["mini_batch_size"] == 1, logs
    checked = 0
    for (name, parameter), (_, reference_parameter) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(parameter.grad, reference_parameter.grad, rtol=1e-4, atol=1e-5, msg=name)
        checked += 1
    print(f"rank {rank}: loss {mean.item():.6f} == {full_loss.item():.6f}, gradients of {checked} parameters equal, "
          f"{logs['in_batch_candidates']} in-batch candidates", flush=True)
    multitask_check(rank, world, reference_loss, reference_gradients)
    dist.barrier()
    end_processes()


if __name__ == "__main__":
    sys.exit(main())
