"""Thin entry point: see `trainers.cli.train_tokenizer` (installed as a console script), or run with --help."""

from trainers.cli import train_tokenizer

if __name__ == "__main__":
    train_tokenizer()
