"""Training throughput of the multi-task dual encoder, side by side in one run: each task alone, the tasks cycled
(sec. 3.2), with subword input and with word + character n-gram input (sec. 2.1).

    python benchmarks/bench_multitask.py                  # default model size, 4 timed steps per task, 2 rounds
    python benchmarks/bench_multitask.py --steps 2 --rounds 1 --smoke

Configurations, for each input type (`subword`, `char_ngram`), all on `trainers/configs/multitask_default.yaml`'s
model, tasks and batch sizes (translation 128 pairs, response 64 turns, quick-thought 64 triples):

    translation / response / quick_thought   MultiTaskTrainer on that task alone
    cycled                                   MultiTaskTrainer cycling the three tasks, one step each

Method: one SentencePiece tokenizer (trained on the embedded corpus) and the task data are prepared once; each
configuration is a real `Trainer.train` run in this process (no evaluation, no saving, no logging), with the same
seed, so each task sees the same batches alone and cycled. Configurations are interleaved over the rounds so that
machine noise hits all alike. A `TrainerCallback` times each optimizer step (on_step_begin -> on_step_end: fetching
and tokenizing the batch, forward, backward, clipping, AdamW) after `warmup` steps per task; reported: the fastest
time of each timed step over the rounds, averaged per task (load on a shared machine only adds time), as seconds
per step and examples per second. Cycling overhead = (cycled mean step time) / (mean of the three single-task step
times): 1.00 means cycling costs nothing beyond the tasks' own steps.
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
TASKS = ("translation", "response", "quick_thought")


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="Timed steps per task and configuration.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps per task first.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="A tiny model: check that everything runs.")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "bench_multitask.json"))
    args = parser.parse_args()

    from trainers.recipes import load_run_config, training_arguments
    from trainers.recipes.multitask import MultiTaskRecipe, TaskDatasets

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench_multitask_"))
    overrides = ["training.report_to=none", "training.save_strategy='no'", "training.logging_strategy='no'",
                 "training.disable_tqdm=true"]
    if args.smoke:
        overrides += ["model.hidden_size=32", "model.num_hidden_layers=1", "model.intermediate_size=64",
                      "tokenizer.vocab_size=2000"]
    base = load_run_config("multitask_default", overrides)
    recipe = MultiTaskRecipe(base, work)
    run_args, _ = training_arguments(recipe.arguments_class, base, work)
    train, _ = recipe.load_data()
    tokenizer = recipe.prepare_tokenizer(train, run_args)
    data = recipe.prepare_train_data(train, tokenizer, run_args)
    by_task = dict(zip(data.tasks, data.datasets))
    batch_sizes = {task: settings.batch_size for task, settings in recipe.tasks.items()}

    def run(input_type: str, tasks: tuple[str, ...]) -> list[float]:
        config = load_run_config("multitask_default", overrides + [f"model.input_type={input_type}"])
        recipe = MultiTaskRecipe(config, work)
        steps = (args.warmup + args.steps) * len(tasks)
        step_args, _ = training_arguments(recipe.arguments_class, config, work)
        step_args.max_steps = steps
        torch.manual_seed(0)
        model = recipe.build_model(tokenizer)
        trainer = recipe.make_trainer(model, step_args, TaskDatasets({t: by_task[t] for t in tasks}), tokenizer)
        timer = StepTimer()
        trainer.add_callback(timer)
        trainer.train()
        return timer.times[args.warmup * len(tasks):]

    configurations = [(input_type, tasks) for input_type in ("subword", "char_ngram")
                      for tasks in [(task,) for task in TASKS] + [TASKS]]
    fastest: dict[tuple, list[float]] = {}
    for _ in range(args.rounds):
        for input_type, tasks in configurations:
            times = run(input_type, tasks)
            key = (input_type, tasks)
            fastest[key] = times if key not in fastest else [min(a, b) for a, b in zip(fastest[key], times)]

    results = {"machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(),
                           "torch": torch.__version__},
               "settings": vars(args), "batch_sizes": batch_sizes, "input_types": {}}
    lines = ["| input | task | s/step (alone) | examples/s (alone) | s/step (cycled) | examples/s (cycled) |",
             "|---|---|---|---|---|---|"]
    for input_type in ("subword", "char_ngram"):
        cycled = fastest[(input_type, TASKS)]
        row = {}
        for index, task in enumerate(TASKS):
            alone = statistics.mean(fastest[(input_type, (task,))])
            in_cycle = statistics.mean(cycled[index :: len(TASKS)])
            row[task] = {"alone_s_per_step": round(alone, 3), "cycled_s_per_step": round(in_cycle, 3),
                         "alone_examples_per_s": round(batch_sizes[task] / alone, 1),
                         "cycled_examples_per_s": round(batch_sizes[task] / in_cycle, 1)}
            lines.append(f"| {input_type} | {task} | {alone:.3f} | {batch_sizes[task] / alone:.1f} | {in_cycle:.3f} | "
                         f"{batch_sizes[task] / in_cycle:.1f} |")
        overhead = statistics.mean(cycled) / statistics.mean(row[t]["alone_s_per_step"] for t in TASKS)
        row["cycling_overhead"] = round(overhead, 3)
        results["input_types"][input_type] = row
        lines.append(f"| {input_type} | cycling overhead (cycled / mean alone) | {overhead:.2f}x | | | |")
    ratio = {task: round(results["input_types"]["char_ngram"][task]["alone_s_per_step"]
                         / results["input_types"]["subword"][task]["alone_s_per_step"], 3) for task in TASKS}
    results["char_ngram_over_subword_step_time"] = ratio
    lines.append("")
    lines.append("char_ngram / subword step time: " + ", ".join(f"{t} {r:.2f}x" for t, r in ratio.items()))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
