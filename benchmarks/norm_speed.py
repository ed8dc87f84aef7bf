"""Forward+backward time of each preset's unified layer divided by a reference measured in the same run,
eager and under ``torch.compile``.

- **eager**: ours / its native torch twin (``bn`` → ``nn.BatchNorm2d``, ``gn`` → ``nn.GroupNorm(32, C)``, …;
  ``nn.GroupNorm(32, C)`` for presets without one). Targets (issue 2): ≤ 1.10 with a twin, ≤ 3.0 without.
- **compiled**: ours compiled as the layer's ``compile=True`` compiles its core (normsearch's
  ``compile_core``: ``torch.compile`` with inductor options) / ``torch.compile(nn.GroupNorm(32, C))``
  and / eager ``nn.GroupNorm(32, C)``. Target (issue 13), for the generic presets (no twin): ≤ 2.0
  against the faster of the two GroupNorms, i.e. the larger of the two ratios. "defaults ×":
  ``torch.compile(ours)`` with torch's default options / ours under ``compile_core`` (> 1: its options
  make it faster). The compile time (the first forward+backward call of the compiled module) is printed
  separately; the run uses an empty inductor cache, so it is the cost of a first compile (a later process
  finds the kernels in ``TORCHINDUCTOR_CACHE_DIR``).
- **timm**: timm's ``EvoNorm2dB0`` / ``EvoNorm2dS0`` / ``FilterResponseNormTlu2d`` (timm's FRN + TLU, the
  function of ``frn``; ``FilterResponseNormAct2d`` adds a ReLU) divided by ours, eager and compiled:
  how many times faster ours is.

- **tokens**: DyT and Derf (``dyt`` / ``derf`` with ``layout=tokens``) over a transformer's (N, L, C)
  (``--tokens``) divided by ``nn.LayerNorm(C)``, eager (target ≤ 1.5) and compiled (ours under
  ``compile_core`` / the faster of compiled and eager ``nn.LayerNorm``, target ≤ 1.0); ``pn:layout=tokens``
  (``F.layer_norm`` itself) is the control row, which should read ≈ 1.

Each ratio is the median of back-to-back pair ratios (``timing.timed_pair``), so machine noise hits both
sides alike; the ms columns are medians. ``--device cuda --amp --channels-last`` measures under bf16
autocast and the channels_last layout.
Usage: ``python benchmarks/norm_speed.py [--shape 32 64 32 32] [--repeats 11] [--threads 1] [--no-compile]
[--presets frn evonorm_s0 ...] [--device cpu|cuda] [--amp] [--channels-last] [--tokens 32 128 256]
[--no-tokens]``.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch
from timing import ChannelsLast, empty_inductor_cache, fwd_bwd_seconds, reference_name, timed_pair
from torch import nn

from normsearch import PRESETS, build_norm
from normsearch.norm.functional import compile_core

EAGER_TARGET_TWIN, EAGER_TARGET_GN, COMPILED_TARGET = 1.10, 3.0, 2.0
EXTRA = ("pn:act=tlu",)
"""Specs measured besides the presets: the generic path over C at each position."""
TOKENS_SPECS = ("pn:layout=tokens", "dyt:layout=tokens", "derf:layout=tokens")
"""The tokens table's rows: the LayerNorm control, DyT, Derf."""
TOKENS_EAGER_TARGET, TOKENS_COMPILED_TARGET = 1.5, 1.0
TIMM_TWINS = {"evonorm_b0": "EvoNorm2dB0", "evonorm_s0": "EvoNorm2dS0", "frn": "FilterResponseNormTlu2d"}


def native_twins(c: int, spatial: tuple[int, ...]) -> dict[str, nn.Module]:
    return {
        "bn": nn.BatchNorm2d(c),
        "ln": nn.GroupNorm(1, c),
        "in": nn.InstanceNorm2d(c, affine=True),
        "gn": nn.GroupNorm(32, c),
        "rms": nn.RMSNorm([c, *spatial], eps=1e-5),
        "pn": ChannelsLast(nn.LayerNorm(c)),
    }


def is_generic(name: str) -> bool:
    """A preset (or spec) with statistics and no native twin: it runs on the layer's generic path."""
    return name not in native_twins(32, (1,)) and build_norm(name, 32).config.partition != "none"


class Bench:
    """Input, output gradient and timing options shared by every measurement of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        layout = torch.channels_last if args.channels_last else torch.contiguous_format
        dtype = torch.bfloat16 if args.amp else torch.float32  # under autocast, a conv hands the norm bf16
        self.x = torch.randn(*args.shape, device=self.device, dtype=dtype).contiguous(memory_format=layout)
        self.grad = torch.randn_like(self.x)
        self.repeats, self.amp = args.repeats, args.amp

    def place(self, module: nn.Module) -> nn.Module:
        layout = torch.channels_last if self.x.is_contiguous(memory_format=torch.channels_last) else None
        return module.to(self.device, memory_format=layout) if layout else module.to(self.device)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    def pair(self, a: nn.Module, b: nn.Module) -> tuple[float, float, float]:
        with self.autocast():
            return timed_pair(a, b, self.x, self.grad, self.repeats, sync=self.device.type == "cuda")

    def compiled(self, module: nn.Module, compiler=torch.compile) -> tuple[nn.Module, float]:
        """``compiler(module)`` and the seconds of its first forward+backward (the compile)."""
        fast = compiler(module)
        with self.autocast():
            start = time.perf_counter()
            fwd_bwd_seconds(fast, self.x, self.grad, sync=self.device.type == "cuda")
        return fast, time.perf_counter() - start


def eager_table(bench: Bench, names: list[str], c: int, spatial: tuple[int, ...]) -> list[str]:
    twins = native_twins(c, spatial)
    print("\neager: ours / native twin (nn.GroupNorm(32, C) without one)")
    print(f"{'preset':<12} {'reference':<22} {'ours ms':>9} {'ref ms':>9} {'ratio':>7}  target")
    misses = []
    for name in names:
        ref = twins.get(name, nn.GroupNorm(32, c))
        target = EAGER_TARGET_TWIN if name in twins else EAGER_TARGET_GN
        ours_ms, ref_ms, ratio = bench.pair(bench.place(build_norm(name, c)), bench.place(ref))
        ok = "ok" if ratio <= target else "MISS"
        misses += [name] if ratio > target else []
        print(
            f"{name:<12} {reference_name(ref):<22} {ours_ms:9.2f} {ref_ms:9.2f} {ratio:7.2f}  ≤{target:.2f} {ok}"
        )
    return misses


def compiled_table(bench: Bench, names: list[str], c: int) -> list[str]:
    gn_eager = bench.place(nn.GroupNorm(32, c))
    gn_seconds = bench.compiled(bench.place(nn.GroupNorm(32, c)))[1]
    print(
        f'\ncompiled: torch.compile(ours) / torch.compile(nn.GroupNorm(32, C)) ("/ compiled GN") and / eager '
        f'nn.GroupNorm(32, C) ("/ eager GN"); GroupNorm compiled in {gn_seconds:.1f} s (with inductor\'s '
        "start-up)"
    )
    print(f"target for generic presets: ≤ {COMPILED_TARGET} against the faster GroupNorm (the larger ratio)")
    print(
        f"{'preset':<12} {'ours ms':>9} {'cGN ms':>8} {'/ compiled GN':>14} {'eGN ms':>8} {'/ eager GN':>11} "
        f"{'compile s':>10} {'defaults ×':>11}  target"
    )
    misses = []
    for name in names:
        # dynamo's cache entries for UnifiedNorm.forward would carry over between presets (after wn's empty
        # graph, dyt ran eagerly), so each preset starts afresh; GroupNorm recompiles from inductor's cache
        torch.compiler.reset()
        gn_compiled = bench.compiled(bench.place(nn.GroupNorm(32, c)))[0]
        fast, seconds = bench.compiled(bench.place(build_norm(name, c)), compile_core)
        ours_ms, cgn_ms, vs_compiled = bench.pair(fast, gn_compiled)
        _, egn_ms, vs_eager = bench.pair(fast, gn_eager)
        defaults = bench.pair(bench.compiled(bench.place(build_norm(name, c)))[0], fast)[2]
        verdict = ""
        if is_generic(name):
            worst = max(vs_compiled, vs_eager)
            verdict = f"≤{COMPILED_TARGET:.1f} {'ok' if worst <= COMPILED_TARGET else 'MISS'}"
            misses += [name] if worst > COMPILED_TARGET else []
        print(
            f"{name:<12} {ours_ms:9.2f} {cgn_ms:8.2f} {vs_compiled:14.2f} {egn_ms:8.2f} {vs_eager:11.2f} "
            f"{seconds:10.1f} {defaults:11.2f}  {verdict}"
        )
    return misses


def tokens_table(args: argparse.Namespace) -> list[str]:
    """DyT and Derf over (N, L, C) against ``nn.LayerNorm(C)``, eager and compiled; returns the misses."""
    bench = Bench(argparse.Namespace(**{**vars(args), "shape": args.tokens, "channels_last": False}))
    c = args.tokens[-1]
    print(
        f"\ntokens {tuple(bench.x.shape)}: ours / nn.LayerNorm(C), eager (≤ {TOKENS_EAGER_TARGET}) and compiled"
    )
    print(
        f"(ours under compile_core / the faster of compiled and eager LayerNorm, ≤ {TOKENS_COMPILED_TARGET})"
    )
    print(
        f"{'spec':<20} {'ours ms':>9} {'LN ms':>8} {'eager':>7}"
        + (f" {'cLN ms':>8} {'compiled':>9}" if args.compile else "")
    )
    misses = []
    layer_norm = bench.place(nn.LayerNorm(c))
    for spec in TOKENS_SPECS:
        ours = bench.place(build_norm(spec, c))
        ours_ms, ln_ms, eager = bench.pair(ours, layer_norm)
        row = f"{spec:<20} {ours_ms:9.3f} {ln_ms:8.3f} {eager:7.2f}"
        control = spec.startswith("pn")
        misses += [f"{spec} eager"] if eager > TOKENS_EAGER_TARGET and not control else []
        if args.compile:
            torch.compiler.reset()
            ln_compiled = bench.compiled(bench.place(nn.LayerNorm(c)))[0]
            fast = bench.compiled(bench.place(build_norm(spec, c)), compile_core)[0]
            _, cln_ms, vs_compiled = bench.pair(fast, ln_compiled)
            worst = max(vs_compiled, bench.pair(fast, layer_norm)[2])
            misses += [f"{spec} compiled"] if worst > TOKENS_COMPILED_TARGET and not control else []
            row += f" {cln_ms:8.3f} {worst:9.2f}"
        print(row)
    return misses


def timm_table(bench: Bench, c: int, compiled: bool) -> None:
    try:
        import timm.layers
    except ImportError:
        print("\ntimm is not installed: no comparison against timm's layers (pip install timm)")
        return
    print(f"\ntimm {timm.__version__}: timm / ours (how many times faster ours is; > 1: ours is faster)")
    print(f"{'preset':<12} {'timm layer':<24} {'eager ×':>8}" + (f" {'compiled ×':>11}" if compiled else ""))
    for name, timm_name in TIMM_TWINS.items():
        theirs = bench.place(getattr(timm.layers, timm_name)(c))
        ours = bench.place(build_norm(name, c))
        row = f"{name:<12} {timm_name:<24} {bench.pair(theirs, ours)[2]:8.2f}"
        if compiled:
            row += f" {bench.pair(bench.compiled(theirs)[0], bench.compiled(ours, compile_core)[0])[2]:11.2f}"
        print(row)


def main() -> None:
    args = arguments()
    with empty_inductor_cache("norm_speed"):
        run(args)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[32, 64, 32, 32], metavar=("N", "C", "H", "W"))
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--presets", nargs="+", default=[*PRESETS, *EXTRA], metavar="SPEC")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="eager tables only")
    parser.add_argument("--no-timm", dest="timm", action="store_false", help="skip the timm comparison")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="channels_last input and layers")
    parser.add_argument("--tokens", type=int, nargs=3, default=[32, 128, 256], metavar=("N", "L", "C"))
    parser.add_argument(
        "--no-tokens", dest="tokens_table", action="store_false", help="skip the tokens table"
    )
    parser.add_argument("--no-presets", dest="presets_tables", action="store_false", help="tokens table only")
    return parser.parse_args()


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench(args)
    _, c, *spatial = args.shape
    print(
        f"torch {torch.__version__}, device {bench.device}, threads {torch.get_num_threads()}, input "
        f"{tuple(bench.x.shape)}, bf16 autocast {args.amp}, channels_last {args.channels_last}, "
        f"{args.repeats} repeats, forward+backward"
    )
    if args.tokens_table:
        misses = tokens_table(args)
        print("tokens targets met" if not misses else f"tokens targets missed: {', '.join(misses)}")
    if not args.presets_tables:
        return
    misses = eager_table(bench, args.presets, c, tuple(spatial))
    print("eager targets met" if not misses else f"eager targets missed: {', '.join(misses)}")
    if args.compile:
        misses = compiled_table(bench, args.presets, c)
        generic = [name for name in args.presets if is_generic(name)]
        print(
            f"compiled target ≤ {COMPILED_TARGET} met by every generic preset ({', '.join(generic)})"
            if not misses
            else f"compiled target ≤ {COMPILED_TARGET} missed by: {', '.join(misses)}"
        )
    if args.timm:
        timm_table(bench, c, args.compile)


if __name__ == "__main__":
    main()
