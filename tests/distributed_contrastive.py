"""Run by tests/test_distributed.py under `torchrun --standalone --nproc_per_node 2`.

Each process takes its half of a fixed batch, computes the contrastive loss with negatives gathered from both
processes through a DDP-wrapped projection, and compares the loss and the parameter gradients with one process
computing the loss on the whole batch."""

import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from trainers.losses import contrastive_loss
from trainers.recipes.base import end_processes


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    batch, dim = 8, 16
    source_in, target_in = torch.randn(batch, dim), torch.randn(batch, dim)
    projection = torch.nn.Linear(dim, 8)

    reference = torch.nn.Linear(dim, 8)
    reference.load_state_dict(projection.state_dict())
    full = contrastive_loss(reference(source_in), reference(target_in), 0.1, gather_across_processes=False).mean()
    full.backward()

    model = DistributedDataParallel(projection)
    local = slice(rank * batch // world, (rank + 1) * batch // world)
    local_loss = contrastive_loss(model(source_in[local]), model(target_in[local]), 0.1).mean()
    local_loss.backward()
    mean_loss = local_loss.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= world

    torch.testing.assert_close(mean_loss, full.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(projection.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(projection.bias.grad, reference.bias.grad, rtol=1e-5, atol=1e-6)
    print(f"rank {rank}: loss {mean_loss.item():.6f} == {full.item():.6f}, gradients equal", flush=True)
    dist.barrier()
    end_processes()


if __name__ == "__main__":
    sys.exit(main())
