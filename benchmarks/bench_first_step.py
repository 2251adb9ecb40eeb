"""Time from the training command to its first optimizer step on a 2M-pair corpus, with the data prepared first.

    python benchmarks/bench_first_step.py                     # after: python benchmarks/bench_scale.py --sizes 2000000
    python benchmarks/bench_first_step.py --num_proc 2        # tokenized by 2 processes (data.num_proc)

Two commands, as a job at scale runs them: `ems-prepare` (read, check, pivot, overlap removal, tokenize once: the
tokenizer given by `tokenizer.path`, trained beforehand) and then `ems-train` with the same config and output folder,
which loads the prepared Arrow data. Each is timed from its start; the training command to the first logged loss
(`training.logging_steps=1`), then stopped. The corpus and tokenizer are bench_scale's (`--workdir`), the config
`configs/ems_default.yaml` with `data.heldout` at ../shared/data/parallel/dev. One JSON line goes to --output.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import record  # benchmarks/_record.py: run as a script, this folder is on the path

REPO = Path(__file__).resolve().parent.parent
SHARED_DEV = REPO.parent / "shared" / "data" / "parallel" / "dev"


def timed(command: list[str], log: Path, until: str | None = None) -> float:
    """Seconds from starting `command` to its end, or to the first line of its output holding `until` (then the
    command is stopped). Its output goes to `log`."""
    started = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            handle.write(line)
            if until is not None and until in line:
                elapsed = time.perf_counter() - started
                process.terminate()
                process.wait()
                return elapsed
        if process.wait() != 0 or until is not None:
            raise SystemExit(f"{command[0]} failed or never printed {until!r}: see {log}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2_000_000)
    parser.add_argument("--num_proc", type=int, default=None, help="data.num_proc: processes that tokenize.")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ems-bench-scale"))
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "bench_first_step.jsonl")
    options = parser.parse_args()
    corpus, tokenizer = options.workdir / f"pairs_{options.pairs}.tsv.gz", options.workdir / "tokenizer"
    if not corpus.is_file() or not (tokenizer / "tokenizer.json").is_file():
        raise SystemExit(f"No {corpus} or {tokenizer}: run python benchmarks/bench_scale.py --sizes {options.pairs}.")
    scratch = Path(tempfile.mkdtemp(dir=options.workdir, prefix="first_step_"))
    bin_dir = Path(sys.executable).parent
    settings = ["--config", "ems_default", "--output_dir", str(scratch / "run"), "--set", f"data.train={corpus}",
                "--set", f"data.heldout={SHARED_DEV}", "--set", f"tokenizer.path={tokenizer}",
                *(["--set", f"data.num_proc={options.num_proc}"] if options.num_proc else [])]
    os.environ["HF_DATASETS_CACHE"] = str(scratch / "cache")
    try:
        prepare_s = timed([str(bin_dir / "ems-prepare"), *settings], scratch.parent / "first_step_prepare.log")
        first_step_s = timed([str(bin_dir / "ems-train"), *settings, "--set", "training.logging_steps=1"],
                             scratch.parent / "first_step_train.log", until="'loss'")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    record({"pairs": options.pairs, "num_proc": options.num_proc, "commit": commit.stdout.strip(),
            "prepare_s": round(prepare_s, 1), "train_command_to_first_step_s": round(first_step_s, 1)}, options.output)


if __name__ == "__main__":
    main()
