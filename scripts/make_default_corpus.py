"""Build the embedded default corpus: a small, seeded slice of the shared LibreOffice parallel data.

    python scripts/make_default_corpus.py --source ../shared/data/parallel/train.tsv.gz \\
        --output_dir trainers/data/default

Writes `train.jsonl.gz` and `heldout.jsonl.gz` with columns `src, tgt, src_lang, tgt_lang` (English is the source
side). No English string of the held-out part occurs anywhere in the train part.
"""

import argparse
import csv
import gzip
import json
import random
from collections import defaultdict
from pathlib import Path

DEFAULT_LANGUAGES = (
    "de fr es it nl pt_BR pl cs ru uk el tr hu fi sv da id vi ja ko zh_CN ar he hi"
).split()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="../shared/data/parallel/train.tsv.gz")
    parser.add_argument("--output_dir", default="trainers/data/default")
    parser.add_argument("--languages", nargs="+", default=DEFAULT_LANGUAGES)
    parser.add_argument("--train_per_language", type=int, default=1500)
    parser.add_argument("--heldout_per_language", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    wanted = set(args.languages)
    rows = defaultdict(list)
    with gzip.open(args.source, "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if row["lang"] in wanted:
                rows[row["lang"]].append((row["en"], row["text"]))
    missing = wanted - set(rows)
    if missing:
        raise SystemExit(f"{args.source} has no pairs for {sorted(missing)}.")

    rng = random.Random(args.seed)
    heldout, heldout_english = {}, set()
    for lang in args.languages:
        pairs = rows[lang]
        rng.shuffle(pairs)
        heldout[lang] = pairs[: args.heldout_per_language]
        heldout_english.update(en for en, _ in heldout[lang])
    train = {
        lang: [pair for pair in rows[lang][args.heldout_per_language :] if pair[0] not in heldout_english][
            : args.train_per_language
        ]
        for lang in args.languages
    }

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("heldout", heldout)):
        records = [
            {"src": en, "tgt": text, "src_lang": "en", "tgt_lang": lang}
            for lang in args.languages
            for en, text in part[lang]
        ]
        if name == "train":
            rng.shuffle(records)
        with gzip.GzipFile(out / f"{name}.jsonl.gz", "wb", mtime=0) as raw:
            raw.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
        print(f"{name}: {len(records)} pairs in {len(args.languages)} languages -> {out / f'{name}.jsonl.gz'}")


if __name__ == "__main__":
    main()
