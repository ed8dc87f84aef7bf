"""A study made by ``normsearch run`` as optuna-dashboard (the real app, through its WSGI API) sees it: named
objectives, the ``unstable`` and ``rejected`` constraints of each trial, and study attributes without the space file's text."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import optuna_dashboard
import pytest
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.search import METRIC_NAMES, space_text
from normsearch.storage import open_study

pytestmark = pytest.mark.usefixtures("one_thread")


def _get(wsgi: Any, path: str) -> Any:
    status: list[str] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    body = b"".join(wsgi(environ, lambda code, headers, exc=None: status.append(code)))
    assert status[0].startswith("200"), status
    return json.loads(body)


def test_dashboard_shows_metric_names_and_constraints(tmp_path: Path) -> None:
    # The paper's CNN halves 16 px four times: instance statistics of its 1×1 maps collapse (unstable).
    space = tmp_path / "u.yaml"
    space.write_text(
        "space:\n  partition: {choices: [instance, batch]}\n"
        "probe: {model: cnn, depth: 5, width: 4, batch_size: 4, seeds: 1}\n"
        "search: {n_trials: 2, sampler: brute_force}\n"
    )
    result = CliRunner().invoke(
        app, ["run", "--space", str(space), "--runs-dir", str(tmp_path / "runs"), "--no-confirm"]
    )
    assert result.exit_code == 0, result.output
    study = open_study("u", str(tmp_path / "runs"))
    wsgi = optuna_dashboard.wsgi(study._storage)

    summaries = _get(wsgi, "/api/studies")["study_summaries"]
    summary = next(s for s in summaries if s["study_name"] == "u")
    attrs = json.dumps(summary["user_attrs"])
    assert space_text(study) == space.read_text() and "partition: {choices" not in attrs

    detail = _get(wsgi, f"/api/studies/{summary['study_id']}")
    assert detail["objective_names"] == METRIC_NAMES
    config = {
        t["number"]: next(a["value"] for a in t["user_attrs"] if a["key"] == "config")
        for t in detail["trials"]
    }
    constraints = {config[t["number"]].strip('"'): t["constraints"] for t in detail["trials"]}
    assert constraints == {"in": [1.0, 1.0], "bn": [0.0, 0.0]}  # [unstable, rejected]
