"""Run by tests/test_grad_cache.py under `torchrun --standalone --nproc_per_node 2`.

GradCache (`mini_batch_size`) in the EMS trainer on a DDP-wrapped `EMSForPreTraining`: each process takes its half
of a fixed batch of pairs and encodes it one pair at a time; the mean of the processes' losses and the DDP-averaged
gradients must equal one process's loss and gradients on the whole batch at once (no mini-batches, nothing
gathered), and the first training log must state 8 in-batch candidates."""

import sys
import tempfile

import torch
import torch.distributed as dist
from distributed_ems import pair_batch
from torch.nn.parallel import DistributedDataParallel

from modeling_ems import EMSConfig, EMSForPreTraining
from trainers.losses import ems_objective
from trainers.recipes.ems.trainer import EMSTrainer, EMSTrainingArguments


def main():
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
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
