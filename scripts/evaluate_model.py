"""Thin entry point: see `trainers.cli.evaluate` (installed as a console script), or run with --help. (Not named
`evaluate.py`: a script of that name would shadow the `evaluate` library for every script in this folder.)"""

from trainers.cli import evaluate

if __name__ == "__main__":
    evaluate()
