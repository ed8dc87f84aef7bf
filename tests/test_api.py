"""The Python API: the README's example runs as written; Study reads back, ranks and exports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import normsearch
from normsearch.norm import UnifiedNorm, build_norm
from tests.test_export import load

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    """The first python block under the README's "Python API" heading."""
    text = README.read_text()
    section = text[text.index("(Python API)") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.slow
def test_readme_api_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    study, winner = namespace["study"], namespace["study"].winner
    rows = study.leaderboard()
    assert isinstance(winner, normsearch.NormConfig) and rows[0]["config"] == winner.spec()
    assert len([r for r in rows if r["state"] == "COMPLETE"]) >= 8
    assert any(r.get("accuracy") is not None for r in rows)  # the confirmation ran
    assert (tmp_path / "runs" / "groups").is_dir()
    exported = load((tmp_path / "my_norm.py").read_text(), "readme")
    (cls,) = [v for k, v in exported.items() if isinstance(v, type) and issubclass(v, torch.nn.Module)]
    ours, theirs = build_norm(winner, 32), cls(32)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 32, 5, 5)
    torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)
    # the study reads back from disk as the CLI leaves it
    again = normsearch.Study.open("groups", runs_dir=tmp_path / "runs")
    assert again.winner == winner and again.export(rank=2) != again.export(rank=1)
    assert study.optuna.user_attrs["probe"]["model"] == "python:my_net"  # named in the stored settings
    assert study.optuna.user_attrs["probe"]["data"].startswith("python:data-")
    assert any(
        isinstance(m, UnifiedNorm) for m in namespace["my_net"](normsearch.norm_layer(winner), 10).modules()
    )


def test_search_refuses_bad_input_before_running(tmp_path: Path) -> None:
    with pytest.raises(normsearch.settings.SettingsError, match="^confirm.model: unknown model 'mlp'"):
        normsearch.run("groups", model="mlp", runs_dir=tmp_path)
    with pytest.raises(ValueError, match=r"ranks 1 trial\(s\); no rank 5"):
        normsearch.run("groups", n_trials=1, runs_dir=tmp_path, confirm=False, study="empty").export(rank=5)
