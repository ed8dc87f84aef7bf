"""What the search loop costs on top of the probes it runs.

Runs the shipped groups.yaml search (its probe settings, TPE, a fresh journal in a temporary directory) in
this process, then re-probes the same distinct configs back to back outside Optuna, as references measured
in the same run:

- **loop overhead** = (search wall − Σ trial probe seconds) / trials: sampler, journal storage, dedupe and
  records per trial. Target: ≤ 10 % of the median probe time (negligible next to the probes).
- **search / direct** = search wall / wall of probing each distinct config once with one runner. Below 1
  when the sampler repeats configs (repeats reuse the first result); target ≤ 1.10.

Both sides run after the same warm-up probe, so torch's first-call costs land on neither.

Usage: ``python benchmarks/search_speed.py [--space groups] [--n-trials 60] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import torch

from normsearch.probes import ProbeRunner
from normsearch.search import StopRequest, WorkerTask, optimize, prepare
from normsearch.space import load_space
from normsearch.storage import locate

OVERHEAD_TARGET = 0.10
SEARCH_TARGET = 1.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="groups")
    parser.add_argument("--n-trials", type=int, default=None, help="default: the space's budget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every measurement")
    args = parser.parse_args()
    space = load_space(args.space)
    search = (
        space.search if args.n_trials is None else dataclasses.replace(space.search, n_trials=args.n_trials)
    )
    space = dataclasses.replace(space, search=search)
    torch.set_num_threads(args.threads)
    ProbeRunner(space.probe).run("bn")  # warm-up: torch's one-time costs

    with tempfile.TemporaryDirectory() as runs:
        location = locate("bench", runs)
        start = time.perf_counter()
        study = prepare(space, location).study
        optimize(WorkerTask(space, location, search.n_trials, None, search.seed, args.threads), StopRequest())
        search_wall = time.perf_counter() - start
        trials = study.get_trials(deepcopy=False)
    probe_seconds = [t.user_attrs["seconds"] for t in trials if t.user_attrs.get("seconds")]
    configs = list(dict.fromkeys(t.user_attrs["config"] for t in trials if "probe" in t.user_attrs))

    runner = ProbeRunner(space.probe)
    start = time.perf_counter()
    for config in configs:
        runner.run(config)
    direct = time.perf_counter() - start

    overhead = (search_wall - sum(probe_seconds)) / len(trials)
    median_probe = statistics.median(probe_seconds)
    p = space.probe
    print(
        f"space {space.name}: {len(trials)} trials, {len(configs)} distinct configs; probe {p.model}-{p.depth} "
        f"width {p.width} batch {p.batch_size} {p.resolution}px {p.seeds} seeds; {args.threads} thread(s)"
    )
    print(f"search wall {search_wall:6.2f} s   direct probing of the same configs {direct:6.2f} s")
    ratio = overhead / median_probe
    print(
        f"loop overhead per trial {overhead * 1e3:6.1f} ms = {ratio:.1%} of the median probe "
        f"({median_probe * 1e3:.0f} ms; target <= {OVERHEAD_TARGET:.0%}) {'OK' if ratio <= OVERHEAD_TARGET else 'OVER'}"
    )
    whole = search_wall / direct
    print(
        f"ratio search / direct: {whole:.2f} (target <= {SEARCH_TARGET}) {'OK' if whole <= SEARCH_TARGET else 'OVER'}"
    )


if __name__ == "__main__":
    main()
