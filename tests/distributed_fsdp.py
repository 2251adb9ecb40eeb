"""Run by tests/test_multinode.py under `accelerate launch --use_fsdp ... --num_processes 2`: `scripts/train.py` (the
`ems-train` command, ARGS as given) with accelerate's FSDP plugin on CPU processes (gloo).

accelerate wraps a model in FSDP only on accelerators: on CPU processes its state turns a job launched with
`--use_fsdp` into plain `MULTI_CPU` (DDP) and drops the plugin. Here the state keeps the plugin it was given, as it
does on GPUs, so that `Accelerator.prepare` shards the model with it (FSDP2 `fully_shard` runs on gloo); the
test checks that the checkpoints are sharded."""

from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

from trainers.cli import train

accelerator_state_init = AcceleratorState.__init__


def keep_the_fsdp_plugin(self, *args, fsdp_plugin=None, **kwargs):
    """`AcceleratorState.__init__`, which every `AcceleratorState()` runs again (copying the `MULTI_CPU` of the
    process's `PartialState`), keeping the plugin the first one got."""
    accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    plugin = fsdp_plugin or getattr(self, "fsdp_plugin", None)
    if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, plugin


if __name__ == "__main__":
    AcceleratorState.__init__ = keep_the_fsdp_plugin
    train()  # which ends with `end_processes`
