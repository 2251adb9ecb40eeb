"""What every data-scale benchmark writes: one JSON row, printed and appended to its results file, with the machine
(CPU model and cores, as /proc/cpuinfo names them) and the load average beside the numbers."""

import json
import os
import platform
from pathlib import Path


def machine() -> str:
    """The CPU model and core count, e.g. "Intel(R) Xeon(R) Processor, 2 cores"."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def record(row: dict, output: Path) -> None:
    """Print `row` with the machine and load average, and append it to `output` (JSON lines)."""
    row = {**row, "machine": machine(), "load_average": [round(load, 2) for load in os.getloadavg()]}
    print(json.dumps(row), flush=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
