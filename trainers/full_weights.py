"""The whole weights of a model however training sharded it: what a Hub-ready folder holds and what the final
evaluation runs, for the package's own models (`PreTrainedModel`s built from their config)."""

from pathlib import Path

import torch
from transformers.trainer import TRAINING_ARGS_NAME


def unsharded_class(model: torch.nn.Module) -> type:
    """The model's own class: FSDP2 shards in place, turning `model`'s class into a subclass of `FSDPModule`
    (`FSDP<Class>`) that `save_pretrained` would write into the folder's code and `auto_map`."""
    from torch.distributed import fsdp

    fsdp2 = getattr(fsdp, "FSDPModule", ())  # torch >= 2.6
    return next(cls for cls in type(model).__mro__ if not issubclass(cls, fsdp2))


class FullWeightsSaveMixin:
    """For a `transformers.Trainer` of a `PreTrainedModel`: the final folder (`Recipe.train_model`'s call) holds the
    whole weights. Under FSDP, whatever the plugin's `state_dict_type`, every process's shard is gathered into the
    full state dict (accelerate's `get_state_dict`, as `Trainer.save_model` does for FULL_STATE_DICT; a collective,
    so every process calls this) and the main process saves it through an unsharded copy of the model
    (`unsharded_class`). The folder then loads with `from_pretrained` as a DDP run's does. Checkpoints
    (`_internal_call`) stay in the plugin's format, which resumes."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not self.is_fsdp_enabled or _internal_call:
            return super().save_model(output_dir, _internal_call)
        output_dir = output_dir or self.args.output_dir
        state_dict = self.accelerator.get_state_dict(self.model)  # empty but on the main process
        if not self.args.should_save:
            return
        sharded = self.accelerator.unwrap_model(self.model)
        whole = unsharded_class(sharded)(sharded.config)
        whole.load_state_dict(state_dict)  # strict: every weight gathered
        whole.save_pretrained(output_dir)
        self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, Path(output_dir) / TRAINING_ARGS_NAME)
