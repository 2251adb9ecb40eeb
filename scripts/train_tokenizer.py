"""Train the shared SentencePiece vocabulary (lowercased, one `<2xx>` token per language) on parallel pairs.

    python scripts/train_tokenizer.py --data data/default/train.jsonl.gz --output_dir runs/tokenizer --vocab_size 8000

`--data` is anything `load_parallel_dataset` reads: a TSV / CSV / JSONL / Parquet file, a dataset folder or a Hub
dataset name, with columns `src, tgt, src_lang, tgt_lang` (or `lang, en, text`). The folder then loads with
`AutoTokenizer.from_pretrained(output_dir)`.
"""

import argparse

from trainers.data import load_parallel_dataset, pair_languages, validate_pairs
from trainers.tokenizer import train_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--vocab_size", type=int, default=60000, help="SentencePiece pieces (paper: 60k).")
    parser.add_argument("--model_max_length", type=int, default=120, help="Truncation length (paper: 120).")
    args = parser.parse_args()
    if args.vocab_size < 10:
        parser.error(f"--vocab_size {args.vocab_size} is too small for a SentencePiece vocabulary.")
    pairs = load_parallel_dataset(args.data)
    validate_pairs(pairs, name=args.data)
    texts = (text for row in pairs for text in (row["src"], row["tgt"]))
    tokenizer = train_tokenizer(texts, pair_languages(pairs), args.vocab_size, args.model_max_length, args.output_dir)
    print(f"{len(tokenizer)} tokens ({len(pair_languages(pairs))} language tokens) -> {args.output_dir}")


if __name__ == "__main__":
    main()
