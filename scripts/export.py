"""Thin entry point: see `trainers.cli.export` (installed as the `ems-export` console script), or run with --help."""

from trainers.cli import export

if __name__ == "__main__":
    export()
