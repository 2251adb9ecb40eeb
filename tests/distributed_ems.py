"""Run by tests/test_distributed.py under `torchrun --standalone --nproc_per_node 2`.

The full EMS objective (XTR + contrastive, eq. 12) on a DDP-wrapped `EMSForPreTraining`: each process takes its half
of a fixed batch of pairs, and the mean of the processes' losses and the (DDP-averaged) gradients must equal one
process's loss and gradients on the whole batch."""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from modeling_ems import EMSConfig, EMSForPreTraining
from trainers.layout import PairLayout
from trainers.losses import ems_objective
from trainers.recipes.base import end_processes


def pair_batch(sources: torch.Tensor, targets: torch.Tensor, source_languages, target_languages) -> dict:
    """A `PairLayout` batch from token ids (0 = padding) of n sources and their n translations."""
    input_ids = torch.cat(PairLayout.rows([sources], [targets]))
    mask = input_ids != 0
    return {
        "input_ids": input_ids,
        "attention_mask": mask.long(),
        "target_language_ids": torch.cat([target_languages, source_languages]),
        "translation_ids": PairLayout.translations(input_ids),
        "translation_mask": PairLayout.translations(mask),
    }


def loss_of(model, batch, temperature, gather_across_processes=True):
    outputs = model(batch["input_ids"], batch["attention_mask"], target_language_ids=batch["target_language_ids"])
    return ems_objective(outputs.xtr_logits, outputs.contrastive_embeddings, batch["translation_ids"],
                         batch["translation_mask"], temperature, gather_across_processes=gather_across_processes)


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = EMSConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, max_position_embeddings=12, language_embedding_size=8,
                       contrastive_projection_size=16, languages=["de", "en", "fr"], hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    pairs, length = 8, 10
    sources, targets = torch.randint(3, 50, (pairs, length)), torch.randint(3, 50, (pairs, length))
    lengths = torch.randint(3, length + 1, (2, pairs))
    sources[torch.arange(length) >= lengths[0][:, None]] = 0  # ragged: real padding
    targets[torch.arange(length) >= lengths[1][:, None]] = 0
    source_languages = torch.full((pairs,), config.language_id("en"))
    target_languages = torch.tensor([config.language_id(code) for code in ["de", "fr"] * (pairs // 2)])

    reference = EMSForPreTraining(config)
    model = EMSForPreTraining(config)
    model.load_state_dict(reference.state_dict())
    # the reference is one process on the whole batch: its negatives are its own rows, nothing is gathered
    full_loss, full_terms = loss_of(reference, pair_batch(sources, targets, source_languages, target_languages),
                                    config.temperature, gather_across_processes=False)
    full_loss.backward()

    ddp = DistributedDataParallel(model)
    local = slice(rank * pairs // world, (rank + 1) * pairs // world)
    local_loss, local_terms = loss_of(ddp, pair_batch(sources[local], targets[local], source_languages[local],
                                                      target_languages[local]), config.temperature)
    local_loss.backward()
    mean = torch.stack([local_loss.detach(), local_terms["xtr_loss"].detach(),
                        local_terms["contrastive_loss"].detach()])
    dist.all_reduce(mean)
    mean /= world
    expected = torch.stack([full_loss.detach(), full_terms["xtr_loss"].detach(),
                            full_terms["contrastive_loss"].detach()])
    torch.testing.assert_close(mean, expected, rtol=1e-5, atol=1e-6)
    checked = 0
    for (name, parameter), (_, reference_parameter) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(parameter.grad, reference_parameter.grad, rtol=1e-4, atol=1e-6, msg=name)
        checked += 1
    print(f"rank {rank}: loss {mean[0].item():.6f} == {expected[0].item():.6f} (xtr {mean[1].item():.4f}, "
          f"contrastive {mean[2].item():.4f}), gradients of {checked} parameters equal", flush=True)
    dist.barrier()
    end_processes()


if __name__ == "__main__":
    sys.exit(main())
