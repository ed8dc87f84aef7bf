"""Training throughput of the confirmation network with the unified layer vs. the same network on torch's layers.

For each preset with a native twin (``bn`` → ``nn.BatchNorm2d``, ``gn`` → ``nn.GroupNorm(32, C)``) the
network is built once (``build_model``); the twin is a deep copy whose every ``UnifiedNorm`` is swapped for
the torch layer with the same state (weight, bias, running statistics), so both start from identical
weights. Both are trained by :func:`normsearch.train.fit` on the same data and steps, interleaved over
``--repeats`` rounds; the throughput is the best images/s of the training steps over the rounds (evaluation
excluded; on a shared machine other load only ever slows a round down, so the best is the stable statistic).
Target (issue 5): unified / native ≥ 0.9.

``--mode compile`` instead trains each of ``--specs`` eagerly and with ``compile: true`` (``torch.compile``
of the network, :func:`normsearch.train.compiled`), from the same weights, and times every training step
(the progress callback), eager and compiled runs interleaved over ``--repeats`` rounds. Steady-state
images/s is the batch over the median step time from step 3, of the best round; the compile cost is the
first step's time minus a steady step: on an empty inductor cache (the first compiled run) and, as the
median of the later rounds, for another run of the same network (dynamo compiles afresh per run, the
kernels come from inductor's cache: what later units of a confirmation pay). Break-even: compile cost /
(eager step − compiled step), in steps and in epochs of the dataset; compile pays back for a run of E
epochs when E ≥ that. Usage:
``python benchmarks/train_throughput.py [--depth 14 --width 32 --resolution 16 --steps 40 --repeats 5]
[--mode native|compile] [--specs evonorm_s0 gn] [--device cpu|cuda] [--amp] [--channels-last]``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import math
import statistics
import time

import torch
from timing import empty_inductor_cache
from torch import nn

from normsearch.confirm.settings import ConfirmSettings
from normsearch.data import load_data
from normsearch.models import build_model
from normsearch.norm import UnifiedNorm
from normsearch.train import TrainProgress, fit, resolve_device

TARGET = 0.9


def native_layer(norm: UnifiedNorm) -> nn.Module:
    """The torch layer computing what ``norm`` computes (bn or gn configs), with its state copied."""
    cfg, c = norm.config, norm.num_channels
    if cfg.partition == "batch":
        layer = nn.BatchNorm2d(c, eps=cfg.eps, momentum=cfg.momentum)
    elif cfg.partition == "group":
        layer = nn.GroupNorm(norm.groups, c, eps=cfg.eps)
    else:
        raise ValueError(f"no native twin for {cfg.spec()}")
    layer.load_state_dict(norm.state_dict())
    return layer


def native_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every UnifiedNorm replaced by its torch layer."""
    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        if isinstance(module, UnifiedNorm):
            parent_name, _, child = name.rpartition(".")
            setattr(twin.get_submodule(parent_name), child, native_layer(module))
    return twin


def native_comparison(args: argparse.Namespace, settings: ConfirmSettings, data) -> None:
    print(
        f"{'preset':<8} {'native':<14} {'unified img/s':>14} {'native img/s':>13} {'ratio':>7}  target ≥ {TARGET}"
    )
    worst = float("inf")
    for spec, native_name in (("bn", "BatchNorm2d"), ("gn", "GroupNorm")):
        torch.manual_seed(0)
        model = build_model(
            args.model,
            spec,
            depth=args.depth,
            width=args.width,
            num_classes=data.num_classes,
            in_channels=data.in_channels,
        )
        twin = native_twin(model)
        speeds: dict[str, list[float]] = {"unified": [], "native": []}
        fit(copy.deepcopy(model), data, settings, seed=0)  # warm-up (allocator, kernels)
        for repeat in range(args.repeats):
            for kind, net in (("unified", model), ("native", twin)):
                speeds[kind].append(fit(copy.deepcopy(net), data, settings, seed=repeat).images_per_s)
        unified, native = max(speeds["unified"]), max(speeds["native"])
        ratio = unified / native
        worst = min(worst, ratio)
        print(
            f"{spec:<8} {native_name:<14} {unified:>14.0f} {native:>13.0f} {ratio:>7.3f}  "
            f"{'ok' if ratio >= TARGET else 'BELOW'}"
        )
    print(f"worst ratio {worst:.3f} (target ≥ {TARGET})")


def step_times(model: nn.Module, data, settings: ConfirmSettings) -> list[float]:
    """Seconds of each training step of ``fit`` (the first includes any compiling)."""
    stamps = [time.perf_counter()]

    def progress(event: TrainProgress) -> None:
        stamps.append(time.perf_counter())

    fit(model, data, settings, seed=0, progress=progress)
    return [b - a for a, b in itertools.pairwise(stamps)]


def compile_comparison(args: argparse.Namespace, settings: ConfirmSettings, data) -> None:
    per_epoch = len(data.train) // args.batch_size
    start = time.perf_counter()
    torch.compile(lambda t: t.sin() * 2)(torch.ones(4, requires_grad=True)).sum().backward()
    print(f"inductor start-up (once per process, not counted below): {time.perf_counter() - start:.1f} s")
    print(
        f"eager vs compile: true; steady = median step from step 3; compile = first step − steady step; "
        f"{per_epoch} steps per epoch"
    )
    print(
        f"{'spec':<12} {'eager img/s':>12} {'compiled img/s':>15} {'ratio':>6} {'compile s':>10} "
        f"{'again s':>8} {'break-even':>22}"
    )
    compiled_settings = dataclasses.replace(settings, compile=True)
    for spec in args.specs:
        torch.manual_seed(0)
        model = build_model(
            args.model,
            spec,
            depth=args.depth,
            width=args.width,
            num_classes=data.num_classes,
            in_channels=data.in_channels,
        )
        step_times(copy.deepcopy(model), data, settings)  # warm-up
        eager_runs, compiled_runs = [], []
        for _ in range(args.repeats):  # interleaved, so load hits both alike
            eager_runs.append(step_times(copy.deepcopy(model), data, settings))
            compiled_runs.append(step_times(copy.deepcopy(model), data, compiled_settings))
        # the best run's median step: on a shared machine load only ever slows a run down
        slow = min(statistics.median(run[2:]) for run in eager_runs)
        fast = min(statistics.median(run[2:]) for run in compiled_runs)
        compile_s = compiled_runs[0][0] - fast
        again_s = (
            statistics.median(run[0] for run in compiled_runs[1:]) - fast if args.repeats > 1 else math.nan
        )
        gain = slow - fast
        steps = compile_s / gain if gain > 0 else float("inf")
        even = f"{steps:.0f} steps = {steps / per_epoch:.1f} ep" if gain > 0 else "never (not faster)"
        print(
            f"{spec:<12} {args.batch_size / slow:>12.0f} {args.batch_size / fast:>15.0f} {slow / fast:>6.2f} "
            f"{compile_s:>10.1f} {again_s:>8.1f} {even:>22}"
        )
        if gain > 0:
            print(
                f"{'':<12} a run of E epochs pays back its compile when E ≥ {steps / per_epoch:.1f} (first "
                f"compile) / {again_s / gain / per_epoch:.1f} (kernels cached; nan: --repeats 1)"
            )


def main() -> None:
    args = arguments()
    with empty_inductor_cache("train_throughput"):
        run(args)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="native", choices=("native", "compile"))
    parser.add_argument(
        "--specs",
        nargs="+",
        default=["evonorm_s0", "gn"],
        metavar="SPEC",
        help="--mode compile: the normalizers trained",
    )
    parser.add_argument("--model", default="resnet", choices=("resnet", "cnn"))
    parser.add_argument("--depth", type=int, default=14)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last layout (CUDA)")
    return parser.parse_args()


def run(args: argparse.Namespace) -> None:
    settings = ConfirmSettings(
        dataset=args.dataset,
        resolution=args.resolution,
        model=args.model,
        depth=args.depth,
        width=args.width,
        batch_size=args.batch_size,
        steps=args.steps,
        device=args.device,
        threads=args.threads or None,
        amp=args.amp,
        channels_last=args.channels_last,
    )
    data = load_data(settings.dataset, resolution=settings.resolution)
    device = resolve_device(settings.device)
    threads = args.threads or torch.get_num_threads()
    print(
        f"torch {torch.__version__}, device {device}, threads {threads}, "
        f"{args.model}-{args.depth} width {args.width}, {args.dataset} {data.resolution}×{data.resolution}, "
        f"batch {args.batch_size}, {args.steps} steps × {args.repeats} repeats, amp {args.amp}, "
        f"channels_last {args.channels_last} (both apply on CUDA only)"
    )
    if args.mode == "native":
        native_comparison(args, settings, data)
    else:
        compile_comparison(args, settings, data)


if __name__ == "__main__":
    main()
