"""What the commands hold back unless asked: `--verbose` (or `EMS_VERBOSE=1`) shows it all."""

import os


def verbose() -> bool:
    """Whether the user asked to see everything (`--verbose`, `EMS_VERBOSE=1`)."""
    return os.environ.get("EMS_VERBOSE") == "1"
