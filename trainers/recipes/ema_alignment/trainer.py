"""EMA-teacher alignment (Ham & Kim, "Semantic Alignment with Calibrated Similarity for Multilingual Sentence
Embedding", sec. 5.2-5.3): a student encoder `f_θ` embeds the non-pivot sentence of each translation pair and learns
to match, by MSE (eq. 1), the embedding of its pivot (English) translation by a teacher `f_ξ` that is an exponential
moving average of the student (eq. 2), with BYOL's cosine schedule of the decay rate (sec. 5.3).

Set-up order, as `EMATeacherTrainer` enforces it: the teacher is built in the trainer's `__init__` from the bare
student, before `train()` wraps the student (`accelerator.prepare`: DDP, ...); after each optimiser step it is updated
on every process from the unwrapped student, which must be the very module it was built from.
"""

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate.utils import extract_model_from_parallel
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback

from ...arguments import EncoderTrainingArguments
from ...data import validate_pairs
from ...encoding import bare_encoder, sentence_embeddings
from ...evaluation.training import SuiteEvaluationMixin
from ...layout import PairLayout
from ...length_grouping import LengthGroupingMixin
from ...loss_logging import LossTermLoggingMixin
from ...losses import ema_alignment_loss, matryoshka_loss

logger = logging.getLogger(__name__)

TEACHER_FILE = "ema_teacher.safetensors"


def ema_tau(step: int, total_steps: int, tau_base: float) -> float:
    """The EMA teacher's decay rate at training step `k = step` of `K = total_steps` (Ham & Kim, sec. 5.3, after
    BYOL): `tau_base` at `k = 0`, rising along a half cosine to 1 at `k = K`."""
    if not 0.0 <= tau_base <= 1.0:
        raise ValueError(f"tau_base={tau_base!r} is outside [0, 1]; use a decay rate such as the paper's 0.99999.")
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r}: the schedule needs K >= 1; pass the run's max_steps.")
    if not 0 <= step <= total_steps:
        raise ValueError(f"step={step!r} is outside [0, K={total_steps}]; pass the 0-based index of the current step.")
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0  # sec. 5.3


# 1 - τ_base times the paper's K: 1e-5 * 105k steps (sec. 6.4). Over a cosine schedule the teacher takes on
# 1 - exp(-(1 - τ_base) K / 2) of the student, 41 % in the paper, whatever K when 1 - τ_base = PAPER_TRAVEL / K.
PAPER_TRAVEL = 1.05


def scaled_tau_base(total_steps: int) -> float:
    """τ_base for a run of `total_steps` optimiser steps such that the teacher travels as far as the paper's over its
    run: `1 - τ_base = 1.05 / K` (the paper's 0.99999 at its K = 105k); 0 for a run of one step."""
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r}: the schedule needs K >= 1; pass the run's max_steps.")
    return max(0.0, 1.0 - PAPER_TRAVEL / total_steps)


class EMATeacher:
    """The teacher `f_ξ`: an exponential moving average of the student's trainable parameters.

    It holds a float32 copy of the student's *trainable* parameters only (float32 whatever the student's dtype: at
    τ = 0.99999 a bf16 average would round every update away) and runs on the student's own module, with these
    weights put in place of the student's for the duration of one forward pass (`embed`). Parameters the student does
    not train are shared, since their average is themselves: with a peft LoRA student the teacher is the adapter
    weights alone and the frozen base serves both. It is plain tensors, not a module, so nothing (DDP, accelerate, the
    optimizer, `save_pretrained`) wraps, trains or saves it by accident.
    """

    def __init__(self, student: nn.Module):
        if extract_model_from_parallel(student, keep_torch_compile=False) is not student:
            raise ValueError(
                f"The student is wrapped ({type(student).__name__}): build the teacher from the bare model, before "
                "accelerator.prepare / DDP wrap it, or from accelerator.unwrap_model(model)."
            )
        trainable = self._trainable(student)
        if not trainable:
            raise ValueError(f"{type(student).__name__} has no trainable parameter, so the teacher has nothing to "
                             "average; unfreeze the student (or add LoRA adapters with add_lora).")
        self.weights = {name: parameter.detach().float().clone() for name, parameter in trainable.items()}  # ξ = θ

    @staticmethod
    def _trainable(student: nn.Module) -> dict[str, nn.Parameter]:
        return {name: parameter for name, parameter in student.named_parameters() if parameter.requires_grad}

    def _matching(self, student: nn.Module) -> dict[str, nn.Parameter]:
        """The student's trainable parameters, which must be the ones the teacher was built from."""
        trainable = self._trainable(student)
        if trainable.keys() != self.weights.keys():
            missing, extra = self.weights.keys() - trainable.keys(), trainable.keys() - self.weights.keys()
            raise ValueError(f"{type(student).__name__} is not the student this teacher was built from: its "
                             f"trainable parameters lack {sorted(missing)[:3]} and add {sorted(extra)[:3]}. Pass the "
                             "same (unwrapped) student.")
        return trainable

    @torch.no_grad()
    def update(self, student: nn.Module, tau: float) -> None:
        """`ξ ← τ ξ + (1 − τ) θ` for every trainable parameter θ of `student` (eq. 2)."""
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau={tau!r} is outside [0, 1]: eq. 2 weighs the teacher by τ and the student by 1 − τ; "
                             "use a decay rate in [0, 1], e.g. ema_tau(step, total_steps, 0.99999).")
        for name, parameter in self._matching(student).items():
            average = self.weights[name]
            theta = parameter.detach().to(average.device, torch.float32)
            average.mul_(tau).add_(theta, alpha=1.0 - tau)  # eq. 2

    @contextmanager
    def _in_place_of(self, student: nn.Module):
        """The student's module in eval mode with the teacher's weights in place of its trainable ones; its own
        weights and mode come back on exit. Nothing is copied when the student is float32 on the teacher's device."""
        parameters = self._matching(student)
        own = {name: parameter.data for name, parameter in parameters.items()}
        was_training = student.training
        student.eval()  # no dropout: the teacher gives a deterministic target
        try:
            for name, parameter in parameters.items():
                parameter.data = self.weights[name].to(parameter.device, parameter.dtype)
            yield student
        finally:
            for name, parameter in parameters.items():
                parameter.data = own[name]
            student.train(was_training)

    @torch.no_grad()
    def embed(self, student: nn.Module, encoded: dict, pooling: str | None = None) -> torch.Tensor:
        """`f_ξ(x)`: the teacher's `(batch, dim)` sentence embeddings of a tokenized batch (see
        `trainers.encoding.sentence_embeddings`), computed with `student`'s module. Call it before the student's own
        forward pass of the step, which must see the student's weights."""
        with self._in_place_of(student):
            return sentence_embeddings(student, encoded, pooling)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.weights)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state.keys() != self.weights.keys():
            missing, extra = self.weights.keys() - state.keys(), state.keys() - self.weights.keys()
            raise ValueError(f"The saved teacher does not fit this student: it lacks {sorted(missing)[:3]} and has "
                             f"extra {sorted(extra)[:3]}. Resume with the student (and LoRA config) the checkpoint "
                             "was trained with.")
        for name, tensor in state.items():
            if tensor.shape != self.weights[name].shape:
                raise ValueError(f"The saved teacher's {name} has shape {tuple(tensor.shape)}, the student's "
                                 f"{tuple(self.weights[name].shape)}; resume with the model the checkpoint was "
                                 "trained with.")
            self.weights[name].copy_(tensor)


def add_lora(student: PreTrainedModel, config: LoraConfig) -> PeftModel:
    """`student` with peft LoRA adapters and its base frozen; the EMA teacher of such a student is the adapters."""
    try:
        return get_peft_model(student, config)
    except ValueError as error:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in student.named_modules()
                         if isinstance(module, nn.Linear)})
        raise ValueError(f"LoRA target_modules={config.target_modules!r} matches no module of "
                         f"{type(student).__name__}, whose linear layers are {linear}: target some of them, e.g. "
                         "['q_proj', 'v_proj'] for EMSModel, ['query', 'value'] for BERT.") from error


def check_encoder(student: nn.Module) -> None:
    """Refuse a student that is not a bare encoder: a head class (under DDP the wrapped model's forward would be the
    head's), or a module whose forward gives no token hidden states (`last_hidden_state`) to pool."""
    inner = student.get_base_model() if isinstance(student, PeftModel) else student
    if bare_encoder(inner) is not inner:
        raise ValueError(f"The student is {type(inner).__name__}, a head class around the encoder "
                         f"{type(bare_encoder(inner)).__name__}; the alignment loss trains the encoder alone: pass "
                         f"model.{inner.base_model_prefix} or AutoModel.from_pretrained(...).")
    parameter = next(student.parameters(), None)
    probe = torch.zeros(1, 1, dtype=torch.long, device=parameter.device if parameter is not None else None)
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            output = student(input_ids=probe, attention_mask=torch.ones_like(probe))
    finally:
        student.train(was_training)
    if getattr(output, "last_hidden_state", None) is None:
        raise ValueError(f"The student {type(student).__name__} is not an encoder: its forward returns "
                         f"{type(output).__name__} without last_hidden_state (token hidden states), so it gives no "
                         "sentence embedding to align. Use an encoder: EMSModel, AutoModel.from_pretrained(...).")


@dataclass
class EMATrainingArguments(EncoderTrainingArguments):
    """`EncoderTrainingArguments` (pair training with a pooling) with the EMA teacher's settings."""

    tau_base: float | None = field(default=None, metadata={
        "help": "τ_base, the teacher's decay rate at step 0, rising to 1 along a cosine (sec. 5.3). None: scaled to "
                "the run, 1 - 1.05 / max_steps, so that the teacher travels as far as the paper's (0.99999 at its "
                "105k steps, sec. 6.4, table 4)."})
    teacher_update_every: int = field(default=1, metadata={
        "help": "Update the teacher (eq. 2) every n optimiser steps, with the schedule's τ of that step."})
    frozen_teacher: bool = field(default=False, metadata={
        "help": "Never update the teacher: distillation from the initial student (the 'freeze teacher' ablation, "
                "table 4)."})

    def __post_init__(self):
        super().__post_init__()
        if self.tau_base is not None and not 0.0 <= self.tau_base <= 1.0:
            raise ValueError(f"tau_base={self.tau_base!r} is outside [0, 1]; use a decay rate such as the paper's "
                             "0.99999.")
        if self.teacher_update_every < 1:
            raise ValueError(f"teacher_update_every={self.teacher_update_every!r}: update the teacher every n >= 1 "
                             "steps, or set frozen_teacher=True to never update it.")


class _TeacherUpdate(TrainerCallback):
    """Eq. 2 at `on_step_end`, which the Trainer calls on every process once per optimiser step (after gradient
    accumulation), after `optimizer.step()` and before that step's checkpoint is saved."""

    def __init__(self, trainer: "EMATeacherTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if not args.frozen_teacher and args.tau_base is None:
            logger.warning("tau_base not given: scaled to the run's K = %d steps, 1 - tau_base = 1.05 / K, tau_base = "
                           "%.6g, so that the teacher travels as far as the paper's (0.99999 at K = 105k).",
                           state.max_steps, self.trainer.tau_base())

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.update_teacher()


class EMATeacherTrainer(LengthGroupingMixin, LossTermLoggingMixin, SuiteEvaluationMixin, Trainer):
    """Trains a sentence encoder on `ParallelPairCollator` batches (`PairLayout`: pivot sources, then their
    translations) by aligning the student's embedding of each translation with the EMA teacher's embedding of its
    pivot source (eq. 1). Logs `alignment_loss` and the decay rate `ema_tau`; each checkpoint holds the teacher
    (`ema_teacher.safetensors`), which `train(resume_from_checkpoint=...)` restores. Trains on one process or DDP,
    and evaluates with an evaluation suite (`set_evaluation_suite`) in the student's pooling.
    """

    def __init__(self, model: nn.Module, args: EMATrainingArguments, **kwargs):
        if not isinstance(args, EMATrainingArguments):
            raise TypeError(f"EMATeacherTrainer takes EMATrainingArguments, got {type(args).__name__}.")
        if kwargs.get("model_init") is not None:
            raise ValueError("model_init builds the student inside train(), after the teacher was built from it: "
                             "pass model= instead.")
        super().__init__(model=model, args=args, **kwargs)
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise ValueError("FSDP / DeepSpeed shard the student's parameters, while the EMA teacher needs them whole "
                             "on each process: train on one process or with DDP.")
        if isinstance(self.train_dataset, datasets.Dataset):
            validate_pairs(self.train_dataset, name="train_dataset")  # names a row with an empty pivot (src) text
        # Set-up order: the teacher is built now, from the bare student, before train() wraps it.
        if self.model_wrapped is not self.model:
            raise RuntimeError("The student was wrapped before the EMA teacher was built from it.")
        self.student = self.model
        self.ema_teacher = EMATeacher(self.student)  # refuses a student that came in wrapped
        check_encoder(self.student)
        self.add_callback(_TeacherUpdate(self))

    def tau_base(self) -> float:
        """`training.tau_base`, or when not given the one scaled to the run (`scaled_tau_base` of K = max_steps)."""
        if self.args.tau_base is not None:
            return self.args.tau_base
        return scaled_tau_base(self.state.max_steps)

    def current_tau(self) -> float:
        """τ of eq. 2 for the optimiser step just taken (0-based k = global_step − 1 of K = max_steps)."""
        return ema_tau(self.state.global_step - 1, self.state.max_steps, self.tau_base())

    def update_teacher(self) -> None:
        """Eq. 2 from the unwrapped student, after an optimiser step, every `teacher_update_every` steps; on every
        process, each of which holds the same student after DDP's averaged step."""
        if self.args.frozen_teacher or self.state.global_step % self.args.teacher_update_every:
            return
        student = self.accelerator.unwrap_model(self.model_wrapped, keep_torch_compile=False)
        if student is not self.student:
            raise RuntimeError(f"The unwrapped model ({type(student).__name__}) is not the student the EMA teacher "
                               "was built from; the model must not be replaced after the trainer is built.")
        self.ema_teacher.update(student, self.current_tau())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pivot_ids, other_ids = PairLayout.split(inputs["input_ids"])
        pivot_mask, other_mask = PairLayout.split(inputs["attention_mask"])
        # the teacher first: it runs on the student's module, which must hold the student's weights for its forward
        teacher = self.ema_teacher.embed(self.student, {"input_ids": pivot_ids, "attention_mask": pivot_mask},
                                         self.args.pooling)  # f_ξ(x_en)
        student = sentence_embeddings(model, {"input_ids": other_ids, "attention_mask": other_mask},
                                      self.args.pooling)  # f_θ(x_lg)
        loss = matryoshka_loss(ema_alignment_loss, [student, teacher], self.args.matryoshka_dims,
                               self.args.matryoshka_weights)  # eq. 1, on the leading dims of each Matryoshka size
        self.record_loss_terms({"alignment_loss": loss})
        return (loss, {"student": student, "teacher": teacher}) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and not self.args.frozen_teacher:
            logs["ema_tau"] = self.current_tau()
        super().log(logs, *args, **kwargs)

    # The teacher is training state, like the optimizer's moments: written and read with them, so it is in the
    # checkpoint before trainer_state.json (the mark of a complete checkpoint) and read after accelerator.prepare.
    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            save_file(self.ema_teacher.state_dict(), os.path.join(output_dir, TEACHER_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = Path(checkpoint) / TEACHER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{checkpoint} has no {TEACHER_FILE}: it was not saved by EMATeacherTrainer (or "
                                    "with save_only_model), so the teacher cannot be restored; resume from a "
                                    "checkpoint of this run, or start over.")
        self.ema_teacher.load_state_dict(load_file(path))
