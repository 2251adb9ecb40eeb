"""Run by tests/test_multinode.py under `torchrun --standalone --nproc_per_node 2`: `FOLDER_0 FOLDER_1`, each rank's
own output folder (as two nodes without a shared filesystem). Prints the checkpoint each rank resumes from, or the
error it raises."""

import sys
from pathlib import Path

import torch.distributed as dist
from accelerate import PartialState

from trainers.recipes.base import end_processes, resume_checkpoint


def main():
    state = PartialState(cpu=True, backend="gloo")  # as the Trainer sets it up on a CPU
    folder = Path(sys.argv[1 + state.process_index])
    try:
        print(f"rank {state.process_index}: resumes from {resume_checkpoint(folder)}", flush=True)
    except FileNotFoundError as error:
        print(f"rank {state.process_index}: error: {error}", flush=True)
    dist.barrier()  # both ranks got here: nobody hangs
    end_processes()


if __name__ == "__main__":
    main()
