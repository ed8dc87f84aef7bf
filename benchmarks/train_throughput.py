"""Training throughput of the confirmation network with the unified layer vs. the same network on torch's layers.

For each preset with a native twin (``bn`` → ``nn.BatchNorm2d``, ``gn`` → ``nn.GroupNorm(32, C)``) the
network is built once (``build_model``); the twin is a deep copy whose every ``UnifiedNorm`` is swapped for
the torch layer with the same state (weight, bias, running statistics), so both start from identical
weights. Both are trained by :func:`normsearch.train.fit` on the same data and steps, interleaved over
``--repeats`` rounds; the throughput is the best images/s of the training steps over the rounds (evaluation
excluded; on a shared machine other load only ever slows a round down, so the best is the stable statistic).
Target (issue 5): unified / native ≥ 0.9. Usage:
``python benchmarks/train_throughput.py [--depth 14 --width 32 --resolution 16 --steps 40 --repeats 5]``.
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from normsearch.confirm.settings import ConfirmSettings
from normsearch.data import load_data
from normsearch.models import build_model
from normsearch.norm import UnifiedNorm
from normsearch.train import fit, resolve_device

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = parser.parse_args()
    settings = ConfirmSettings(dataset=args.dataset, resolution=args.resolution, model=args.model,
                               depth=args.depth, width=args.width, batch_size=args.batch_size, steps=args.steps,
                               device=args.device, threads=args.threads or None)
    data = load_data(settings.dataset, resolution=settings.resolution)
    device = resolve_device(settings.device)
    threads = args.threads or torch.get_num_threads()
    print(f"torch {torch.__version__}, device {device}, threads {threads}, "
          f"{args.model}-{args.depth} width {args.width}, {args.dataset} {data.resolution}×{data.resolution}, "
          f"batch {args.batch_size}, {args.steps} steps × {args.repeats} repeats")
    print(f"{'preset':<8} {'native':<14} {'unified img/s':>14} {'native img/s':>13} {'ratio':>7}  target ≥ {TARGET}")
    worst = float("inf")
    for spec, native_name in (("bn", "BatchNorm2d"), ("gn", "GroupNorm")):
        torch.manual_seed(0)
        model = build_model(args.model, spec, depth=args.depth, width=args.width,
                            num_classes=data.num_classes, in_channels=data.in_channels)
        twin = native_twin(model)
        speeds: dict[str, list[float]] = {"unified": [], "native": []}
        fit(copy.deepcopy(model), data, settings, seed=0)  # warm-up (allocator, kernels)
        for repeat in range(args.repeats):
            for kind, net in (("unified", model), ("native", twin)):
                speeds[kind].append(fit(copy.deepcopy(net), data, settings, seed=repeat).images_per_s)
        unified, native = max(speeds["unified"]), max(speeds["native"])
        ratio = unified / native
        worst = min(worst, ratio)
        print(f"{spec:<8} {native_name:<14} {unified:>14.0f} {native:>13.0f} {ratio:>7.3f}  "
              f"{'ok' if ratio >= TARGET else 'BELOW'}")
    print(f"worst ratio {worst:.3f} (target ≥ {TARGET})")


if __name__ == "__main__":
    main()
