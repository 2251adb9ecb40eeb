"""Thin entry point: see `trainers.cli.prepare` (installed as the console script `ems-prepare`), or run with --help."""

from trainers.cli import prepare

if __name__ == "__main__":
    prepare()
