"""Thin entry point: see `trainers.hard_negatives.main`, or run with --help."""

from trainers.hard_negatives import main

if __name__ == "__main__":
    main()
