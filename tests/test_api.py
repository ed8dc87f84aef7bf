"""The Python API: the README's example runs as written; Study reads back, ranks and exports; the pipeline's
stages report through a Reporter and resume after an interruption; workers and in-memory models."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import normsearch
import normsearch.sources
import normsearch.space
from normsearch import pipeline
from normsearch.data import digits_tensors
from normsearch.norm import UnifiedNorm, build_norm
from normsearch.search import budget_used
from normsearch.storage import locate, worker_id
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


def tiny_net(norm_layer, num_classes: int) -> torch.nn.Module:
    """A module-level builder: importable as ``tests.test_api:tiny_net``, so worker processes can build it."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        norm_layer(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, num_classes),
    )


TINY = """
space:
  partition: {choices: [batch, layer, instance]}
probe: {batch_size: 16, seeds: 1}
search: {n_trials: 3, sampler: brute_force, seed: 0, baselines: false}
"""


def _tiny_space(tmp_path: Path) -> normsearch.space.SearchSpace:
    (tmp_path / "tiny.yaml").write_text(TINY)
    space = normsearch.space.load_space(str(tmp_path / "tiny.yaml"))
    return pipeline.with_overrides(space, model=normsearch.sources.register_model(tiny_net))


def test_in_memory_models_and_data_with_workers_are_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """Workers are spawned processes: a model or dataset registered in this one does not exist there."""
    train, val = (TensorDataset(*digits_tensors(split)) for split in ("train", "val"))
    with pytest.raises(
        ValueError, match=r"^workers=2: model 'python:.*' exists in this process only.*importable"
    ):
        normsearch.run(
            "groups",
            model=lambda norm_layer, num_classes: tiny_net(norm_layer, num_classes),
            workers=2,
            runs_dir=tmp_path,
            confirm=False,
        )
    with pytest.raises(ValueError, match=r"^workers=2: data 'python:data-[0-9a-f]+' .*'FILE.py:FUNC'"):
        normsearch.run("groups", data=(train, val), workers=2, runs_dir=tmp_path, confirm=False)
    with pytest.raises(ValueError, match="workers must be a whole number >= 1, got 0"):
        normsearch.run("groups", workers=0, runs_dir=tmp_path, confirm=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_importable_model_is_probed_by_worker_processes(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    study = normsearch.run(
        tmp_path / "tiny.yaml", model=tiny_net, workers=2, runs_dir=tmp_path, confirm=False
    )
    trials = study.optuna.get_trials()
    assert study.optuna.user_attrs["probe"]["model"] == "tests.test_api:tiny_net"
    assert sorted(t.user_attrs["config"] for t in trials if t.state.name == "COMPLETE") == ["bn", "in", "ln"]
    assert all(t.user_attrs["worker"] != worker_id() for t in trials)  # probed in the workers, not here


class Recorder(pipeline.Reporter):
    """Records the pipeline's hooks; ``stop_after``: a Ctrl-C (KeyboardInterrupt) after that many trials."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.events: list[tuple] = []
        self.stop_after = stop_after

    def prepared(self, prepared) -> None:
        self.events.append(("prepared", prepared.created))

    @contextlib.contextmanager
    def searching(self, study, budget: int, remaining: int):
        self.events.append(("searching", budget, remaining))

        def update() -> None:
            done = budget_used(study, include_running=False)
            self.events.append(("update", done))
            if done == self.stop_after:
                raise KeyboardInterrupt

        yield update

    def searched(self, study, seconds: float) -> None:
        self.events.append(("searched", budget_used(study), seconds > 0))


def test_the_pipeline_reports_each_stage_and_an_interrupted_search_resumes(tmp_path: Path) -> None:
    space = _tiny_space(tmp_path)
    location = locate("tiny", tmp_path, None)
    stopped = Recorder(stop_after=2)
    with pytest.raises(pipeline.Interrupted) as interrupted:
        pipeline.search_and_confirm(space, location, confirm=False, reporter=stopped)
    assert interrupted.value.stage == "search" and budget_used(interrupted.value.study) == 2
    assert stopped.events == [("prepared", True), ("searching", 3, 3), ("update", 1), ("update", 2)]
    resumed = Recorder()
    study = pipeline.search_and_confirm(space, location, confirm=False, reporter=resumed)
    assert resumed.events == [
        ("prepared", False),
        ("searching", 3, 1),
        ("update", 3),
        ("update", 3),
        ("searched", 3, True),
    ]
    assert sorted(t.user_attrs["config"] for t in study.get_trials()) == ["bn", "in", "ln"]
