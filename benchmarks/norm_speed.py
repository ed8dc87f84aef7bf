"""Forward+backward time of each preset's unified layer divided by its native torch twin, in one run.

Targets (issue 2): ≤ 1.10 for presets with a native twin (bn, ln, in, gn, rms, pn); ≤ 3.0 against
``nn.GroupNorm(32, C)`` for the others. Each ratio is the median of back-to-back pair ratios
(``timing.timed_pair``), so machine noise hits both sides alike.
Usage: ``python benchmarks/norm_speed.py [--shape 64 64 32 32] [--repeats 15]``.
"""

from __future__ import annotations

import argparse

import torch
from timing import ChannelsLast, reference_name, timed_pair
from torch import nn

from normsearch import PRESETS, build_norm


def native_twins(c: int, spatial: tuple[int, ...]) -> dict[str, nn.Module]:
    return {
        "bn": nn.BatchNorm2d(c),
        "ln": nn.GroupNorm(1, c),
        "in": nn.InstanceNorm2d(c, affine=True),
        "gn": nn.GroupNorm(32, c),
        "rms": nn.RMSNorm([c, *spatial], eps=1e-5),
        "pn": ChannelsLast(nn.LayerNorm(c)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 64, 32, 32], metavar=("N", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    n, c, h, w = args.shape
    x = torch.randn(n, c, h, w)
    grad = torch.randn_like(x)
    twins = native_twins(c, (h, w))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, input {tuple(x.shape)}")
    print(f"{'preset':<12} {'reference':<22} {'ours ms':>9} {'ref ms':>9} {'ratio':>7}  target")
    worst = {}
    for name in PRESETS:
        ref = twins.get(name, nn.GroupNorm(32, c))
        target = 1.10 if name in twins else 3.0
        ours_ms, ref_ms, ratio = timed_pair(build_norm(name, c), ref, x, grad, args.repeats)
        ok = "ok" if ratio <= target else "MISS"
        print(f"{name:<12} {reference_name(ref):<22} {ours_ms:9.2f} {ref_ms:9.2f} {ratio:7.2f}  ≤{target:.2f} {ok}")
        worst[name] = (ratio, target)
    misses = [k for k, (r, t) in worst.items() if r > t]
    print("all targets met" if not misses else f"targets missed: {', '.join(misses)}")


if __name__ == "__main__":
    main()
