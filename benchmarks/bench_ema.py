"""Step time and memory of EMA-teacher alignment (Ham & Kim eq. 1-2) on all-MiniLM-L6-v2, side by side in one run:

    python benchmarks/bench_ema.py --steps 8

Three set-ups train on the same length-grouped batches of the embedded corpus (batch and truncation of
configs/ema_minilm.yaml, bf16 autocast on the CPU, AdamW):
- `ema_lora`: LoRA adapters (the config's r and targets) with the EMA teacher over the adapters alone;
- `ema_full`: full fine-tuning with the EMA teacher over every weight (a float32 copy of the model);
- `plain`: full fine-tuning without a teacher: the same MSE loss against the student's own no-grad embedding of the
  pivot sentence, so its forward and backward cost what the EMA set-ups' do, without the teacher's copy and update.

A step is what `EMATeacherTrainer` does per optimiser step: the teacher's forward on the pivot side
(`EMATeacher.embed`), the student's on the other side, eq. 1, backward, `optimizer.step()`, then eq. 2
(`EMATeacher.update`). Step times are interleaved step by step across the set-ups, so machine noise hits all alike;
the EMA update is timed inside each step and reported as its share of the step (goal: under 5 %).

Memory, each set-up in its own fresh process (so one's peak cannot hide another's): peak resident memory
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`) after the same steps, and the exact bytes of the training state that
differs between set-ups: trainable parameters' gradients, AdamW's two moments, and the teacher's tensors.
(`tracemalloc` does not see torch's CPU allocations, hence RSS.)
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch
from peft import LoraConfig
from transformers import AutoModel, AutoTokenizer

from trainers.collators import ParallelPairCollator
from trainers.data import DEFAULT_TRAIN, add_token_lengths, load_parallel_dataset
from trainers.encoding import sentence_embeddings
from trainers.layout import PairLayout
from trainers.loading import minilm_folder, resolve_bf16
from trainers.losses import ema_alignment_loss
from trainers.recipes import load_run_config
from trainers.recipes.ema_alignment import EMATeacher, add_lora

SETUPS = ("ema_lora", "ema_full", "plain")
CONFIG = "configs/ema_minilm.yaml"


def build(setup: str, transformer, lora: dict):
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(transformer, dtype=torch.float32)
    if setup == "ema_lora":
        model = add_lora(model, LoraConfig(**lora))
    model.train()
    teacher = EMATeacher(model) if setup.startswith("ema") else None
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    return model, teacher, optimizer


def step(model, teacher, optimizer, batch, bf16: bool) -> tuple[float, float]:
    """One optimiser step; returns (step seconds, of which the EMA update)."""
    pivot_ids, other_ids = PairLayout.split(batch["input_ids"])
    pivot_mask, other_mask = PairLayout.split(batch["attention_mask"])
    pivot = {"input_ids": pivot_ids, "attention_mask": pivot_mask}
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if teacher is not None:
            target = teacher.embed(model, pivot)  # f_ξ(x_en)
        else:
            with torch.no_grad():
                target = sentence_embeddings(model, pivot)
        student = sentence_embeddings(model, {"input_ids": other_ids, "attention_mask": other_mask})  # f_θ(x_lg)
        loss = ema_alignment_loss(student, target)  # eq. 1
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    update = 0.0
    if teacher is not None:
        began = time.perf_counter()
        teacher.update(model, 0.99999)  # eq. 2
        update = time.perf_counter() - began
    return time.perf_counter() - start, update


def state_bytes(model, teacher, optimizer) -> dict[str, int]:
    trainable = [p for p in model.parameters() if p.requires_grad]
    moments = sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
                  if torch.is_tensor(t) and t.dim() > 0)
    return {"parameters": sum(p.numel() * p.element_size() for p in model.parameters()),
            "gradients": sum(p.numel() * p.element_size() for p in trainable),
            "adam_moments": moments,
            "teacher": sum(t.numel() * t.element_size() for t in teacher.weights.values()) if teacher else 0}


def batches_of(tokenizer, batch_size: int, max_length: int, count: int) -> list[dict]:
    pairs = load_parallel_dataset(DEFAULT_TRAIN).shuffle(seed=0).select(range(batch_size * count * 4))
    pairs = add_token_lengths(pairs, tokenizer)
    order = sorted(range(len(pairs)), key=lambda i: pairs[i]["length"])
    collator = ParallelPairCollator(tokenizer, max_length)
    stride = len(order) // count
    return [collator([pairs[i] for i in order[s:s + batch_size]]) for s in range(0, stride * count, stride)]


def setting():
    run_config = load_run_config(CONFIG)
    transformer = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(transformer)
    training = run_config.training
    return (run_config, transformer, tokenizer, training["per_device_train_batch_size"],
            run_config.student.max_length, resolve_bf16(training.get("bf16", False)))


def memory_child(setup: str, steps: int) -> None:
    """Runs in a fresh process: `steps` steps of one set-up, then prints its peak RSS and state bytes as JSON."""
    run_config, transformer, tokenizer, batch_size, max_length, bf16 = setting()
    batches = batches_of(tokenizer, batch_size, max_length, steps)
    model, teacher, optimizer = build(setup, transformer, run_config.student.lora)
    for batch in batches:
        step(model, teacher, optimizer, batch, bf16)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"peak_rss": peak, **state_bytes(model, teacher, optimizer)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="Timed steps per set-up (default: %(default)s).")
    parser.add_argument("--memory_steps", type=int, default=3, help="Steps of each memory process.")
    parser.add_argument("--memory_child", choices=SETUPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory_steps)
        return

    memory = {}
    for setup in SETUPS:
        result = subprocess.run([sys.executable, __file__, "--memory_child", setup, "--memory_steps",
                                 str(args.memory_steps)], capture_output=True, text=True, check=True)
        memory[setup] = json.loads(result.stdout.strip().splitlines()[-1])

    run_config, transformer, tokenizer, batch_size, max_length, bf16 = setting()
    batches = batches_of(tokenizer, batch_size, max_length, args.steps + 1)
    built = {setup: build(setup, transformer, run_config.student.lora) for setup in SETUPS}
    times = {setup: [0.0, 0.0] for setup in SETUPS}
    for index, batch in enumerate(batches):
        for setup in SETUPS:
            seconds, update = step(*built[setup], batch, bf16)
            if index:  # the first batch warms up
                times[setup][0] += seconds
                times[setup][1] += update

    mib = 1 / 2 ** 20
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; student all-MiniLM-L6-v2, batch {batch_size} pairs, max_length {max_length}, "
          f"bf16={bf16}, {args.steps} timed steps per set-up (interleaved), {args.memory_steps} steps per memory run")
    print("| set-up | step time (s) | vs plain | EMA update (ms) | update share of step | peak RSS (MiB) | "
          "vs plain | gradients + AdamW moments (MiB) | teacher (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    plain_time = times["plain"][0] / args.steps
    for setup in SETUPS:
        seconds, update = (value / args.steps for value in times[setup])
        state = memory[setup]
        share = f"{100 * update / seconds:.2f} %" if setup != "plain" else "n/a"
        print(f"| {setup} | {seconds:.3f} | {seconds / plain_time:.2f}x | {1000 * update:.1f} | {share} | "
              f"{state['peak_rss'] * mib:.0f} | {state['peak_rss'] / memory['plain']['peak_rss']:.2f}x | "
              f"{(state['gradients'] + state['adam_moments']) * mib:.1f} | {state['teacher'] * mib:.1f} |")
    print(f"model parameters: {memory['plain']['parameters'] * mib:.1f} MiB (float32), shared by student and teacher "
          "under LoRA")


if __name__ == "__main__":
    main()
