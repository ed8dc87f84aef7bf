"""Speed of one probe against a plain training step of the same network, measured in one run.

Probe: ``ProbeRunner(settings).run("bn")`` with one seed (network build, hooks, forward, mean
cross-entropy, one backward to every conv output and parameter, one SGD step and a forward for the
step loss ratio, scores). Reference: forward + mean cross-entropy + backward
(all parameter gradients) of the same ResNet built with ``nn.BatchNorm2d`` on the same batch (built once,
outside the timing). The two are timed alternately, ``--repeats`` times each after a warm-up, and the
medians compared, so load on the machine hits both alike. Target: ratio ≤ 2.5.

    python benchmarks/probe_speed.py [--depth 20] [--width 16] [--batch-size 64] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from normsearch.norm import UnifiedNorm
from normsearch.probes import ProbeRunner, ProbeSettings

TARGET = 2.5


def with_torch_batchnorm(model: nn.Module) -> nn.Module:
    """The same network with every UnifiedNorm replaced by an ``nn.BatchNorm2d`` of its width."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, UnifiedNorm):
                setattr(parent, name, nn.BatchNorm2d(child.num_channels))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=ProbeSettings().resolution)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    settings = ProbeSettings(
        depth=args.depth, width=args.width, batch_size=args.batch_size, resolution=args.resolution, seeds=1
    )
    runner = ProbeRunner(settings)
    inputs, targets = runner.batch(0)
    reference = with_torch_batchnorm(runner.network("bn", 0)).train()

    def step() -> None:
        reference.zero_grad(set_to_none=True)
        F.cross_entropy(reference(inputs), targets).backward()

    def probe_once() -> None:
        runner.run("bn")

    timings: dict[str, list[float]] = {"reference": [], "probe": []}
    for _ in range(3):  # warm-up
        step()
        probe_once()
    for _ in range(args.repeats):
        for name, fn in (("reference", step), ("probe", probe_once)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    ref, prb = (statistics.median(timings[k]) for k in ("reference", "probe"))
    ratio = prb / ref
    print(
        f"resnet-{args.depth} width {args.width} batch {args.batch_size} {args.resolution}px, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"reference fwd+bwd (nn.BatchNorm2d): {ref * 1e3:8.2f} ms")
    print(f"probe (bn, 1 seed, build included): {prb * 1e3:8.2f} ms")
    print(f"ratio probe / reference: {ratio:.2f} (target <= {TARGET}) {'OK' if ratio <= TARGET else 'OVER'}")


if __name__ == "__main__":
    main()
