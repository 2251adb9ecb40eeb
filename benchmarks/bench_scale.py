"""Wall time and peak memory of the data preparation a training run does before its first step, at 1M-5M pairs.

    python benchmarks/bench_scale.py                         # 1M, 2M and 5M pairs
    python benchmarks/bench_scale.py --sizes 1000000 --label before

The corpus is ../shared/data/parallel/train.tsv.gz (658k English <-> X pairs, 90 languages, the English-pivot
layout `lang, en, text`) repeated until it holds `size` pairs, each copy after the first with ` [k]` appended to both
texts so that every text stays distinct (a corpus of real text in many scripts, no duplicate the overlap removal
could shortcut). It is written once per size as `.tsv.gz` under --workdir.

Each size runs in a fresh Python process, with its own empty `datasets` cache, through the recipe's steps as
`scripts/train.py` runs them with `configs/ems_default.yaml` (`data.train` pointed at the corpus, `data.heldout` at
../shared/data/parallel/dev, 79 languages, `tokenizer.path` at a tokenizer prepared beforehand: training the
SentencePiece vocabulary is not timed, building its input is, `tokenizer_input_s`): `load_data` (read, pivot
conversion, validation, language checks, held-out overlap removal), `prepare_tokenizer` (load, check every pair's
languages), `prepare_train_data` (token lengths / tokenization for length-grouped batches).
`tokenizer_input_s` is building the text stream the vocabulary is trained on: every text of the pairs before
`trainers.tokenizer.sample_sentences` existed, its seeded sample after. A second pass (`reuse`) runs the same
steps again in a new process on the same output folder and cache: what every further process and node of a job
pays.

Wall time is the child's; peak RSS is `ru_maxrss` of the child and its own children (`os.wait4`), which counts the
pages of memory-mapped Arrow files it touched; `peak_anon_mib` is the child's largest anonymous resident memory
(`RssAnon`, sampled every 50 ms), the memory beyond those file pages. One JSON line per size goes to --output.
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import record  # benchmarks/_record.py: run as a script, this folder is on the path

REPO = Path(__file__).resolve().parent.parent
SHARED_CORPUS = REPO.parent / "shared" / "data" / "parallel" / "train.tsv.gz"
# held-out pairs none of whose English strings is in the corpus (the shipped held-out set is part of it)
SHARED_DEV = REPO.parent / "shared" / "data" / "parallel" / "dev"


def build_corpus(size: int, workdir: Path) -> Path:
    """`size` pairs in the English-pivot layout: the shared corpus repeated, copy k's texts suffixed ` [k]`."""
    path = workdir / f"pairs_{size}.tsv.gz"
    if path.is_file():
        return path
    with gzip.open(SHARED_CORPUS, "rt", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in handle]
    lang, en, text = (header.index(name) for name in ("lang", "en", "text"))
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8", compresslevel=1) as out:
        out.write("lang\ten\ttext\n")
        written, copy = 0, 0
        while written < size:
            suffix = f" [{copy}]" if copy else ""
            for row in rows[: size - written]:
                out.write(f"{row[lang]}\t{row[en]}{suffix}\t{row[text]}{suffix}\n")
            written += min(len(rows), size - written)
            copy += 1
    partial.rename(path)
    return path


def prepared_tokenizer(workdir: Path) -> Path:
    """A tokenizer with a `<2xx>` token for each language of the corpus, its vocabulary trained once on the first
    50k pairs, so that the runs time the data, not SentencePiece."""
    folder = workdir / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        from trainers.tokenizer import train_tokenizer

        with gzip.open(SHARED_CORPUS, "rt", encoding="utf-8") as handle:
            rows = [line.rstrip("\n").split("\t") for line in handle][1:]
        texts = [text for row in rows[:50_000] for text in row[1:3]]
        train_tokenizer(texts, sorted({"en"} | {row[0] for row in rows}), 8000, 120, folder)
    return folder


def steps(corpus: str, tokenizer: str, output_dir: str) -> dict:
    """The recipe's steps before training, as `Recipe.run` calls them, each timed (in this process)."""
    from trainers.recipes import get_recipe, load_run_config
    from trainers.recipes.base import training_arguments

    started = time.perf_counter()
    run_config = load_run_config("configs/ems_default.yaml", [f"data.train={corpus}", f"data.heldout={SHARED_DEV}",
                                                              f"tokenizer.path={tokenizer}"])
    recipe = get_recipe(run_config.recipe)(run_config, output_dir)
    args, _ = training_arguments(recipe.arguments_class, run_config, output_dir)
    times = {"import_s": time.perf_counter() - started}
    clock = time.perf_counter()
    train, _ = recipe.load_data()
    times["load_data_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    tokenizer = recipe.prepare_tokenizer(train, args)
    times["prepare_tokenizer_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    train = recipe.prepare_train_data(train, tokenizer, args)
    times["prepare_train_data_s"] = time.perf_counter() - clock
    times["pairs"] = len(train)
    return times, train


def tokenizer_input(train) -> dict:
    """The text stream the vocabulary would be trained on, consumed (SentencePiece itself is not run): every text of
    the pairs, row by row, before `trainers.tokenizer.sample_sentences` existed; its seeded sample after."""
    import trainers.tokenizer

    clock = time.perf_counter()
    sample = getattr(trainers.tokenizer, "sample_sentences", None)
    if sample is None:  # as ScratchEncoderRecipe.prepare_tokenizer did
        count = sum(1 for row in train for _ in (row["src"], row["tgt"]))
    else:
        count = sum(1 for _ in sample(train, 2_000_000, seed=42))
    return {"tokenizer_input_s": time.perf_counter() - clock, "tokenizer_input_texts": count}


def sample_anonymous_memory(peak: dict, every_s: float = 0.05) -> None:
    """Keep `peak["anon_mib"]` at the largest `RssAnon` of this process (Linux `/proc/self/status`), sampled every
    `every_s` in a daemon thread: the memory beyond the file-backed pages of memory-mapped Arrow files, which
    `ru_maxrss` counts as well but the kernel can drop and re-read."""
    import threading

    def sample():
        while True:
            with open("/proc/self/status") as status:
                anon = next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))
            peak["anon_mib"] = max(peak.get("anon_mib", 0), round(anon / 1024))
            time.sleep(every_s)

    threading.Thread(target=sample, daemon=True).start()


def child(corpus: str, tokenizer: str, output_dir: str) -> None:
    peak = {}
    sample_anonymous_memory(peak)
    times, train = steps(corpus, tokenizer, output_dir)
    result = {**times, **tokenizer_input(train)}
    print("RESULT " + json.dumps({**result, "peak_anon_mib": peak.get("anon_mib")}))


def run_child(code: Path, corpus: Path, tokenizer: Path, output_dir: Path, cache: Path) -> dict:
    """The steps in a fresh process: its result, wall time and peak RSS (of it and its children)."""
    environment = {**os.environ, "HF_DATASETS_CACHE": str(cache), "PYTHONPATH": str(code),
                   "TOKENIZERS_PARALLELISM": "true"}
    command = [sys.executable, __file__, "--child", str(corpus), str(tokenizer), str(output_dir)]
    started = time.perf_counter()
    with (cache.parent.parent / f"child_{corpus.stem}.log").open("a") as log:  # progress bars and warnings
        process = subprocess.Popen(command, cwd=code, env=environment, stdout=subprocess.PIPE, stderr=log, text=True)
        stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{corpus} failed (status {status}); its output:\n{stdout[-3000:]}")
    result = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    return {**result, "wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def disk_mib(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000, 5_000_000])
    parser.add_argument("--label", default="after", help="What the code is, e.g. before / after (recorded).")
    parser.add_argument("--code", type=Path, default=REPO,
                        help="The checkout whose code runs, e.g. a `git worktree` of the commit before a change.")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ems-bench-scale"))
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "bench_scale.jsonl")
    parser.add_argument("--skip_reuse", action="store_true", help="Leave out the second pass.")
    parser.add_argument("--child", nargs=3, metavar=("CORPUS", "TOKENIZER", "OUTPUT_DIR"),
                        help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(*options.child)
        return
    options.workdir.mkdir(parents=True, exist_ok=True)
    tokenizer = prepared_tokenizer(options.workdir)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=options.code, capture_output=True, text=True)
    for size in options.sizes:
        corpus = build_corpus(size, options.workdir)
        scratch = Path(tempfile.mkdtemp(dir=options.workdir, prefix=f"run_{size}_"))
        try:
            row = {"label": options.label, "commit": commit.stdout.strip(), "pairs": size}
            first = run_child(options.code, corpus, tokenizer, scratch / "out", scratch / "cache")
            row.update(first=first, output_and_cache_mib=disk_mib(scratch))
            if not options.skip_reuse:
                row["reuse"] = run_child(options.code, corpus, tokenizer, scratch / "out", scratch / "cache")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        record(row, options.output)


if __name__ == "__main__":
    main()
