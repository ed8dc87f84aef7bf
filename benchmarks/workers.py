"""Search throughput with 1, 2 and 4 local worker processes on one study, on PostgreSQL and on the journal.

Each cell is a fresh study searched to ``--n-trials`` by N spawned workers (the code path of ``normsearch run
--workers N``, which is also that of N machines on one storage). Throughput = trials / (last trial's end −
first trial's start), read from the trials' own timestamps, so process start-up (importing torch) is left
out; the speed-up is against 1 worker on the same storage, measured in the same run. The default space is
continuous (no repeated configs: every trial probes) with small probes, so storage and claim overheads
show; pass ``--space`` for a real one. With C cores the speed-up is bounded by about C.

PostgreSQL: a private server (tests/pg_server.py, the pgserver wheel of the test extra), or ``--url``.

Usage: ``python benchmarks/workers.py [--n-trials 48] [--workers 1 2 4] [--space FILE] [--url URL]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/pg_server.py

from normsearch.search import StopRequest, WorkerTask, counts_toward_budget, prepare, run_workers
from normsearch.space import load_space, parse_space
from normsearch.storage import locate

SPACE = """\
space:
  partition: {choices: [batch, layer, instance, group]}
  group_size: {when: {partition: group}, choices: [2, 4, 8]}
  eps: {low: 1.0e-6, high: 1.0e-2, log: true}
probe: {depth: 8, width: 16, batch_size: 32, seeds: 1, resolution: 8}
search: {baselines: false}
"""


def throughput(study: optuna.Study) -> tuple[int, float, int]:
    """(counted trials, trials per second between the first start and the last end, configs probed twice)."""
    trials = [t for t in study.get_trials(deepcopy=False) if counts_toward_budget(t)]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    probed = [
        t.user_attrs["config"]
        for t in trials
        if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]
    return len(trials), len(trials) / span, len(probed) - len(set(probed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--space", default=None, help="space file or shipped name (default: a small continuous one)"
    )
    parser.add_argument(
        "--url", default=None, help="PostgreSQL URL of an empty database (default: a private server)"
    )
    args = parser.parse_args()
    space = load_space(args.space) if args.space else parse_space(SPACE, "<workers.py>", "bench", "")
    space = dataclasses.replace(space, search=dataclasses.replace(space.search, n_trials=args.n_trials))
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    server = None
    if args.url is None:
        from tests.pg_server import PostgresServer

        server = PostgresServer()
    print(
        f"{args.n_trials} trials per cell, {os.cpu_count()} CPUs; space {space.name}, probe {space.probe.model}-"
        f"{space.probe.depth} width {space.probe.width} at {space.probe.resolution}px"
    )
    print(f"{'storage':<12}{'workers':>8}{'trials':>8}{'trials/s':>10}{'speed-up':>10}{'probed twice':>14}")
    try:
        with tempfile.TemporaryDirectory() as runs:
            for kind in ("journal", "postgresql"):
                base = None
                for workers in args.workers:
                    name = f"{kind}-{workers}"
                    storage = None
                    if kind == "postgresql":
                        storage = server.database() if server else args.url
                    location = locate(name, runs, storage)
                    study = prepare(space, location).study
                    task = WorkerTask(space, location, args.n_trials, None, space.search.seed)
                    codes = run_workers([task] * workers, StopRequest(), poll=lambda: None)
                    assert codes == [0] * workers, codes
                    count, rate, twice = throughput(study)
                    base = base or rate
                    print(f"{kind:<12}{workers:>8}{count:>8}{rate:>10.2f}{rate / base:>10.2f}{twice:>14}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
