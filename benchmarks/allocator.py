"""Forward+backward time with glibc's default allocator settings / with ``normsearch.allocator``'s (which the
``normsearch`` command and its workers use): > 1 means keeping freed memory is faster.

The allocator is set per process, so each round runs two fresh processes, plain then tuned (alternating
which goes first), each timing the median forward+backward of ``--presets`` on one input; the ratio per
preset is the median over rounds of plain / tuned. Usage: ``python benchmarks/allocator.py [--shape 32 64 32
32] [--rounds 5] [--repeats 15] [--presets gn evonorm_s0 evonorm_b0 frn dyt]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch
from timing import fwd_bwd_seconds
from torch import nn

from normsearch import build_norm
from normsearch.allocator import keep_freed_memory


def measure(shape: list[int], presets: list[str], repeats: int) -> dict[str, float]:
    """Median forward+backward ms of each preset (``gn``: torch's nn.GroupNorm(32, C)), one thread."""
    torch.set_num_threads(1)
    x = torch.randn(*shape)
    grad = torch.randn_like(x)
    times = {}
    for name in presets:
        module = nn.GroupNorm(32, shape[1]) if name == "gn" else build_norm(name, shape[1])
        fwd_bwd_seconds(module, x, grad)  # warm-up
        times[name] = 1e3 * statistics.median(fwd_bwd_seconds(module, x, grad) for _ in range(repeats))
    return times


def child(args: argparse.Namespace, tuned: bool) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        "tuned" if tuned else "plain",
        "--shape",
        *map(str, args.shape),
        "--repeats",
        str(args.repeats),
        "--presets",
        *args.presets,
    ]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[32, 64, 32, 32], metavar=("N", "C", "H", "W"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--presets", nargs="+", default=["gn", "evonorm_s0", "evonorm_b0", "frn", "dyt"])
    parser.add_argument("--child", choices=("plain", "tuned"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "tuned" and not keep_freed_memory():
            raise SystemExit("this C library has no mallopt: nothing to compare")
        print(json.dumps(measure(args.shape, args.presets, args.repeats)))
        return
    print(
        f"torch {torch.__version__}, input {tuple(args.shape)}, one thread, {args.rounds} rounds × "
        f"{args.repeats} repeats; plain ms / tuned ms per round, then the median ratio"
    )
    ratios: dict[str, list[float]] = {name: [] for name in args.presets}
    for round_ in range(args.rounds):
        order = (False, True) if round_ % 2 == 0 else (True, False)
        results = {tuned: child(args, tuned) for tuned in order}
        for name in args.presets:
            ratios[name].append(results[False][name] / results[True][name])
        print(
            "  ".join(f"{n} {results[False][n]:.2f}/{results[True][n]:.2f}" for n in args.presets), flush=True
        )
    print(
        "plain / tuned: "
        + "  ".join(f"{n} {statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f})" for n, r in ratios.items())
    )


if __name__ == "__main__":
    main()
