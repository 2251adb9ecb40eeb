"""Run by tests/test_ema.py under `torchrun --standalone --nproc_per_node 2`, with a tokenizer folder, a JSONL file of
pairs and an output folder as arguments.

`EMATeacherTrainer` on 2 real processes (gloo, DDP): each process updates its own teacher from its own replica of the
student after every optimiser step. The teacher must be the hand-computed average (eq. 2) of the student's steps, and
identical on both processes, bit for bit; so must the student."""

import math
import sys

import torch
import torch.distributed as dist
from transformers import AutoTokenizer, TrainerCallback

from modeling_ems import EMSConfig, EMSModel
from trainers.collators import ParallelPairCollator
from trainers.data import load_parallel_dataset
from trainers.recipes.base import end_processes
from trainers.recipes.ema_alignment.trainer import EMATeacherTrainer, EMATrainingArguments

TAU_BASE, STEPS = 0.9, 3


class RecordStudent(TrainerCallback):
    def __init__(self, model):
        self.model, self.steps = model, []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append({n: p.detach().clone() for n, p in self.model.named_parameters()})


def identical_on_all_processes(tensors: dict[str, torch.Tensor]) -> bool:
    flat = torch.cat([tensors[name].flatten() for name in sorted(tensors)])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    return all(torch.equal(other, gathered[0]) for other in gathered)


def main():
    tokenizer_dir, pairs_file, output_dir = sys.argv[1:4]
    args = EMATrainingArguments(output_dir=output_dir, use_cpu=True, ddp_backend="gloo", per_device_train_batch_size=4,
                                max_steps=STEPS, learning_rate=0.01, tau_base=TAU_BASE, save_strategy="no",
                                report_to="none", disable_tqdm=True, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = EMSModel(EMSConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0, pad_token_id=tokenizer.pad_token_id))
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = EMATeacherTrainer(model=model, args=args, train_dataset=load_parallel_dataset(pairs_file),
                                data_collator=ParallelPairCollator(tokenizer, 32))
    recorder = RecordStudent(model)
    trainer.add_callback(recorder)
    trainer.train()
    rank = dist.get_rank()
    assert isinstance(trainer.model_wrapped, torch.nn.parallel.DistributedDataParallel), type(trainer.model_wrapped)

    expected = initial
    for step, student in enumerate(recorder.steps, start=1):
        tau = 1 - (1 - TAU_BASE) * (math.cos(math.pi * (step - 1) / STEPS) + 1) / 2
        expected = {name: tau * expected[name] + (1 - tau) * student[name] for name in expected}  # eq. 2
    teacher = trainer.ema_teacher.state_dict()
    assert len(recorder.steps) == STEPS and teacher.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(teacher[name], tensor, msg=name)
    assert any(not torch.equal(teacher[name], initial[name]) for name in initial)
    assert identical_on_all_processes(teacher), f"rank {rank}: the teachers differ"
    assert identical_on_all_processes(dict(model.named_parameters())), f"rank {rank}: the students differ"
    print(f"rank {rank}: teacher is the average of the student, identical on 2 processes", flush=True)
    dist.barrier()
    end_processes()


if __name__ == "__main__":
    sys.exit(main())
