"""Thin entry point: see `trainers.cli.compare` (installed as a console script), or run with --help."""

from trainers.cli import compare

if __name__ == "__main__":
    compare()
