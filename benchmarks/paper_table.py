"""Regenerate the "Beyond BatchNorm" picture with normsearch's probes: every preset, and the group-size sweep.

Table 1 (every preset): activation growth in the ResNet without and with SkipInit (stable forward),
final-layer similarity (informative forward) and first/last gradient ratio (stable backward) in the ResNet
and the non-residual CNN. Table 2: the group-size sweep instance → layer (group sizes 1, 2, 4, ..., then LN)
in both networks. Lower is better for every score; ``unstable`` marks NaN/inf or collapse, ``n/a`` a preset
that does not fit the widths (e.g. 32 groups in a 16-channel stage).

Defaults are the paper's networks (ResNet-56 of width 32, the 10-layer CNN of width 64, 32 px inputs) on
upsampled digits; expect a few minutes on a laptop CPU. ``--plot FILE.png`` draws the curves over depth.

    python benchmarks/paper_table.py [--depth 56] [--cnn-depth 10] [--width 32] [--batch-size 64]
        [--seeds 3] [--resolution 32] [--data digits] [--seed 0] [--plot FILE.png] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from normsearch.norm import PRESETS
from normsearch.probes import ProbeResult, ProbeRunner, ProbeSettings

stdout, stderr = Console(), Console(stderr=True)
Outcome = ProbeResult | str  # a result, or why the config does not fit the network


def group_sweep(width: int) -> list[str]:
    """in, gn:group_size=2, 4, ... (up to the first stage's width), ln."""
    sizes, size = [], 2
    while size <= width:
        sizes.append(f"gn:group_size={size}")
        size *= 2
    return ["in", *sizes, "ln"]


def run_all(runner: ProbeRunner, specs: list[str], label: str) -> dict[str, Outcome]:
    out: dict[str, Outcome] = {}
    for spec in specs:
        try:
            out[spec] = runner.run(spec)
        except ValueError as err:
            out[spec] = str(err)
        seconds = f"{out[spec].seconds:.2f} s" if isinstance(out[spec], ProbeResult) else "n/a"
        stderr.print(f"[dim]{label}: {spec} {seconds}[/]", highlight=False)
    return out


def fmt(outcome: Outcome, field: str) -> str:
    if isinstance(outcome, str):
        return "n/a"
    if outcome.unstable:
        return "[red]unstable[/]"
    mean, std = getattr(outcome, field), getattr(outcome, f"{field}_std")
    return f"{mean:.3g} ± {std:.2g}"


def table(title: str, rows: list[str], columns: list[tuple[str, dict[str, Outcome], str]]) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("spec")
    for header, _, _ in columns:
        t.add_column(header, justify="right")
    for spec in rows:
        t.add_row(spec, *(fmt(results[spec], field) for _, results, field in columns))
    return t


def plot(path: str, results: dict[str, dict[str, Outcome]], presets: list[str], sweep: list[str]) -> None:
    """Four panels: ResNet variance without / with SkipInit (all presets), similarity and gradient norm over
    depth for the group sweep in the ResNet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[str], str, str, bool]] = [
        ("resnet", presets, "variance", "ResNet: block-output variance", True),
        ("resnet_skipinit", presets, "variance", "ResNet + SkipInit: block-output variance", True),
        ("resnet", sweep, "similarity", "ResNet: cosine similarity (group sweep)", False),
        ("resnet", sweep, "grad_norm", "ResNet: ‖∂L/∂z‖ per conv (group sweep)", True),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (key, specs, curve, title, log) in zip(axes, panels, strict=True):
        for i, spec in enumerate(specs):
            outcome = results[key][spec]
            if isinstance(outcome, ProbeResult) and not outcome.unstable:
                ax.plot(outcome.curves[curve], label=spec, linestyle=("-", "--", ":")[i // 10])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("block" if curve != "grad_norm" else "conv")
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    stderr.print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=56, help="ResNet depth (6n+2)")
    parser.add_argument("--cnn-depth", type=int, default=10, help="CNN conv layers")
    parser.add_argument("--width", type=int, default=32, help="ResNet width; the CNN gets twice this")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--data", default="digits", choices=("digits", "gaussian"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="FILE.png")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = parser.parse_args()
    common = {
        "batch_size": args.batch_size,
        "seeds": args.seeds,
        "resolution": args.resolution,
        "data": args.data,
        "seed": args.seed,
    }
    try:
        resnet = ProbeSettings(model="resnet", depth=args.depth, width=args.width, **common)
        skip = ProbeSettings(model="resnet", depth=args.depth, width=args.width, skipinit=True, **common)
        cnn = ProbeSettings(model="cnn", depth=args.cnn_depth, width=2 * args.width, **common)
    except ValueError as err:
        sys.exit(f"error: {err}")
    presets, sweep = list(PRESETS), group_sweep(args.width)
    both = presets + [spec for spec in sweep if spec not in presets]
    jobs: dict[str, Callable[[], dict[str, Outcome]]] = {
        "resnet": lambda: run_all(ProbeRunner(resnet), both, f"resnet-{args.depth}"),
        "resnet_skipinit": lambda: run_all(ProbeRunner(skip), presets, f"resnet-{args.depth} skipinit"),
        "cnn": lambda: run_all(ProbeRunner(cnn), both, f"cnn-{args.cnn_depth}"),
    }
    results = {name: job() for name, job in jobs.items()}
    if args.plot:
        plot(args.plot, results, presets, sweep)
    if args.json:
        doc = {
            name: {spec: o.to_dict() if isinstance(o, ProbeResult) else {"error": o} for spec, o in r.items()}
            for name, r in results.items()
        }
        settings = {"resnet": dataclasses.asdict(resnet), "cnn": dataclasses.asdict(cnn)}
        print(json.dumps({"settings": settings, "results": doc}))
        return
    r, s, c = f"ResNet-{args.depth}", f"ResNet-{args.depth}+SkipInit", f"CNN-{args.cnn_depth}"
    stdout.print(
        table(
            f"Every preset: {args.data} {args.resolution}px, batch {args.batch_size}, {args.seeds} seeds (lower is better)",
            presets,
            [
                (f"growth {r}", results["resnet"], "activation_growth"),
                (f"growth {s}", results["resnet_skipinit"], "activation_growth"),
                (f"similarity {r}", results["resnet"], "similarity"),
                (f"grad ratio {r}", results["resnet"], "grad_ratio"),
                (f"similarity {c}", results["cnn"], "similarity"),
                (f"grad ratio {c}", results["cnn"], "grad_ratio"),
            ],
        )
    )
    stdout.print(
        table(
            "Group size, instance → layer: similarity rises, gradient ratio falls",
            sweep,
            [
                (f"similarity {r}", results["resnet"], "similarity"),
                (f"grad ratio {r}", results["resnet"], "grad_ratio"),
                (f"similarity {c}", results["cnn"], "similarity"),
                (f"grad ratio {c}", results["cnn"], "grad_ratio"),
            ],
        )
    )


if __name__ == "__main__":
    main()
