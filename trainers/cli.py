"""Command-line entry points. Installed as console scripts (`ems-train`, `ems-evaluate`, `ems-publish`,
`ems-train-tokenizer`); `scripts/*.py` call the same functions from a clone, and `python -m trainers.cli COMMAND`
runs them too (`accelerate launch -m trainers.cli train ...` for many processes)."""

import argparse
import json
import sys
from pathlib import Path

TRAIN_DOC = """Train a sentence encoder with the recipe its config names (`recipe: ems`, ...).

    accelerate launch scripts/train.py --output_dir runs/ems-default
    accelerate launch scripts/train.py --config configs/ems_paper.yaml --output_dir runs/ems-paper \\
        --set data.train=../shared/data/parallel/train.tsv.gz

Runs the recipe's steps (tokenizer, model, training with periodic checkpoints, evaluation) and writes the model,
tokenizer, code files, training config, sentence-transformers config and model card to --output_dir. An interrupted
run resumes from its last complete checkpoint when started again with the same --output_dir.
"""


def _parser(doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def train(argv: list[str] | None = None) -> None:
    from .config import DEFAULT_CONFIG, load_run_config, shipped_configs
    from .recipes import run_recipe

    parser = _parser(TRAIN_DOC)
    parser.add_argument("--output_dir", required=True, help="Where checkpoints and the final model go.")
    parser.add_argument("--config", default=f"configs/{DEFAULT_CONFIG.name}",
                        help=f"YAML run config: a path, or a shipped config by name ({', '.join(shipped_configs())}). "
                             "Default: %(default)s.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="Override one config value, e.g. --set training.max_steps=100 (repeatable).")
    parser.add_argument("--no_resume", action="store_true", help="Start over even if checkpoints exist.")
    args = parser.parse_args(argv)
    results = run_recipe(load_run_config(args.config, args.overrides), args.output_dir, resume=not args.no_resume)
    if results:
        print(json.dumps({"heldout_p@1": results["model"]["average"],
                          "tfidf_baseline_p@1": results["tfidf_baseline"]["average"]}, indent=2))


EVALUATE_DOC = """Evaluate a saved sentence encoder with the papers' protocols.

    python scripts/evaluate_model.py --model runs/ems-default --suite configs/eval_shared.yaml --update_card

`--model` is a folder saved by this package, any transformers `AutoModel` encoder folder (mean pooling), or a
sentence-transformers folder (`--backend sentence-transformers`). `--suite` is a YAML task list, a path or a shipped
suite by name (`eval_default`: held-out retrieval on the embedded corpus; `eval_shared`: the papers' tasks on
../shared/data). Results go to `--output` (default: MODEL/eval_suite_results.json); `--update_card` adds them to the
`model-index` of MODEL/README.md.
"""


def evaluate(argv: list[str] | None = None) -> None:
    from .cards import update_card_results
    from .evaluation.suite import load_suite, run_suite
    from .loading import load_embedder

    parser = _parser(EVALUATE_DOC)
    parser.add_argument("--model", required=True, help="Model folder to evaluate.")
    parser.add_argument("--suite", default="configs/eval_shared.yaml", help="Evaluation suite (default: %(default)s).")
    parser.add_argument("--backend", choices=("auto", "transformers", "sentence-transformers"), default="auto",
                        help="How to load --model (default: %(default)s).")
    parser.add_argument("--batch_size", type=int, default=128, help="Texts per encoding batch.")
    parser.add_argument("--output", default=None, help="Results JSON (default: MODEL/eval_suite_results.json).")
    parser.add_argument("--update_card", action="store_true", help="Write the results into MODEL/README.md.")
    args = parser.parse_args(argv)

    embed, languages = load_embedder(args.model, backend=args.backend, batch_size=args.batch_size)
    results = run_suite(load_suite(args.suite, languages), embed)
    output = Path(args.output or Path(args.model) / "eval_suite_results.json")
    output.write_text(json.dumps({"model": args.model, "suite": args.suite, "results": results}, indent=2))
    print(json.dumps(results, indent=2))
    print(f"results -> {output}")
    if args.update_card:
        update_card_results(args.model, results, suite=args.suite)
        print(f"model-index updated in {Path(args.model) / 'README.md'}")


PUBLISH_DOC = """Publish a trained model folder to the Hugging Face Hub.

    python scripts/publish.py runs/ems-default --repo_id you/ems-small --dry_run   # list what would be uploaded
    python scripts/publish.py runs/ems-default --repo_id you/ems-small             # upload (needs a token)

By default the bare encoder is published (what AutoModel and inference load); --heads keeps the training heads so
that others can train on with the head class.
"""


def publish(argv: list[str] | None = None) -> None:
    from .hub import files_to_publish, publishable_folder, upload

    parser = _parser(PUBLISH_DOC)
    parser.add_argument("folder", help="The output_dir of a finished training run.")
    parser.add_argument("--repo_id", required=True, help="Hub repository, e.g. you/ems-small.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--heads", action="store_true", help="Keep the training heads (default: bare encoder only).")
    parser.add_argument("--dry_run", action="store_true", help="Only print the files that would be uploaded.")
    args = parser.parse_args(argv)
    with publishable_folder(args.folder, heads=args.heads) as source:
        files = files_to_publish(source)
        total = sum((source / name).stat().st_size for name in files)
        print(f"{'Would upload' if args.dry_run else 'Uploading'} {len(files)} files ({total / 2**20:.1f} MiB) "
              f"to {args.repo_id}:")
        print("\n".join(f"  {name} ({(source / name).stat().st_size / 2**20:.2f} MiB)" for name in files))
        if not args.dry_run:
            print(upload(source, args.repo_id, private=args.private))


TOKENIZER_DOC = """Train the shared SentencePiece vocabulary (lowercased, one `<2xx>` token per language) on parallel
pairs.

    python scripts/train_tokenizer.py --data trainers/data/default/train.jsonl.gz --output_dir runs/tokenizer

`--data` is anything `load_parallel_dataset` reads: a TSV / CSV / JSONL / Parquet file, a dataset folder or a Hub
dataset name, with columns `src, tgt, src_lang, tgt_lang` (or `lang, en, text`). The folder then loads with
`AutoTokenizer.from_pretrained(output_dir)`.
"""


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


COMMANDS = {"train": train, "evaluate": evaluate, "publish": publish, "train-tokenizer": train_tokenizer}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(f"usage: python -m trainers.cli {{{','.join(COMMANDS)}}} [--help]")
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
