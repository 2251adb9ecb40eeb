"""Thin entry point: see `trainers.cli.train` (installed as a console script), or run with --help."""

from trainers.cli import train

if __name__ == "__main__":
    train()
