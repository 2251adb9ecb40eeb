"""GradCache (`training.mini_batch_size`, trainers/grad_cache.py) in the EMS trainer: the loss and every gradient
of the whole batch, mini-batch by mini-batch."""

import copy

import datasets
import pytest
import torch

from modeling_ems import DualEncoderMultiTaskConfig, DualEncoderMultiTaskForPreTraining, EMSConfig, EMSForPreTraining
from modeling_ems.modeling_dual_encoder import TASK_SIDES
from trainers.collators import TaskCollator
from trainers.grad_cache import cached_objective, mini_batches
from trainers.recipes.ems.trainer import EMSTrainer, EMSTrainingArguments
from trainers.recipes.multitask.trainer import MultiTaskTrainer, MultiTaskTrainingArguments, TaskDatasets

from .conftest import torchrun
from .distributed_ems import pair_batch


def tiny_model(dropout: float) -> EMSForPreTraining:
    torch.manual_seed(0)
    config = EMSConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=12, language_embedding_size=8,
                       contrastive_projection_size=16, languages=["de", "en", "fr"], hidden_dropout_prob=dropout,
                       attention_probs_dropout_prob=dropout)
    return EMSForPreTraining(config).train()


def ragged_batch(pairs: int = 5, length: int = 10, seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    sides = torch.randint(3, 50, (2, pairs, length), generator=generator)
    lengths = torch.randint(2, length + 1, (2, pairs, 1), generator=generator)
    sides[torch.arange(length) >= lengths] = 0  # ragged: real padding
    return pair_batch(sides[0], sides[1], torch.full((pairs,), 1), torch.tensor([0, 2, 0, 2, 0])[:pairs])


def trainer(tmp_path, model, **arguments) -> EMSTrainer:
    args = EMSTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, **arguments)
    return EMSTrainer(model=model, args=args)


def loss_and_gradients(trainer, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, batch)
    (loss / 2).backward()  # what gradient accumulation does: the mini-batches are scaled alike
    return loss.detach(), {name: parameter.grad.clone() for name, parameter in model.named_parameters()
                           if parameter.grad is not None}  # a multi-task step leaves the other tasks' heads alone


@pytest.mark.parametrize("mini_batch_size", [1, 2, 5])
def test_mini_batches_give_the_loss_and_gradients_of_the_whole_batch(tmp_path, mini_batch_size):
    """5 pairs = 10 rows in mini-batches of 2, 4 (the last of 2) or 10 rows: the loss, the logged terms and the
    gradient of every parameter (encoder and both heads) equal those of the whole batch at once."""
    batch = ragged_batch()
    whole_model, cached_model = tiny_model(0.0), tiny_model(0.0)
    whole, cached = trainer(tmp_path, whole_model), trainer(tmp_path, cached_model, mini_batch_size=mini_batch_size)
    whole_loss, whole_gradients = loss_and_gradients(whole, whole_model, batch)
    cached_loss, cached_gradients = loss_and_gradients(cached, cached_model, batch)
    torch.testing.assert_close(cached_loss, whole_loss)
    for name, value in cached._loss_sums.items():
        torch.testing.assert_close(value, whole._loss_sums[name], msg=name)
    assert set(cached_gradients) == set(whole_gradients) and len(whole_gradients) == len(list(whole_model.parameters()))
    for name, gradient in cached_gradients.items():
        torch.testing.assert_close(gradient, whole_gradients[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_dropout_masks_are_replayed_in_the_second_pass(tmp_path, checkpointing):
    """With dropout, the gradients are those of encoding the same mini-batches with gradients from the same seed
    (the masks of the first, gradient-free pass): the second pass replays each mini-batch's RNG state. Without the
    replay the masks differ and so do the gradients. Activation checkpointing inside the second pass changes
    nothing."""
    batch = ragged_batch()
    model = tiny_model(0.3)
    if checkpointing:
        model.activation_checkpointing_enable()
    reference = copy.deepcopy(model)
    cached = trainer(tmp_path, model, mini_batch_size=2)
    torch.manual_seed(7)
    loss, gradients = loss_and_gradients(cached, model, batch)

    torch.manual_seed(7)
    rows = [cached.per_row(cached.forward_heads(reference, part), part) for part in mini_batches(batch, 4)]
    expected, _ = cached.objective(reference, *(None if parts[0] is None else torch.cat(parts)
                                                 for parts in zip(*rows)))
    (expected / 2).backward()
    torch.testing.assert_close(loss, expected.detach())
    for name, parameter in reference.named_parameters():
        torch.testing.assert_close(gradients[name], parameter.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_mini_batches_drop_only_the_padding_columns_they_all_share():
    batch = ragged_batch()
    parts = mini_batches(batch, 4)
    assert [len(part["input_ids"]) for part in parts] == [4, 4, 2]
    for start, part in zip(range(0, 10, 4), parts):
        width = part["input_ids"].shape[1]
        assert part["attention_mask"][:, -1].any() and not batch["attention_mask"][start:start + 4, width:].any()
        assert torch.equal(part["input_ids"], batch["input_ids"][start:start + 4, :width])
        assert torch.equal(part["translation_ids"], batch["translation_ids"][start:start + 4])


def test_the_loss_scales_every_mini_batch_like_a_plain_loss():
    """`cached_objective`'s loss carries the gradient it receives (here x3) to every mini-batch's parameters."""
    weight = torch.nn.Parameter(torch.tensor([[2.0]]))
    inputs = {"input_ids": torch.ones(4, 1, dtype=torch.long), "attention_mask": torch.ones(4, 1, dtype=torch.long),
              "x": torch.tensor([[1.0], [2.0], [3.0], [4.0]])}
    loss, _ = cached_objective(weight, inputs, 3, lambda w, rows: (rows["x"] @ w,),
                               lambda out: ((out**2).sum(), {}))
    (3 * loss).backward()
    torch.testing.assert_close(weight.grad, torch.tensor([[3 * 2 * 2.0 * 30.0]]))  # d/dw 3 * w^2 * sum x^2


@pytest.mark.parametrize("value, message", [(0, "mini_batch_size=0"), (-2, ">= 1"), (1.5, "number of examples")])
def test_a_mini_batch_size_that_makes_no_sense_is_refused(tmp_path, value, message):
    with pytest.raises(ValueError, match=message):
        EMSTrainingArguments(output_dir=str(tmp_path), mini_batch_size=value)


@pytest.mark.slow
def test_two_processes_with_mini_batches_equal_one_process_on_the_whole_batch():
    """2 gloo processes, DDP, 4 pairs each in mini-batches of 1 pair: the mean loss and the DDP-averaged gradients
    of one process on the 8 pairs at once, and the in-batch candidates logged as 8. The same for the multi-task
    translation ranking with hard negatives (2 pairs each, a false negative across the processes)."""
    stdout = torchrun("distributed_grad_cache.py")
    for rank in (0, 1):
        assert f"rank {rank}: loss" in stdout and "gradients of" in stdout, stdout
        assert f"rank {rank}: multi-task loss" in stdout, stdout


# --- the multi-task ranking tasks ---------------------------------------------------------------------------------
def tiny_multitask_trainer(tmp_path, **arguments) -> MultiTaskTrainer:
    torch.manual_seed(0)
    model = DualEncoderMultiTaskForPreTraining(DualEncoderMultiTaskConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        head_intermediate_size=8, nli_hidden_size=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        tasks=["translation", "response", "quick_thought", "nli"])).train()
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **arguments)
    data = TaskDatasets({"translation": datasets.Dataset.from_dict({"src": ["a"], "tgt": ["b"]})})
    return MultiTaskTrainer(model=model, args=args, train_dataset=data, data_collator=TaskCollator({}))


def task_batch(task: str, examples: int = 3, negatives: int = 2) -> dict:
    """A ragged batch of the task's sides (and for translation K negatives per example), with text ids in which
    row 1's answer recurs as a negative of row 0 (a false negative the loss masks)."""
    rows = examples * len(TASK_SIDES[task]) + (examples * negatives if task == "translation" else 0)
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, 50, (rows, 9), generator=generator)
    input_ids[torch.arange(9) >= torch.randint(2, 10, (rows, 1), generator=generator)] = 0
    text_ids = torch.arange(rows)
    if task == "translation":
        text_ids[2 * examples] = text_ids[examples + 1]
    return {"task": task, "input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "num_examples": examples,
            "text_ids": text_ids}


@pytest.mark.parametrize("task", ["translation", "response", "quick_thought"])
@pytest.mark.parametrize("mini_batch_size", [1, 2])
def test_multitask_mini_batches_give_the_loss_and_gradients_of_the_whole_batch(tmp_path, task, mini_batch_size):
    """Each ranking task's batch (translation with 2 hard negatives an example, a masked false negative among them;
    response and quick-thought through their heads) in mini-batches of 1 or 2 examples' rows: the loss, the logged
    term and every gradient (encoder and the task's heads) equal those of the whole batch at once."""
    batch = task_batch(task)
    whole, cached = tiny_multitask_trainer(tmp_path), tiny_multitask_trainer(tmp_path, mini_batch_size=mini_batch_size)
    whole_loss, whole_gradients = loss_and_gradients(whole, whole.model, batch)
    cached_loss, cached_gradients = loss_and_gradients(cached, cached.model, batch)
    torch.testing.assert_close(cached_loss, whole_loss)
    torch.testing.assert_close(cached._loss_sums[f"{task}_loss"], whole._loss_sums[f"{task}_loss"])
    candidates = 3 * (1 + 2) if task == "translation" else 3  # each answer, and for translation 2 negatives each
    assert cached.batch_figures() == {f"{task}_global_batch": 3, f"{task}_in_batch_candidates": candidates,
                                      "mini_batch_size": mini_batch_size}
    assert set(cached_gradients) == set(whole_gradients)
    for name, gradient in cached_gradients.items():
        torch.testing.assert_close(gradient, whole_gradients[name], rtol=1e-4, atol=1e-5, msg=name)
    heads = {"response": "response_head", "quick_thought": "quick_thought_next_head"}
    if task in heads:  # the task's heads were trained through the cached rows
        assert any(name.startswith(heads[task]) and gradient.abs().sum() > 0
                   for name, gradient in cached_gradients.items())


def test_nli_batches_are_encoded_whole_and_row_sides_refuse_them(tmp_path):
    trainer = tiny_multitask_trainer(tmp_path, mini_batch_size=1)
    batch = {**task_batch("response"), "task": "nli", "labels": torch.tensor([0, 2, 1])}
    loss, _ = loss_and_gradients(trainer, trainer.model, batch)  # through the plain forward: no error
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="the NLI head reads each premise with its hypothesis"):
        trainer.model(batch["input_ids"], batch["attention_mask"], task="nli", row_sides=torch.zeros(6))
