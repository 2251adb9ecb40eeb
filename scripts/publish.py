"""Thin entry point: see `trainers.cli.publish` (installed as a console script), or run with --help."""

from trainers.cli import publish

if __name__ == "__main__":
    publish()
