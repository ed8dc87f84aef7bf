"""The report's HTML page: one file with its figures embedded as PNG data URIs, so it opens offline alone.

Every string from the study (configs, names, settings, the space file, the exported code) goes through
``html.escape``; nothing from the study is emitted as markup.
"""

from __future__ import annotations

import base64
import json
import time
from html import escape
from typing import TYPE_CHECKING, Any

import optuna

from .. import __version__
from ..search import OBJECTIVES, space_text

if TYPE_CHECKING:
    from . import Report

CAPTIONS = {
    "probe_curves": "Probe curves at initialisation over depth: the winner (thick), the baselines (dashed) and "
    "the best other candidates. A stable network keeps its activation variance and gradient norm level "
    "over depth; low similarity means samples stay distinguishable. Configs with identical curves (they tie at "
    "initialisation) share one line and one legend entry.",
    "pareto_front": "The objectives the search minimises, pairwise, for every stable candidate. Orange: the "
    "Pareto front (no other candidate is better on all of them); rings: confirmed by training (labelled with "
    "their rank; candidates on the same spot share a label); star: the winner.",
    "calibration": "Each probe quantity against the trained accuracy of the confirmed candidates, with Spearman "
    "ρ and Kendall τ (+1: the quantity ranks the candidates exactly as training does).",
    "training_curves": "Confirmation training: mean training loss and validation accuracy per epoch of every "
    "run (each rung, learning rate and seed; one-epoch runs are points), one colour per candidate, one line "
    "style per learning rate; thin: small-batch retrain; a cross: the run collapsed or diverged.",
}
TITLES = {
    "probe_curves": "Probe curves",
    "pareto_front": "Pareto front",
    "calibration": "Calibration",
    "training_curves": "Training curves",
}
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1280px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#666}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;border-radius:4px}
table{border-collapse:collapse;font-size:.92em;max-width:100%}td code{overflow-wrap:break-word}th,td{padding:.25em .7em;border-bottom:1px solid #eee}
th{text-align:left;background:#fafafa}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.92em}.missing{color:#a60}
"""


HEADERS = {"activation_growth": "growth", "similarity": "similarity", "grad_ratio": "grad ratio"}


def breakable(config: str) -> str:
    """A config string escaped for HTML, with line-break opportunities after its commas."""
    return escape(config).replace(",", ",<wbr>")


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.{digits}f}"


def _percent(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _table(headers: list[str], rows: list[list[tuple[str, bool]]]) -> str:
    """An HTML table; each cell is (already escaped text, numeric)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{text}</td>' if numeric else f"<td>{text}</td>" for text, numeric in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _accuracy(row: dict[str, Any]) -> str:
    flag = "diverged" if row.get("diverged") else "collapsed" if row.get("collapsed") else None
    return flag or _percent(row.get("accuracy"))


MARKS = (
    ("W", "winner", lambda row, winner: winner is not None and row["trial"] == winner),
    ("★", "Pareto front", lambda row, winner: bool(row.get("pareto"))),
    ("B", "baseline", lambda row, winner: bool(row.get("baseline"))),
    ("R", "rejected (cannot train)", lambda row, winner: bool(row.get("rejected"))),
)
"""The leaderboard's one-letter marks: (mark, legend, whether a row carries it given the winner's trial)."""


def _leaderboard(rows: list[dict[str, Any]], winner: int | None, limit: int = 25) -> str:
    """The first ``limit`` rows; the legend lists the marks the shown rows carry (``winner``: its trial)."""
    headers = [
        "#",
        "",
        "config",
        *(HEADERS.get(name, name) for name in OBJECTIVES),
        "score",
        "accuracy",
        "epochs",
        "trial",
    ]
    shown = rows[:limit]
    body = []
    for row in shown:
        marks = "".join(mark for mark, _, carries in MARKS if carries(row, winner))
        body.append(
            [
                (str(row["rank"]), True),
                (marks, False),
                (f"<code>{breakable(row['config'])}</code>", False),
                *((_number(row.get(name)), True) for name in OBJECTIVES),
                (_number(row.get("score")), True),
                (escape(_accuracy(row)), True),
                (_number(row.get("budget")), True),
                (str(row["trial"]), True),
            ]
        )
    legend = " · ".join(
        f"{mark} {escape(text)}"
        for mark, text, carries in MARKS
        if any(carries(row, winner) for row in shown)
    )
    more = (
        f"<p class=meta>{len(rows) - limit} more rows: <code>normsearch leaderboard</code>.</p>"
        if len(rows) > limit
        else ""
    )
    return _table(headers, body) + (f"<p class=meta>{legend}</p>" if legend else "") + more


def _winner(row: dict[str, Any] | None, code: str | None, report: Report) -> str:
    if row is None:
        return "<p class=missing>No completed trial yet.</p>"
    record = row.get("confirm") or {}
    numbers = [
        ("rank", str(row["rank"])),
        ("trial", str(row["trial"])),
        ("score", _number(row.get("score"))),
        *((name, _number(row.get(name))) for name in OBJECTIVES),
        ("accuracy (best epoch, mean over seeds)", _accuracy(row)),
        ("final accuracy", _percent(record.get("final_accuracy"))),
        ("budget (epochs)", _number(row.get("budget"))),
        ("learning rate", _number(row.get("lr"))),
        ("seeds trained", str(len(record.get("seeds", [])))),
    ]
    table = _table(["quantity", "value"], [[(escape(k), False), (escape(v), True)] for k, v in numbers])
    parts = [f"<p>Config <code>{breakable(row['config'])}</code></p>", table]
    if code is not None and report.code is not None:
        parts.append(
            f'<p>Exported as a standalone PyTorch module: <a href="{escape(report.code.name)}">'
            f"{escape(report.code.name)}</a></p><details><summary>show the code</summary>"
            f"<pre>{escape(code)}</pre></details>"
        )
    return "".join(parts)


def _figure(key: str, report: Report) -> str:
    if key in report.missing:
        return f"<h2>{escape(TITLES[key])}</h2><p class=missing>Not drawn: {escape(report.missing[key])}.</p>"
    files = report.files[key]
    data = base64.b64encode(files["png"].read_bytes()).decode("ascii")
    links = " · ".join(f'<a href="{escape(path.name)}">{fmt.upper()}</a>' for fmt, path in files.items())
    return (
        f'<h2>{escape(TITLES[key])}</h2><figure><img alt="{escape(TITLES[key])}" '
        f'src="data:image/png;base64,{data}"><figcaption>{escape(CAPTIONS[key])} ({links})</figcaption>'
        "</figure>"
    )


def _calibration(cal: dict[str, Any]) -> str:
    rows = [
        [
            (escape(name), False),
            *(
                (_number(c.get(k), 2) if c.get(k) is not None else "n/a", True)
                for k in ("spearman", "kendall")
            ),
            (str(c.get("n")), True),
        ]
        for name, c in cal.items()
        if isinstance(c, dict)
    ]
    return _table(["probe quantity", "Spearman ρ", "Kendall τ", "n"], rows) if rows else ""


def page(
    study: optuna.Study,
    doc: dict[str, Any],
    best: dict[str, Any] | None,
    report: Report,
    code: str | None,
    cal: dict[str, Any],
) -> str:
    """The whole page (see the module docstring)."""
    attrs = study.user_attrs
    trials = ", ".join(f"{n} {state}" for state, n in doc["trials"].items() if state != "total")
    settings = {key: attrs.get(key) for key in ("probe", "search", "weights", "confirm") if key in attrs}
    space = attrs.get("space") or {}
    text = space_text(study)
    sections = [
        f"<h1>normsearch report: {escape(study.study_name)}</h1>",
        (
            f"<p class=meta>space {escape(str(doc.get('space')))} · {escape(trials)} trials · "
            f"{len(doc['rows'])} distinct configs · normsearch {escape(__version__)} · "
            f"{escape(time.strftime('%Y-%m-%d %H:%M'))}</p>"
        ),
        "<h2>Winner</h2>",
        _winner(best, code, report),
        *(_figure(key, report) for key in TITLES),
    ]
    if cal:
        sections += [
            f"<h2>Calibration numbers (at {escape(str(cal.get('budget')))} epoch(s))</h2>",
            _calibration(cal),
        ]
    sections += [
        "<h2>Leaderboard</h2>",
        _leaderboard(doc["rows"], None if best is None else best["trial"]),
        "<h2>Settings</h2>",
        f"<pre>{escape(json.dumps(settings, indent=2))}</pre>",
    ]
    if text:
        sections += [
            f"<h2>Space file ({escape(str(space.get('path', '')))})</h2>",
            f"<pre>{escape(text)}</pre>",
        ]
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>normsearch report: {escape(study.study_name)}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


__all__ = ["page"]
