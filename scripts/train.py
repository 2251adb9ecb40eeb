"""Train an EMS sentence encoder.

    accelerate launch scripts/train.py --output_dir runs/ems-default
    accelerate launch scripts/train.py --config configs/ems_paper.yaml --output_dir runs/ems-paper \
        --set data.train=../shared/data/parallel/train.tsv.gz

Trains the tokenizer (unless one is configured), trains the model with periodic checkpoints (an interrupted run
resumes from its last checkpoint when started again with the same --output_dir), measures held-out retrieval P@1
and writes the model, tokenizer, code files, training config and model card to --output_dir.
"""

import argparse
import json

from trainers.ems_pipeline import train_ems
from trainers.run_config import DEFAULT_CONFIG, load_run_config


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="Where checkpoints and the final model go.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML run config (default: %(default)s).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="Override one config value, e.g. --set training.max_steps=100 (repeatable).")
    parser.add_argument("--no_resume", action="store_true", help="Start over even if checkpoints exist.")
    args = parser.parse_args()
    results = train_ems(load_run_config(args.config, args.overrides), args.output_dir, resume=not args.no_resume)
    if results:
        print(json.dumps({"heldout_p@1": results["model"]["average"],
                          "tfidf_baseline_p@1": results["tfidf_baseline"]["average"]}, indent=2))


if __name__ == "__main__":
    main()
