"""Start-up time of ``normsearch`` commands, each as a ratio of a bare ``python -c "import torch"`` measured in
the same run: < 1 means the command is done before torch alone would have loaded.

Each round runs every command once in a fresh process (the console entry point, as the installed
``normsearch`` script runs it), in an order that rotates per round, plus the bare ``import torch``; a
command's figure is the median of its wall times over the rounds divided by the median of torch's, and
whether it imported torch. ``runs`` and ``leaderboard`` read a tiny study this script makes first in a
temporary runs directory (1 trial, no confirmation). Usage: ``python benchmarks/startup.py [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (
    ["--version"],
    ["--help"],
    ["presets"],
    ["space", "list"],
    ["space", "show", "groups"],
    ["space", "validate", "groups"],
    ["runs"],
    ["leaderboard"],
)
RUN = (
    "import sys; from normsearch.console import run; sys.argv = ['normsearch', *sys.argv[1:]]\n"
    "try:\n    run()\nfinally:\n    sys.stderr.write('\\ntorch=%d' % ('torch' in sys.modules))"
)


def seconds(argv: list[str], cwd: Path) -> tuple[float, bool]:
    """Wall seconds of one fresh process running ``argv`` (after ``python``), and whether it loaded torch."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    return elapsed, done.stderr.rstrip().endswith("torch=1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        seconds(["-c", RUN, "run", "--space", "groups", "--n-trials", "1", "--no-confirm"], cwd)
        times: dict[str, list[float]] = {" ".join(c): [] for c in COMMANDS}
        torch_loaded: dict[str, bool] = {}
        bare: list[float] = []
        for r in range(rounds):
            order = COMMANDS[r % len(COMMANDS) :] + COMMANDS[: r % len(COMMANDS)]
            bare.append(seconds(["-c", "import torch"], cwd)[0])
            for command in order:
                elapsed, loaded = seconds(["-c", RUN, *command], cwd)
                times[" ".join(command)].append(elapsed)
                torch_loaded[" ".join(command)] = loaded
    base = statistics.median(bare)
    print(f"bare `import torch`: {base:.2f} s (median of {rounds})")
    rows = {}
    for name, values in times.items():
        median = statistics.median(values)
        rows[name] = {
            "seconds": round(median, 3),
            "ratio": round(median / base, 2),
            "torch": torch_loaded[name],
        }
        print(
            f"normsearch {name:<24} {median:5.2f} s  {median / base:4.2f}× import torch  torch loaded: {torch_loaded[name]}"
        )
    print(json.dumps({"import_torch_s": round(base, 3), "commands": rows}))


if __name__ == "__main__":
    main()
