"""Training throughput of the EMS recipe, side by side with the code before the recipe refactor and with
sentence-transformers' own trainer, on the same encoder and the same batches.

    python benchmarks/bench_recipe.py          # default: 5 configurations x 3 rounds (~8 min, 2 idle cores)
    python benchmarks/bench_recipe.py --smoke  # quick check that every configuration runs (~1 min, 2 idle cores)
    python benchmarks/bench_recipe.py --before_dir /tmp/old --steps 30 --rounds 5

Configurations (each a real `transformers.Trainer.train` run, `trainers/configs/ems_default.yaml` model size):

    after              EMSTrainer on EMSForPreTraining (the recipe's model, trainer and collator), XTR + contrastive
    before             the same with the code of `--before_rev` (default 47e6410: EMSModel holding the heads, the
                       trainer and collator of then), imported from an extracted copy of that revision via PYTHONPATH
    after-contrastive  EMSTrainer with xtr_weight=0 (what a user sets for a contrastive-only run)
    st                 SentenceTransformerTrainer + MultipleNegativesSymmetricRankingLoss (scale = 1 / temperature)
                       on the untrained bare EMSModel, saved as a sentence-transformers folder (Transformer -> mean
                       pooling)
    after-noxtr        EMSTrainer whose compute_loss (defined here) runs the contrastive head and loss only; since
                       a term weighted 0 is not computed, after-contrastive should match it (a check that
                       xtr_weight=0 costs nothing for the XTR head)

Method: the parent prepares once, under a temporary folder: a SentencePiece tokenizer trained on the embedded corpus
(as `make train` does), `warmup + steps` batches of pairs, and the sentence-transformers folder. The batches are
length-grouped like the default config's `group_by_length` sampler makes them (pairs sorted by token length, cut into
batches) and drawn evenly across the length distribution, then written in batch order; every trainer reads them
sequentially (`train_sampling_strategy="sequential"` / a sequential batch sampler for sentence-transformers) with
`drop_last`, so all configurations train on exactly the same pairs in the same batches (checked by a fingerprint of
the texts each collator sees). Each configuration runs in its own fresh subprocess with the same thread count, seed
and `TrainingArguments` (no evaluation, no saving, no logging); the configurations are interleaved over the rounds
(1, 2, 3, 4, 5, 1, 2, ...) so that machine noise hits all alike. Reported per configuration: the median over the
rounds of each run's pairs/s (the headline), and "fastest per batch": each timed batch's fastest time over the rounds,
summed; load on a shared machine only ever adds time, so this estimates what an idle machine gives.

What is timed (a `TrainerCallback`): the first `warmup` optimizer steps are excluded; over the next `steps`,
  * end-to-end: from the end of the last warm-up step to the end of the last step, i.e. fetching the batch and
    tokenizing it in the collator (both trainers tokenize in their collator), forward, backward, gradient clipping,
    AdamW step, scheduler and callbacks;
  * step only: the sum of on_step_begin -> on_step_end, i.e. the same minus fetching and tokenizing the batch.
Model construction, data loading and imports are not timed.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Only the standard library at module level: the `before` worker runs this file against the old code, so the
# current package must not be imported before the worker has chosen what to import.

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    "after": "EMSTrainer, EMSForPreTraining, XTR + contrastive (current code)",
    "before": "EMSTrainer, EMSModel with heads, XTR + contrastive (code of {rev})",
    "after-contrastive": "EMSTrainer, EMSForPreTraining, xtr_weight=0 (current code)",
    "st": "SentenceTransformerTrainer, MultipleNegativesSymmetricRankingLoss, bare EMSModel",
    "after-noxtr": "EMSTrainer, EMSForPreTraining, XTR head and loss skipped (bench-only compute_loss)",
}
DEFAULT_CONFIGS = ["after", "before", "after-contrastive", "st", "after-noxtr"]


# ----------------------------------------------------------------------------------------------------------------------
# Worker: one configuration, in its own process
# ----------------------------------------------------------------------------------------------------------------------


def step_timer():
    """A TrainerCallback recording the time of every step's begin and end."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.end = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.end.append(time.perf_counter())

    return StepTimer()


def fingerprint_collator(trainer, source_column: str, target_column: str):
    """Make the trainer's collator hash the texts of every batch it builds, in order; returns the hash object.
    (The collator's class is swapped for a subclass, so the trainer's dataloader code sees the same collator.)"""
    digest = hashlib.sha1()
    collator = trainer.data_collator

    class Fingerprinted(type(collator)):
        def __call__(self, features):
            digest.update("\x00".join(f[source_column] + "\x01" + f[target_column] for f in features).encode())
            digest.update(b"\x02")
            return super().__call__(features)

    collator.__class__ = Fingerprinted
    return digest


def common_arguments(setup: dict, name: str) -> dict:
    """TrainingArguments shared by every configuration: the default config's optimisation settings, sequential
    reading of the prepared batches, and nothing written or evaluated during the run."""
    training = setup["training"]
    return dict(
        output_dir=str(Path(setup["workdir"]) / "runs" / name),
        per_device_train_batch_size=setup["batch_size"],
        max_steps=setup["warmup"] + setup["steps"],
        learning_rate=training.get("learning_rate", 1e-3),
        warmup_steps=training.get("warmup_steps", 0),
        lr_scheduler_type=training.get("lr_scheduler_type", "linear"),
        weight_decay=training.get("weight_decay", 0.0),
        bf16=setup["bf16"],
        seed=setup["seed"],
        use_cpu=True,
        train_sampling_strategy="sequential",  # the batches are prepared in order; see the module docstring
        dataloader_drop_last=True,
        dataloader_num_workers=0,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def check_imported_from(folder: str | Path, *modules) -> None:
    folder = Path(folder).resolve()
    for module in modules:
        if not Path(module.__file__).resolve().is_relative_to(folder):
            raise RuntimeError(f"{module.__name__} was imported from {module.__file__}, not from {folder}.")


def build_after(setup, tokenizer, pairs, name):
    import modeling_ems
    import trainers

    check_imported_from(REPO, modeling_ems, trainers)  # this checkout's code
    from trainers.recipes import load_run_config
    from trainers.recipes.ems import EMSRecipe, EMSTrainer, EMSTrainingArguments

    run_config = load_run_config(setup["config"])
    assert run_config.model == setup["model"], "the model section changed between the parent and the worker"
    recipe = EMSRecipe(run_config, Path(setup["workdir"]) / "runs" / name)
    model = recipe.build_model(tokenizer)
    xtr_weight = 0.0 if name == "after-contrastive" else 1.0
    args = EMSTrainingArguments(**common_arguments(setup, name), xtr_weight=xtr_weight)
    trainer = recipe.make_trainer(model, args, pairs, tokenizer)  # EMSTrainer + ParallelPairCollator, as training does
    if name == "after-noxtr":
        from trainers.layout import PairLayout
        from trainers.losses import contrastive_loss

        class ContrastiveOnlyTrainer(EMSTrainer):
            """The encoder, the contrastive head and the contrastive loss (eq. 8) only: no XTR head, no XTR loss."""

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                ems_model = self.accelerator.unwrap_model(model)
                # accelerate applies bf16 autocast by wrapping model.forward; calling the submodules bypasses it
                with self.accelerator.autocast():
                    pooled = ems_model.ems(inputs["input_ids"], inputs["attention_mask"]).pooler_output
                    embeddings = ems_model.contrastive_head(pooled)
                loss = contrastive_loss(*PairLayout.split(embeddings), ems_model.config.temperature).mean()
                self.record_loss_terms({"contrastive_loss": loss})
                return (loss, None) if return_outputs else loss

        trainer = ContrastiveOnlyTrainer(model=model, args=args, train_dataset=pairs,
                                         data_collator=trainer.data_collator, processing_class=tokenizer)
    return trainer, fingerprint_collator(trainer, "src", "tgt")


def build_before(setup, tokenizer, pairs, name):
    import modeling_ems
    import trainers.ems_trainer

    check_imported_from(setup["before_dir"], modeling_ems, trainers.ems_trainer)  # the old code
    from modeling_ems import EMSConfig, EMSModel
    from trainers.collators import ParallelPairCollator
    from trainers.ems_trainer import EMSTrainer, EMSTrainingArguments
    from trainers.tokenizer import tokenizer_languages

    # as the old trainers/ems_pipeline.py built them
    config = EMSConfig(**setup["model"], vocab_size=len(tokenizer), languages=tokenizer_languages(tokenizer),
                       pad_token_id=tokenizer.pad_token_id)
    model = EMSModel(config)
    trainer = EMSTrainer(model=model, args=EMSTrainingArguments(**common_arguments(setup, name)), train_dataset=pairs,
                         data_collator=ParallelPairCollator(tokenizer, model.config), processing_class=tokenizer)
    return trainer, fingerprint_collator(trainer, "src", "tgt")


def build_st(setup, tokenizer, pairs, name):
    import warnings

    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import DefaultBatchSampler
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesSymmetricRankingLoss
    from torch.utils.data import SequentialSampler

    class SequentialBatchSampler(DefaultBatchSampler):
        """sentence-transformers' default batch sampler, reading the prepared batches in order instead of at random."""

        def __init__(self, dataset, **kwargs):
            super().__init__(SequentialSampler(dataset), **kwargs)

    model = SentenceTransformer(str(Path(setup["workdir"]) / "st_model"), trust_remote_code=True, device="cpu")
    with warnings.catch_warnings():  # deprecated alias of MultipleNegativesRankingLoss(directions=both, per_direction)
        warnings.simplefilter("ignore", DeprecationWarning)
        loss = MultipleNegativesSymmetricRankingLoss(model, scale=1.0 / setup["temperature"])
    args = SentenceTransformerTrainingArguments(**common_arguments(setup, name), batch_sampler=SequentialBatchSampler)
    # (anchor, positive) columns, in this order: the loss takes the first column as the anchor
    train = pairs.select_columns(["src", "tgt"]).rename_columns({"src": "anchor", "tgt": "positive"})
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss)
    return trainer, fingerprint_collator(trainer, "anchor", "positive")


def run_worker(name: str, workdir: Path) -> None:
    setup = json.loads((workdir / "setup.json").read_text())
    import torch

    torch.set_num_threads(setup["threads"])
    import datasets
    from transformers import AutoTokenizer, set_seed
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(workdir / "tokenizer")
    with open(workdir / "pairs.jsonl", encoding="utf-8") as handle:
        pairs = datasets.Dataset.from_list([json.loads(line) for line in handle])
    set_seed(setup["seed"])  # before the weights are drawn
    build = {"after": build_after, "after-contrastive": build_after, "after-noxtr": build_after,
             "before": build_before, "st": build_st}[name]
    trainer, digest = build(setup, tokenizer, pairs, name)
    timer = step_timer()
    trainer.add_callback(timer)
    output = trainer.train()

    warmup, steps = setup["warmup"], setup["steps"]
    if len(timer.end) != warmup + steps:
        raise RuntimeError(f"{name}: {len(timer.end)} steps ran, expected {warmup + steps}.")
    timed_pairs = setup["batch_size"] * steps
    # per timed step: end-to-end from the previous step's end, and step only from its own begin
    end_to_end = [end - previous for previous, end in zip(timer.end[warmup - 1:-1], timer.end[warmup:])]
    step_only = [end - begin for begin, end in zip(timer.begin[warmup:], timer.end[warmup:])]
    result = {
        "config": name,
        "pairs_per_s": timed_pairs / sum(end_to_end),
        "pairs_per_s_step_only": timed_pairs / sum(step_only),
        "seconds": sum(end_to_end),
        "end_to_end": end_to_end,
        "step_only": step_only,
        "train_loss": output.training_loss,
        "fingerprint": digest.hexdigest(),
        "threads": torch.get_num_threads(),
    }
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# Parent: prepare once, run the configurations interleaved, report
# ----------------------------------------------------------------------------------------------------------------------


def length_grouped_batches(pairs, tokenizer, batch_size: int, count: int, seed: int) -> list[list[dict]]:
    """`count` batches as `group_by_length` makes them (similar token lengths within a batch), drawn evenly across
    the corpus's length distribution, in a seeded random order."""
    import random

    from trainers.data import add_token_lengths

    pool_size = min(len(pairs), max(batch_size * 200, batch_size * count))
    pool = add_token_lengths(pairs.shuffle(seed=seed).select(range(pool_size)), tokenizer)
    lengths = pool["length"]
    rows = pool.select_columns(["src", "tgt", "src_lang", "tgt_lang"]).to_list()
    order = sorted(range(len(rows)), key=lengths.__getitem__)
    available = len(order) // batch_size
    if available < count:
        raise ValueError(f"The corpus holds {available} batches of {batch_size} pairs; {count} are needed.")
    starts = [round(k * (available - 1) / max(count - 1, 1)) * batch_size for k in range(count)]
    batches = [[rows[i] for i in order[s:s + batch_size]] for s in starts]
    random.Random(seed).shuffle(batches)
    return batches


def resolve_before(args, workdir: Path) -> tuple[Path, str]:
    """The old code's folder (given, or `git archive` of the revision) and a description of its revision."""
    if args.before_dir:
        before_dir = Path(args.before_dir).resolve()
        head = subprocess.run(["git", "-C", str(before_dir), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True)
        return before_dir, (head.stdout.strip() or "unknown revision") + f" ({before_dir})"
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.before_rev], capture_output=True,
                            text=True, check=True).stdout.strip()
    before_dir = workdir / "before"
    before_dir.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(before_dir)], input=archive, check=True)
    return before_dir, f"{commit} (git archive)"


def prepare(args, workdir: Path, before_dir: Path | None) -> dict:
    """Tokenizer, batches and the sentence-transformers folder, shared by every configuration; returns the setup."""
    sys.path.insert(0, str(REPO))  # this checkout's code, as the workers import it
    import datasets
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from modeling_ems import EMSModel
    from trainers.data import DEFAULT_TRAIN, load_parallel_dataset, pair_languages
    from trainers.hub import write_sentence_transformers_config
    from trainers.loading import resolve_bf16
    from trainers.recipes import load_run_config
    from trainers.recipes.ems import EMSRecipe
    from trainers.tokenizer import train_tokenizer

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()  # token lengths are counted untruncated: no "longer than 120" warning
    run_config = load_run_config(args.config)
    max_length = run_config.model.get("max_position_embeddings", 120)
    pairs = load_parallel_dataset(DEFAULT_TRAIN)
    if args.tokenizer:
        shutil.copytree(args.tokenizer, workdir / "tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(workdir / "tokenizer")
    else:
        print(f"training a {run_config.tokenizer.vocab_size}-piece tokenizer on the corpus ...", flush=True)
        texts = (text for row in pairs for text in (row["src"], row["tgt"]))
        tokenizer = train_tokenizer(texts, pair_languages(pairs), run_config.tokenizer.vocab_size, max_length,
                                    workdir / "tokenizer")

    batches = length_grouped_batches(pairs, tokenizer, args.batch_size, args.warmup + args.steps, args.seed)
    with open(workdir / "pairs.jsonl", "w", encoding="utf-8") as handle:
        for batch in batches:
            for row in batch:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    token_counts = [len(ids) for batch in batches
                    for ids in tokenizer([r["src"] for r in batch] + [r["tgt"] for r in batch], truncation=True,
                                         max_length=max_length)["input_ids"]]

    # the untrained bare encoder of the current code, as a sentence-transformers folder (what publishing writes)
    torch.manual_seed(args.seed)
    encoder = EMSModel(EMSRecipe(run_config, workdir).model_config(tokenizer))
    encoder.save_pretrained(workdir / "st_model")
    tokenizer.save_pretrained(workdir / "st_model")
    write_sentence_transformers_config(workdir / "st_model", encoder.config.hidden_size, max_length)

    bf16 = resolve_bf16(run_config.training.get("bf16", False)) and not args.fp32
    return {
        "workdir": str(workdir),
        "config": args.config,
        "model": run_config.model,
        "training": run_config.training,
        "temperature": encoder.config.temperature,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "steps": args.steps,
        "threads": args.threads,
        "seed": args.seed,
        "bf16": bf16,
        "before_dir": str(before_dir) if before_dir else None,
        "mean_tokens": statistics.mean(token_counts),
        "vocab_size": len(tokenizer),
    }


def run_configuration(name: str, workdir: Path, setup: dict) -> dict:
    env = dict(os.environ)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[variable] = str(setup["threads"])
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_MODULES_CACHE=str(workdir / "hf_modules"))
    # the old modeling_ems / trainers, or this checkout's, ahead of whatever is installed
    env["PYTHONPATH"] = setup["before_dir"] if name == "before" else str(REPO)
    process = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", name,
                              "--workdir", str(workdir)],
                             cwd=workdir, env=env, capture_output=True, text=True)
    results = [line[len("RESULT "):] for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode != 0 or not results:
        sys.stderr.write(process.stdout[-5000:] + process.stderr[-10000:])
        raise RuntimeError(f"configuration {name!r} failed (exit code {process.returncode}).")
    return json.loads(results[-1])


def available_cores() -> int:
    """The cores this process may run on, as `nproc` counts them (honours taskset / cgroup CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_description() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or platform.machine()
    try:
        flags = Path("/proc/cpuinfo").read_text()
        bf16_native = "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        bf16_native = False
    return {"nproc": available_cores(), "cpu": cpu, "torch": torch.__version__, "bf16_native": bf16_native}


def package_versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("transformers", "sentence-transformers", "accelerate"))


def fastest_per_batch(results: list[dict], key: str, batch_size: int) -> float:
    """Pairs/s from each timed batch's fastest time over the rounds: noise on a shared machine only ever adds time,
    so this approaches what a quiet machine gives (with one round it is the plain throughput)."""
    steps = zip(*(result[key] for result in results))
    return batch_size * len(results[0][key]) / sum(min(times) for times in steps)


def summarize(results: list[dict], batch_size: int) -> dict:
    return {
        "median": statistics.median(r["pairs_per_s"] for r in results),
        "median_step_only": statistics.median(r["pairs_per_s_step_only"] for r in results),
        "fastest": fastest_per_batch(results, "end_to_end", batch_size),
        "fastest_step_only": fastest_per_batch(results, "step_only", batch_size),
    }


def report(args, setup: dict, per_config: dict, before_label: str, started: float, loads: tuple) -> None:
    machine = machine_description()
    precision = "bf16 autocast (as ems_default.yaml sets)" if setup["bf16"] else "fp32"
    batch_size = setup["batch_size"]
    summary = {name: summarize(results, batch_size) for name, results in per_config.items()}
    print()
    print("## bench_recipe: EMS training throughput, recipe vs before vs sentence-transformers\n")
    print(f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- machine: {machine['nproc']} CPU cores (nproc), {machine['cpu']}"
          f"{' (AVX512-BF16)' if machine['bf16_native'] else ''}; torch {machine['torch']}, {package_versions()}; "
          f"load average {loads[0]:.2f} at start, {loads[1]:.2f} at end (shared machine)")
    print(f"- model: {setup['config']} size ({setup['model'].get('num_hidden_layers')} layers x "
          f"{setup['model'].get('hidden_size')}, FFN {setup['model'].get('intermediate_size')}, vocab "
          f"{setup['vocab_size']}), {precision}, {setup['threads']} torch threads per process")
    print(f"- batches: {batch_size} pairs ({2 * batch_size} sentences), length-grouped, "
          f"{setup['mean_tokens']:.1f} tokens per sentence on average; the same pairs in the same batches for every "
          f"configuration; {setup['warmup']} warm-up steps excluded, {setup['steps']} timed steps, "
          f"{args.rounds} interleaved rounds, each configuration in a fresh process")
    print(f"- before: {before_label}")
    if max(loads) > machine["nproc"]:
        print(f"- warning: the load average exceeded the {machine['nproc']} cores; with {setup['threads']} threads per "
              "process, OpenMP waits on descheduled threads inflate and scatter the step times (`--threads 1` is "
              "steadier on a loaded machine); compare the ratios, not the absolute pairs/s")
    print("- end-to-end = batch fetch + tokenization in the collator + forward, backward, clipping, AdamW, "
          "scheduler; step only = the same without fetching and tokenizing the batch; fastest per batch = each "
          "timed batch's fastest time over the rounds, summed (robust to the machine's load bursts)\n")
    print("| configuration | what | pairs/s end-to-end, per round | **median** end-to-end | median step only "
          "| fastest per batch, end-to-end | final loss |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, results in per_config.items():
        rounds = ", ".join(f"{r['pairs_per_s']:.1f}" for r in results)
        row = summary[name]
        print(f"| {name} | {CONFIGS[name].format(rev=before_label.split()[0])} | {rounds} | **{row['median']:.1f}** | "
              f"{row['median_step_only']:.1f} | {row['fastest']:.1f} | {results[-1]['train_loss']:.3f} |")

    print("\n| ratio | **of medians**, end-to-end | of medians, step only | fastest per batch, end-to-end "
          "| per-round ratios, end-to-end |")
    print("|---|---:|---:|---:|---|")
    comparisons = [("after / before", "after", "before"),
                   ("ours contrastive-only (xtr_weight=0) / sentence-transformers", "after-contrastive", "st"),
                   ("ours, XTR head skipped / sentence-transformers", "after-noxtr", "st"),
                   ("ours, XTR head skipped / xtr_weight=0", "after-noxtr", "after-contrastive")]
    for label, top, bottom in comparisons:
        if top in per_config and bottom in per_config:
            a, b = summary[top], summary[bottom]
            # configurations of one round ran minutes apart at most: their ratio sees similar machine load
            per_round = ", ".join(f"{x['pairs_per_s'] / y['pairs_per_s']:.2f}"
                                  for x, y in zip(per_config[top], per_config[bottom]))
            print(f"| {label} | **{a['median'] / b['median']:.3f}x** "
                  f"| {a['median_step_only'] / b['median_step_only']:.3f}x "
                  f"| {a['fastest'] / b['fastest']:.3f}x | {per_round} |")
    print(f"\nTotal benchmark time: {time.time() - started:.0f} s.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=25, help="Timed steps per run (default: %(default)s).")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (default: %(default)s).")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (default: %(default)s).")
    parser.add_argument("--batch_size", type=int, default=128, help="Pairs per batch (default: %(default)s).")
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="torch threads per process (default: the number of cores, %(default)s).")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help=f"Comma-separated, of {', '.join(CONFIGS)} (default: %(default)s).")
    parser.add_argument("--before_rev", default="47e6410", help="Revision of the `before` code (default: %(default)s).")
    parser.add_argument("--before_dir", default=None, help="A checkout of the `before` code instead of `git archive`.")
    parser.add_argument("--config", default="ems_default", help="Run config of the model size (default: %(default)s).")
    parser.add_argument("--tokenizer", default=None, help="A tokenizer folder to reuse; default: train one (~15 s).")
    parser.add_argument("--fp32", action="store_true", help="Train in fp32 instead of the config's bf16.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true", help="Quick check: 1 round, 1 + 2 steps of 16 pairs.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder (printed).")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        run_worker(args.worker, Path(args.workdir))
        return
    if args.smoke:
        args.rounds, args.warmup, args.steps, args.batch_size = 1, 1, 2, 16
    configs = [name.strip() for name in args.configs.split(",") if name.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or not configs:
        parser.error(f"unknown configurations {unknown}; choose among {', '.join(CONFIGS)}.")
    if args.warmup < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--warmup, --steps and --rounds must be >= 1 (the timing starts at the end of a warm-up step).")

    started, load_start = time.time(), os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="bench_recipe_"))
    try:
        before_dir, before_label = resolve_before(args, workdir) if "before" in configs else (None, "not run")
        setup = prepare(args, workdir, before_dir)
        (workdir / "setup.json").write_text(json.dumps(setup, indent=2))
        per_config = {name: [] for name in configs}
        for round_index in range(args.rounds):
            for name in configs:
                result = run_configuration(name, workdir, setup)
                per_config[name].append(result)
                print(f"round {round_index + 1}/{args.rounds} {name:18s} {result['pairs_per_s']:7.1f} pairs/s "
                      f"end-to-end, {result['pairs_per_s_step_only']:7.1f} step only ({result['seconds']:.1f} s)",
                      flush=True)
        fingerprints = {name: {r["fingerprint"] for r in results} for name, results in per_config.items()}
        if len(set().union(*fingerprints.values())) != 1:
            raise RuntimeError(f"The configurations did not train on the same batches: {fingerprints}")
        report(args, setup, per_config, before_label, started, (load_start, os.getloadavg()[0]))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
