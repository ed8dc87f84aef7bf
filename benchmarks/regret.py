"""Does multi-fidelity confirmation name the normalizer that trains best, at a fraction of the cost?

For each space: one search (the space's probe and search settings, a fresh journal in a temporary
directory); then, per training seed s, on a private copy of the searched study:

1. the multi-fidelity confirmation (the space's ``confirm:`` settings with ``seed`` = s): its winner, and
   its training cost in images;
2. ``confirm --all`` with the same settings: every config at every learning rate for the final budget
   (it reuses the final rung's runs), whose best accuracy is the reference.

It prints per seed: the winner, its **regret** = (best ``--all`` accuracy − the winner's ``--all``
accuracy) in points, and the **cost fraction** = images spent by step 1 / images ``--all`` takes from
scratch. As the noise yardstick it prints, over the configs that both seeds trained with ``--all``, the
mean |accuracy(seed a) − accuracy(seed b)| in points, and the seed-to-seed Spearman ρ. Target: regret
within that noise at a cost fraction ≤ 0.30.

Spaces: ``groups`` and ``classic`` (shipped) and ``steep`` (below): the GroupNorm family trained in another
regime, a shallower ResNet-8 at a high learning rate (0.4, 1 warmup epoch), where the evidence in
docs/confirm.md has most layers collapse at the full rate.

Usage: ``python benchmarks/regret.py [--spaces groups classic steep] [--seeds 0 1] [--trials N]
[--depth D]`` (``--trials`` caps each space's search budget, ``--depth`` overrides the trained depth).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from normsearch.confirm import confirm_study, load_confirmation, training_cost
from normsearch.confirm.calibration import rank_correlation
from normsearch.confirm.select import all_candidates
from normsearch.leaderboard import build_rows, winner
from normsearch.search import StopRequest, WorkerTask, optimize, prepare
from normsearch.space import load_space
from normsearch.storage import locate, open_study

TARGET_FRACTION = 0.30
STEEP = """\
description: "GroupNorm family, trained hot: ResNet-8, lr 0.4 with 1 warmup epoch"
space:
  partition: {choices: [instance, group, layer]}
  group_size: {when: {partition: group}, choices: [2, 4, 8, 16, 32]}
  center: {choices: [true, false]}
  scale: {choices: [std, rms]}
probe: {batch_size: 64, seeds: 3}
search: {n_trials: 28, sampler: brute_force, seed: 0}
confirm: {depth: 8, width: 32, lr: 0.4, warmup_epochs: 1, epochs: 3}
"""


def _space(name: str, root: Path, trials: int | None, depth: int | None):
    path = name
    if name == "steep":
        path = str(root / "steep.yaml")
        Path(path).write_text(STEEP)
    space = load_space(path)
    if trials is not None:
        space = dataclasses.replace(
            space, search=dataclasses.replace(space.search, n_trials=min(trials, space.search.n_trials))
        )
    if depth is not None:  # the matched probe follows the trained network
        space = space.with_confirm(dataclasses.replace(space.confirm, depth=depth))
    return space


def _accuracies(study) -> tuple[dict[str, float], dict[str, float]]:
    """Config → accuracy at the final budget as ranked (diverged: -1), and as measured; after ``--all``."""
    records = load_confirmation(study).records.values()
    return (
        {r["config"]: -1.0 if r["diverged"] else r["accuracy"] for r in records},
        {r["config"]: r["accuracy"] for r in records},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=["groups", "classic", "steep"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--trials", type=int, default=None, help="cap on each space's search budget")
    parser.add_argument("--depth", type=int, default=None, help="override the trained ResNet depth")
    args = parser.parse_args()
    quiet = Console(file=io.StringIO())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in args.spaces:
            space = _space(name, root, args.trials, args.depth)
            started = time.perf_counter()
            location = locate(space.name, root / "runs")
            prepare(space, location)
            optimize(
                WorkerTask(space, location, space.search.n_trials, None, space.search.seed), StopRequest()
            )
            searched = time.perf_counter() - started
            c = space.confirm
            print(
                f"\n{name}: {space.search.n_trials} trials probed in {searched:.0f} s; confirm {c.model}-{c.depth}, "
                f"lr {c.lr:g} × {list(c.lr_factors)}, rungs up to {c.epochs} epochs, eta {c.eta}, top_k {c.top_k}, "
                f"explore {c.explore}",
                flush=True,
            )
            full: dict[int, dict[str, float]] = {}
            raw: dict[int, dict[str, float]] = {}
            for seed in args.seeds:
                copy = root / f"runs-{name}-{seed}"
                shutil.copytree(root / "runs", copy)
                study = open_study(space.name, copy)
                settings = dataclasses.replace(space.confirm, seed=seed, seeds=1)
                tick = time.perf_counter()
                confirm_study(study, settings, console=quiet)
                rows = build_rows(study)
                best = winner(rows)
                cost = training_cost(load_confirmation(study), len(all_candidates(rows)))
                multi = time.perf_counter() - tick
                confirm_study(study, settings, console=quiet, exhaustive=True)
                full[seed], raw[seed] = _accuracies(study)
                top = max(full[seed], key=full[seed].get)
                regret = 100 * (full[seed][top] - full[seed][best["config"]])
                fraction = cost["spent_images"] / cost["exhaustive_images"]
                print(
                    f"  seed {seed}: winner {best['config']} {100 * best['accuracy']:.1f}% after {best['budget']} "
                    f"ep (lr {best['lr']:g}); best of --all {top} {100 * full[seed][top]:.1f}%; regret "
                    f"{regret:.1f} points; cost {cost['spent_images']}/{cost['exhaustive_images']} images = "
                    f"{fraction:.2f} ({'≤' if fraction <= TARGET_FRACTION else '>'} {TARGET_FRACTION}); "
                    f"{multi:.0f} s multi-fidelity, {time.perf_counter() - tick - multi:.0f} s --all",
                    flush=True,
                )
            if len(full) >= 2:
                a, b = (raw[s] for s in args.seeds[:2])
                shared = sorted(set(a) & set(b))
                noise = statistics.fmean(abs(a[k] - b[k]) for k in shared) * 100
                rho = rank_correlation([-a[k] for k in shared], [b[k] for k in shared])["spearman"]
                spearman = "n/a" if rho is None else f"{rho:+.2f}"
                print(
                    f"  seed noise over {len(shared)} configs (--all): mean |Δ accuracy| {noise:.1f} points, "
                    f"seed-to-seed Spearman {spearman}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
