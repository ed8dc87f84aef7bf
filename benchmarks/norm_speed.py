"""Forward+backward time of each preset's unified layer divided by its native torch twin, in one run.

Targets (issue 2): ≤ 1.10 for presets with a native twin (bn, ln, in, gn, rms, pn); ≤ 3.0 against
``nn.GroupNorm(32, C)`` for the others. Timings are medians of interleaved repeats, so machine noise hits
both sides alike. Usage: ``python benchmarks/norm_speed.py [--shape 64 64 32 32] [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from normsearch import PRESETS, build_norm


class ChannelsLast(nn.Module):
    """A last-dim layer applied over C at every position of (N, C, *S)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.movedim(1, -1)).movedim(-1, 1)


def native_twins(c: int, spatial: tuple[int, ...]) -> dict[str, nn.Module]:
    return {
        "bn": nn.BatchNorm2d(c),
        "ln": nn.GroupNorm(1, c),
        "in": nn.InstanceNorm2d(c, affine=True),
        "gn": nn.GroupNorm(32, c),
        "rms": nn.RMSNorm([c, *spatial], eps=1e-5),
        "pn": ChannelsLast(nn.LayerNorm(c)),
    }


def fwd_bwd_seconds(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    xr = x.detach().requires_grad_(True)
    start = time.perf_counter()
    module(xr).backward(grad)
    return time.perf_counter() - start


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
        ours = build_norm(name, c)
        ref = twins.get(name, nn.GroupNorm(32, c))
        target = 1.10 if name in twins else 3.0
        for module in (ours, ref):  # warm-up
            fwd_bwd_seconds(module, x, grad)
        t_ours, t_ref = [], []
        for _ in range(args.repeats):
            t_ours.append(fwd_bwd_seconds(ours, x, grad))
            t_ref.append(fwd_bwd_seconds(ref, x, grad))
        ratio = statistics.median(t_ours) / statistics.median(t_ref)
        ref_name = type(ref.inner if isinstance(ref, ChannelsLast) else ref).__name__
        ok = "ok" if ratio <= target else "MISS"
        print(
            f"{name:<12} {ref_name:<22} {1e3 * statistics.median(t_ours):9.2f} "
            f"{1e3 * statistics.median(t_ref):9.2f} {ratio:7.2f}  ≤{target:.2f} {ok}"
        )
        worst[name] = (ratio, target)
    misses = [k for k, (r, t) in worst.items() if r > t]
    print("all targets met" if not misses else f"targets missed: {', '.join(misses)}")


if __name__ == "__main__":
    main()
