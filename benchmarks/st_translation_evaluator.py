"""sentence-transformers' `TranslationEvaluator` on the retrieval tasks of an evaluation suite, beside the P@1 that
`ems-evaluate` wrote for the same model (issue 21: the package in a plain install, without sentence-transformers,
scores all-MiniLM-L6-v2 as sentence-transformers does).

    ems-evaluate --model MINILM_FOLDER --suite eval_default --output runs/minilm.json   # in the plain install
    python benchmarks/st_translation_evaluator.py --results runs/minilm.json --suite eval_default

MINILM_FOLDER: `python -c "from trainers.loading import minilm_folder; print(minilm_folder())"`. Prints a markdown
table (per evaluator: ems-evaluate's P@1, TranslationEvaluator's mean of src2trg and trg2src accuracy, difference).
"""

import argparse
import json

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import TranslationEvaluator

from trainers.evaluation.retrieval import RetrievalEvaluator
from trainers.evaluation.suite import load_suite
from trainers.loading import minilm_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="The JSON ems-evaluate wrote (--output).")
    parser.add_argument("--suite", default="eval_default")
    parser.add_argument("--model", default=None, help="Model folder (default: the installed all-MiniLM-L6-v2).")
    args = parser.parse_args()
    model = SentenceTransformer(str(args.model or minilm_folder()), device="cpu")
    theirs = {}
    for evaluator in load_suite(args.suite):
        if isinstance(evaluator, RetrievalEvaluator):
            scores = TranslationEvaluator(evaluator.sources, evaluator.targets, batch_size=128)(model)
            theirs[evaluator.name] = (scores["src2trg_accuracy"] + scores["trg2src_accuracy"]) / 2
    ours = json.loads(open(args.results).read())["results"]  # read last: ems-evaluate may run meanwhile
    print("| evaluator | ems-evaluate P@1 | TranslationEvaluator P@1 | difference |\n|---|---|---|---|")
    differences = []
    for name, p_at_1 in theirs.items():
        mine = ours[name]["metrics"]["p@1"]
        differences.append(abs(mine - p_at_1))
        print(f"| {name} | {mine:.4f} | {p_at_1:.4f} | {mine - p_at_1:+.4f} |")
    print(f"\n{len(differences)} evaluators; largest |difference| {max(differences):.4f}")


if __name__ == "__main__":
    main()
