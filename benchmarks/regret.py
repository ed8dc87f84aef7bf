"""Does multi-fidelity confirmation name the normalizer that trains best, at a fraction of the cost, and better
than what a user would do instead?

For each regime (a space with its probe, search and confirmation settings): one search (a fresh journal in a
temporary directory); then, per training seed s, on a private copy of the searched study:

1. the multi-fidelity confirmation (the regime's ``confirm:`` settings with ``seed`` = s): its winner, and
   its training cost in images, baselines included;
2. ``confirm --all`` with the same settings: every config at every learning rate for the final budget
   (it reuses the final rung's runs), whose best accuracy is the reference;
3. the baselines at step 1's cost (benchmarks/baselines.py): the exact expected regret of a random draw of
   as many whole configs as that cost affords, and Optuna on training alone (TPE seeded with s, Hyperband
   pruning over epochs, the same configs and learning rates, stopped at the same number of images).

Per regime and seed it prints one row: the winner, the default's (``bn``) ``--all`` accuracy, the exhaustive
best, the **regret** = best ``--all`` accuracy − the winner's ``--all`` accuracy (points), the **cost
fraction** = images of step 1 / images ``--all`` takes from scratch, the random draw's expected regret (and its
m of N configs), Optuna's pick, its regret and images, and the search ranking's Spearman ρ with the ``--all``
accuracies. After the seeds: the seed noise (mean |accuracy(seed a) − accuracy(seed b)| over the configs both
trained, points, and the seed-to-seed ρ), and per config its probe evidence (one-step loss ratio r, activation
variance change over the block outputs, early/last gradient ratio), its ``--all`` rank per seed and its
rejection, if any (the evidence behind normsearch/score.py's limits). Target: regret within the seed noise at
a cost fraction ≤ 0.30, lower than the random draw's and Optuna's.

Regimes (:data:`REGIMES`): ``digits_hard`` (normsearch/data.py) at 8 px with ResNet-8, batch 4, the paper's
CNN without skips, a hot learning rate and a user's file network (benchmarks/user_vgg.py); digits with
torchvision's mobilenet_v2 at 16 px and with 8 of the classic zoo on ResNet-8; ``steep`` (the GroupNorm family on
ResNet-8 at lr 0.4). The shipped spaces (``groups``, ``classic``, ...) are regimes too, with their own settings.

Usage: ``python benchmarks/regret.py [--regimes NAME ...] [--seeds 0 1] [--trials N] [--depth D] [--quick]
[--json FILE]`` (``--trials`` caps each search budget, ``--depth`` overrides the trained depth, ``--quick``
runs two small regimes with 4 configs for smoke testing, ``--json`` writes every number). The previous
behaviour: ``--regimes groups classic steep``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from baselines import affordable, optuna_pruned, random_draw_expected_best
from rich.console import Console

from normsearch.confirm import confirm_study, load_confirmation, training_cost
from normsearch.confirm.calibration import rank_correlation, search_ranking
from normsearch.confirm.select import all_candidates
from normsearch.leaderboard import build_rows, winner
from normsearch.search import StopRequest, WorkerTask, optimize, prepare
from normsearch.space import load_space
from normsearch.storage import locate, open_study

TARGET_FRACTION = 0.30
DEFAULT = "bn"
HERE = Path(__file__).resolve().parent
ZOO = "[bn, ln, in, evonorm_b0, wn, sws, dyt]"
"""The candidates of the ``digits_hard`` regimes: classic's zoo less its 32-group layers (the networks are 16
channels wide), RMSNorm, FRN and none (to fit the suite's time), plus DyT."""
HARD = "dataset: digits_hard, resolution: 8, depth: 8, width: 16, epochs: 3"


def _zoo(description: str, confirm: str, zoo: str = ZOO) -> str:
    return f"""\
description: "{description}"
space:
  preset: {{choices: {zoo}}}
probe: {{batch_size: 64, seeds: 3}}
search: {{n_trials: {zoo.count(",") + 1}, sampler: brute_force, seed: 0}}
confirm: {{{confirm}}}
"""


REGIMES: dict[str, str] = {
    "hard-resnet": _zoo("digits_hard, ResNet-8 at 8 px, batch 64, lr 0.1", f"{HARD}, lr: 0.1"),
    "hard-batch4": _zoo(
        "digits_hard, ResNet-8 at 8 px, batch 4 (BN's statistics fail), lr 0.02, 2 epochs",
        "dataset: digits_hard, resolution: 8, depth: 8, width: 16, epochs: 2, eta: 2, batch_size: 4, lr: 0.02",
        "[bn, ln, in, evonorm_b0, dyt]",
    ),
    "hard-cnn": _zoo(
        "digits_hard, the paper's CNN (no skips), 8 layers at 8 px, lr 0.05", f"{HARD}, model: cnn, lr: 0.05"
    ),
    "hard-hot": _zoo(
        "digits_hard, ResNet-8 at 8 px, lr 0.4 with 1 warmup epoch", f"{HARD}, lr: 0.4, warmup_epochs: 1"
    ),
    "digits-torchvision": _zoo(
        "digits at 16 px, torchvision mobilenet_v2 (width ×0.25), lr 0.1 only",
        "resolution: 16, model: 'torchvision:mobilenet_v2,width_mult=0.25', epochs: 3, lr: 0.1, lr_factors: [1.0]",
        "[bn, ln, in, dyt]",
    ),
    "hard-user": _zoo(
        "digits_hard, a user's VGG-style file network (benchmarks/user_vgg.py) at 8 px, lr 0.05",
        f"dataset: digits_hard, resolution: 8, epochs: 3, model: '{HERE / 'user_vgg.py'}:vgg', lr: 0.05",
    ),
    "digits-classic": _zoo(
        "digits, 8 of the classic zoo, ResNet-8 (width 32) at 8 px, lr 0.1",
        "depth: 8, width: 32, epochs: 3, lr: 0.1",
        "[bn, ln, in, gn, frn, evonorm_s0, wn, sws]",
    ),
    "steep": """\
description: "GroupNorm family, trained hot: ResNet-8, lr 0.4 with 1 warmup epoch"
space:
  partition: {choices: [instance, group, layer]}
  group_size: {when: {partition: group}, choices: [2, 4, 8, 16, 32]}
  center: {choices: [true, false]}
  scale: {choices: [std, rms]}
probe: {batch_size: 64, seeds: 3}
search: {n_trials: 28, sampler: brute_force, seed: 0}
confirm: {depth: 8, width: 32, lr: 0.4, warmup_epochs: 1, epochs: 3}
""",
}
SUITE = list(REGIMES)
QUICK = {"regimes": ["hard-resnet", "hard-user"], "trials": 4, "seeds": [0, 1]}
STEEP_TRIALS = 8
"""The suite's cap on ``steep``'s 28 configs (brute force takes them in order), to fit its time."""


def _space(name: str, root: Path, trials: int | None, depth: int | None):
    path = name
    if name in REGIMES:
        path = str(root / f"{name}.yaml")
        Path(path).write_text(REGIMES[name])
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


def _ranks(accuracy: dict[str, float]) -> dict[str, int]:
    """Config → 1-based rank by accuracy (ties share the better rank)."""
    return {k: 1 + sum(other > v for other in accuracy.values()) for k, v in accuracy.items()}


def _evidence(study) -> dict[str, dict[str, Any]]:
    """Config → its probe scores (r, variance change ×, gradient ratio) and its stored rejection."""
    out = {}
    for trial in study.get_trials(deepcopy=False):
        probe, config = trial.user_attrs.get("probe"), trial.user_attrs.get("config")
        if not probe or not config or config in out:
            continue
        blocks = probe["blocks"]
        out[config] = {
            "step_loss_ratio": probe["step_loss_ratio"],
            "variance_change": float(torch.tensor((blocks - 1) * probe["activation_growth"]).exp()),
            "grad_ratio": probe["grad_ratio"],
            "blocks": blocks,
            "similarity": probe["similarity"],
            "rejected": trial.user_attrs.get("rejected"),
        }
    return out


def _seed_row(name: str, space, root: Path, seed: int, quiet: Console) -> dict[str, Any]:
    copy = root / f"runs-{name}-{seed}"
    shutil.copytree(root / "runs", copy)
    study = open_study(space.name, copy)
    settings = dataclasses.replace(space.confirm, seed=seed, seeds=1)
    tick = time.perf_counter()
    confirm_study(study, settings, console=quiet)
    rows = build_rows(study)
    best = winner(rows)
    candidates = all_candidates(rows)
    confirmation = load_confirmation(study)
    cost = training_cost(confirmation, len(candidates))
    ranking = search_ranking(rows)
    multi = time.perf_counter() - tick
    confirm_study(study, settings, console=quiet, exhaustive=True)
    ranked, measured = _accuracies(study)
    top = max(ranked, key=ranked.get)
    # regrets on measured accuracies: a diverged run counts with what it reached, not as -1
    regret = 100 * (measured[top] - measured[best["config"]])
    per_config = confirmation.images_per_run * len(settings.learning_rates())
    m = affordable(cost["spent_images"], per_config, len(ranked))
    random_regret = 100 * (measured[top] - random_draw_expected_best(list(measured.values()), m))
    tock = time.perf_counter()
    pick = optuna_pruned(sorted(ranked), settings, cost["spent_images"], seed=seed)
    optuna_seconds = time.perf_counter() - tock
    by_trial = {r["trial"]: r["config"] for r in rows}
    order = [by_trial[t] for t in sorted(ranking, key=ranking.get) if by_trial.get(t) in ranked]
    rho = rank_correlation(list(range(len(order))), [ranked[k] for k in order])["spearman"]
    return {
        "seed": seed,
        "winner": best["config"],
        "winner_all": ranked[best["config"]],
        "default_all": ranked.get(DEFAULT),
        "best": top,
        "best_all": ranked[top],
        "regret": regret,
        "spent_images": cost["spent_images"],
        "exhaustive_images": cost["exhaustive_images"],
        "fraction": cost["spent_images"] / cost["exhaustive_images"],
        "random_m": m,
        "configs": len(ranked),
        "random_regret": random_regret,
        "optuna": None if pick is None else dataclasses.asdict(pick),
        "optuna_regret": None if pick is None else 100 * (measured[top] - measured[pick.config]),
        "spearman": rho,
        "ranked": ranked,
        "measured": measured,
        "seconds": {"multi": multi, "all": tock - tick - multi, "optuna": optuna_seconds},
    }


def _print_row(row: dict[str, Any]) -> None:
    default = "–" if row["default_all"] is None else f"{100 * row['default_all']:.1f}"
    pick = row["optuna"]
    optuna = (
        "no trial fits"
        if pick is None
        else f"{pick['config']} (lr {pick['lr']:g}, {pick['completed']} done/{pick['pruned']} pruned, "
        f"{pick['spent_images']} im) regret {row['optuna_regret']:.1f}"
    )
    rho = "n/a" if row["spearman"] is None else f"{row['spearman']:+.2f}"
    mark = "≤" if row["fraction"] <= TARGET_FRACTION else ">"
    print(
        f"  seed {row['seed']}: winner {row['winner']} {100 * row['winner_all']:.1f}% | {DEFAULT} {default}% | "
        f"best {row['best']} {100 * row['best_all']:.1f}% | regret {row['regret']:.1f} | cost "
        f"{row['fraction']:.2f} ({mark} {TARGET_FRACTION}) | random m={row['random_m']}/{row['configs']} "
        f"regret {row['random_regret']:.1f} | optuna {optuna} | ρ {rho} | "
        f"{row['seconds']['multi']:.0f}+{row['seconds']['all']:.0f}+{row['seconds']['optuna']:.0f} s",
        flush=True,
    )


def _print_noise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    a, b = rows[0]["measured"], rows[1]["measured"]
    shared = sorted(set(a) & set(b))
    noise = statistics.fmean(abs(a[k] - b[k]) for k in shared) * 100
    rho = rank_correlation([-a[k] for k in shared], [b[k] for k in shared])["spearman"]
    spearman = "n/a" if rho is None else f"{rho:+.2f}"
    print(
        f"  seed noise over {len(shared)} configs (--all): mean |Δ accuracy| {noise:.1f} points, "
        f"seed-to-seed Spearman {spearman}",
        flush=True,
    )
    return {"noise": noise, "seed_spearman": rho}


def _print_evidence(evidence: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    ranks = [_ranks(row["ranked"]) for row in rows]
    n = len(rows[0]["ranked"])
    for config, probe in sorted(evidence.items(), key=lambda kv: ranks[0].get(kv[0], n + 1)):
        where = "/".join(str(r.get(config, "–")) for r in ranks)
        accuracy = "/".join(f"{100 * row['measured'].get(config, 0):.1f}" for row in rows)
        top_third = any(r.get(config, n + 1) <= n / 3 for r in ranks)
        verdict = probe["rejected"] or "kept"
        flag = " ← TOP THIRD REJECTED" if probe["rejected"] and top_third else ""
        print(
            f"    {config}: --all rank {where} of {n} ({accuracy} %); r {probe['step_loss_ratio']:.3f}, "
            f"variance ×{probe['variance_change']:.3g} over {probe['blocks']}, grad ×{probe['grad_ratio']:.3g}; "
            f"{verdict}{flag}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regimes", "--spaces", nargs="+", default=SUITE, help="regimes or space names")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--trials", type=int, default=None, help="cap on each space's search budget")
    parser.add_argument("--depth", type=int, default=None, help="override the trained ResNet depth")
    parser.add_argument("--quick", action="store_true", help="two small regimes with 4 configs (smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="write every number to this file")
    args = parser.parse_args()
    if args.quick:
        args.regimes, args.trials, args.seeds = QUICK["regimes"], QUICK["trials"], QUICK["seeds"]
    torch.set_num_threads(args.threads)
    quiet = Console(file=io.StringIO())
    report: dict[str, Any] = {}
    started_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.regimes:
            root = Path(tmp) / name
            root.mkdir()
            trials = args.trials if args.trials is not None else (STEEP_TRIALS if name == "steep" else None)
            space = _space(name, root, trials, args.depth)
            if args.threads != space.confirm.threads:
                space = space.with_confirm(dataclasses.replace(space.confirm, threads=args.threads))
            started = time.perf_counter()
            location = locate(space.name, root / "runs")
            prepare(space, location)
            optimize(
                WorkerTask(space, location, space.search.n_trials, None, space.search.seed), StopRequest()
            )
            searched = time.perf_counter() - started
            c = space.confirm
            print(
                f"\n{name}: {space.description}\n  {space.search.n_trials} trials probed in {searched:.0f} s; "
                f"confirm {c.model}-{c.depth} on {c.dataset}, batch {c.batch_size}, lr {c.lr:g} × "
                f"{list(c.lr_factors)}, rungs up to {c.epochs} epochs, eta {c.eta}, top_k {c.top_k}, explore "
                f"{c.explore}",
                flush=True,
            )
            rows = []
            for seed in args.seeds:
                rows.append(_seed_row(name, space, root, seed, quiet))
                _print_row(rows[-1])
            summary = _print_noise(rows) if len(rows) >= 2 else {}
            study = open_study(space.name, root / "runs")
            evidence = _evidence(study)
            _print_evidence(evidence, rows)
            report[name] = {"rows": rows, **summary, "evidence": evidence, "search_seconds": searched}
            if args.json:
                args.json.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nsuite: {len(args.regimes)} regimes in {time.perf_counter() - started_all:.0f} s", flush=True)


if __name__ == "__main__":
    main()
