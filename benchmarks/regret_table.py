"""The markdown table of docs/confirm.md ("Regime suite") from benchmarks/regret.py's ``--json`` files.

Per regime: each column shows seed 0 / seed 1; accuracies are ``confirm --all``'s (%), regrets in points,
recomputed from the measured accuracies (a diverged run counts with what it reached; files written before
regret.py did so ranked diverged runs at -1).
Usage: ``python benchmarks/regret_table.py FILE.json [FILE.json ...]``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from baselines import random_draw_expected_best

COLUMNS = (
    "regime | winner | bn | best | regret | cost | random regret (m/N) | Optuna pick, regret | "
    "seed noise | ranking ρ"
)


def _pair(rows: list[dict], text) -> str:
    return " / ".join(text(row) for row in rows)


def _previous_limits(probe: dict) -> bool:
    """Whether normsearch's limits before issue 20 (variance ×B either way, r > 1.05) rejected the probe."""
    change = abs(math.log(max(probe["variance_change"], 1e-300)))
    return change > math.log(probe["blocks"]) or probe["step_loss_ratio"] > 1.05


def _ranks_rejected_top_third(regime: dict, rejected=lambda probe: bool(probe["rejected"])) -> list[str]:
    """Configs rejected (by ``rejected``; default: the stored verdict) although in the top third of some
    seed's ``--all`` ranking, with that rank."""
    out = []
    for config, probe in regime["evidence"].items():
        for row in regime["rows"]:
            ranked = row["ranked"]
            rank = 1 + sum(v > ranked.get(config, -math.inf) for v in ranked.values())
            if rejected(probe) and config in ranked and rank <= len(ranked) / 3:
                out.append(f"{config} (rank {rank})")
                break
    return out


def _regrets(row: dict) -> dict:
    """The row's regrets (points) on its measured ``--all`` accuracies."""
    measured, top = row["measured"], max(row["ranked"], key=row["ranked"].get)
    best = measured[top]
    pick = row["optuna"]
    return {
        **row,
        "regret": 100 * (best - measured[row["winner"]]),
        "random_regret": 100 * (best - random_draw_expected_best(list(measured.values()), row["random_m"])),
        "optuna_regret": None if pick is None else 100 * (best - measured[pick["config"]]),
    }


def table(reports: list[dict]) -> str:
    lines = [f"| {COLUMNS} |", "|" + "---|" * (COLUMNS.count("|") + 1)]
    for report in reports:
        for name, regime in report.items():
            rows = [_regrets(row) for row in regime["rows"]]
            noise = regime.get("noise")
            lines.append(
                "| "
                + " | ".join(
                    [
                        name,
                        _pair(rows, lambda r: r["winner"]),
                        _pair(
                            rows,
                            lambda r: "–" if r["default_all"] is None else f"{100 * r['default_all']:.1f}",
                        ),
                        _pair(rows, lambda r: f"{r['best']} {100 * r['best_all']:.1f}"),
                        _pair(rows, lambda r: f"{r['regret']:.1f}"),
                        _pair(rows, lambda r: f"{r['fraction']:.2f}"),
                        _pair(rows, lambda r: f"{r['random_regret']:.1f} ({r['random_m']}/{r['configs']})"),
                        _pair(
                            rows,
                            lambda r: (
                                "–"
                                if r["optuna"] is None
                                else f"{r['optuna']['config']} {r['optuna_regret']:.1f}"
                            ),
                        ),
                        "–" if noise is None else f"{noise:.1f}",
                        _pair(rows, lambda r: "n/a" if r["spearman"] is None else f"{r['spearman']:+.2f}"),
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    reports = [json.loads(Path(path).read_text()) for path in sys.argv[1:]]
    print(table(reports))
    for report in reports:
        for name, regime in report.items():
            now = ", ".join(_ranks_rejected_top_third(regime)) or "none"
            before = ", ".join(_ranks_rejected_top_third(regime, _previous_limits)) or "none"
            print(f"{name}: top-third configs rejected: {now}; by the previous limits: {before}")


if __name__ == "__main__":
    main()
