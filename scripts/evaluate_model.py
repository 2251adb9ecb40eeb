"""Evaluate a saved sentence encoder with the papers' protocols. (Not named `evaluate.py`: a script of that name
would shadow the `evaluate` library for every script in this folder.)

    python scripts/evaluate_model.py --model runs/ems-default --suite configs/eval_shared.yaml --update_card

`--model` is a folder saved by this package, any transformers `AutoModel` encoder folder (mean pooling), or a
sentence-transformers folder (`--backend sentence-transformers`). `--suite` is a YAML task list (see
`configs/eval_shared.yaml`): retrieval, similarity, classification and mining tasks on local files. Results go to
`--output` (default: MODEL/eval_suite_results.json); `--update_card` adds them to the `model-index` of MODEL/README.md.
"""

import argparse
import json
from pathlib import Path

from trainers.cards import update_card_results
from trainers.evaluation.suite import load_suite, run_suite
from trainers.loading import load_embedder


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--suite", default="configs/eval_shared.yaml")
    parser.add_argument("--backend", choices=("auto", "transformers", "sentence-transformers"), default="auto")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--output", default=None)
    parser.add_argument("--update_card", action="store_true", help="Write the results into MODEL/README.md.")
    args = parser.parse_args()

    embed, languages = load_embedder(args.model, backend=args.backend, batch_size=args.batch_size)
    results = run_suite(load_suite(args.suite, languages), embed)
    output = Path(args.output or Path(args.model) / "eval_suite_results.json")
    output.write_text(json.dumps({"model": args.model, "suite": args.suite, "results": results}, indent=2))
    print(json.dumps(results, indent=2))
    print(f"results -> {output}")
    if args.update_card:
        update_card_results(args.model, results, suite=args.suite)
        print(f"model-index updated in {Path(args.model) / 'README.md'}")


if __name__ == "__main__":
    main()
