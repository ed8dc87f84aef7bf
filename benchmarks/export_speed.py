"""Forward+backward time of exported layers divided by a reference measured in the same run.

- Configs with a native torch twin: the exported class against that torch layer (``nn.BatchNorm2d``,
  ``nn.GroupNorm``, ``nn.LayerNorm``/``nn.RMSNorm`` over channels-last…). Target ≤ 1.10: the exported code
  calls the same fused kernel, so the ratio is 1 up to noise.
- Generic configs (no twin): the exported class against ``build_norm`` (normsearch's own layer), for
  information: both run the same functional core, the export with its public-API primitives where the
  layer uses torch's internal fused kernels (``normsearch/norm/primitives_aten.py``).

Each ratio is the median over repeats of (export time / reference time) measured back to back, so
machine noise hits both sides alike; the ms columns are medians.
Usage: ``python benchmarks/export_speed.py [--shape 64 64 32 32] [--repeats 31]``.
"""

from __future__ import annotations

import argparse

import torch
from timing import ChannelsLast, reference_name, timed_pair
from torch import nn

from normsearch import build_norm
from normsearch.export import export_source

TARGET = 1.10


def native_twins(c: int, spatial: tuple[int, ...]) -> dict[str, nn.Module]:
    """Spec → the torch layer computing the same thing."""
    return {
        "bn": nn.BatchNorm2d(c),
        "bn:affine=none,momentum=0.05": nn.BatchNorm2d(c, affine=False, momentum=0.05),
        "bn:running=false": nn.BatchNorm2d(c, track_running_stats=False),
        "ln": nn.GroupNorm(1, c),
        "in": nn.GroupNorm(c, c),
        "gn": nn.GroupNorm(32, c),
        "gn:groups=8,affine=gain": nn.GroupNorm(8, c),
        "pn": ChannelsLast(nn.LayerNorm(c)),
        "pn:center=false,scale=rms,affine=gain": ChannelsLast(nn.RMSNorm(c, eps=1e-5)),
        "rms:affine=none": nn.RMSNorm([c, *spatial], eps=1e-5, elementwise_affine=False),
    }


GENERIC = [
    "frn",
    "evonorm_s0",
    "evonorm_b0",
    "bgn",
    "bn:center=false",
    "in:scale=rms,center=false",
    "gn:group_size=8,scale=rms",
    "pn:act=tlu",
]


def exported(spec: str, c: int) -> nn.Module:
    namespace: dict = {"__name__": "exported"}
    source = export_source(spec, class_name="Exported")
    exec(compile(source, f"<export {spec}>", "exec"), namespace)  # noqa: S102  (our own generated code)
    return namespace["Exported"](c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 64, 32, 32], metavar=("N", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    n, c, h, w = args.shape
    x = torch.randn(n, c, h, w)
    grad = torch.randn_like(x)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, input {tuple(x.shape)}")
    print(f"{'config':<40} {'reference':<14} {'export ms':>9} {'ref ms':>9} {'ratio':>7}  target")
    misses = []
    for spec, twin in native_twins(c, (h, w)).items():
        ours, ref, ratio = timed_pair(exported(spec, c), twin, x, grad, args.repeats)
        ref_name = reference_name(twin)
        verdict = "ok" if ratio <= TARGET else "MISS"
        misses += [spec] if ratio > TARGET else []
        print(f"{spec:<40} {ref_name:<14} {ours:9.2f} {ref:9.2f} {ratio:7.2f}  ≤{TARGET:.2f} {verdict}")
    for spec in GENERIC:
        ours, ref, ratio = timed_pair(exported(spec, c), build_norm(spec, c), x, grad, args.repeats)
        print(f"{spec:<40} {'build_norm':<14} {ours:9.2f} {ref:9.2f} {ratio:7.2f}  (info)")
    print("all targets met" if not misses else f"targets missed: {', '.join(misses)}")


if __name__ == "__main__":
    main()
