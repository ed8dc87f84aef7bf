"""A space's ``network:`` section: a network's own options searched beside the layer's. Options come from the
network (resnet's ``skipinit``, a user ``FUNC``'s keyword-only arguments), are validated at load, and travel
with the candidate (``LAYER|name=value,...``) through the trial's params, the repeats check, the probes, the
confirmation units, the leaderboard rows, the export's provenance; studies written before them still read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from normsearch.candidate import CandidateConfig
from normsearch.cli import app
from normsearch.confirm import ConfirmSettings
from normsearch.confirm.units import companion
from normsearch.leaderboard import build_rows
from normsearch.models import build_model, network_options
from normsearch.norm import parse_spec
from normsearch.probes import ProbeRunner
from normsearch.probes.settings import ProbeSettings
from normsearch.records import TrialRecord, check_schema
from normsearch.search import DIRECTIONS, Objective
from normsearch.space import SpaceError, parse_space
from normsearch.storage import open_study
from normsearch.train import train

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")

PROBE = "probe: {depth: 8, width: 8, batch_size: 16, seeds: 1, resolution: 8}\n"
SKIPINIT = (
    "space:\n  preset: {choices: [bn, ln]}\n"
    "network:\n  skipinit: {choices: [true, false]}\n"
    + PROBE
    + "search: {n_trials: 4, sampler: brute_force}\n"
    "confirm: {depth: 8, width: 8, epochs: 1, steps: 2, batch_size: 32, device: cpu, lr_factors: [1]}\n"
)
CONFIGS = {"bn|skipinit=true", "bn|skipinit=false", "ln|skipinit=true", "ln|skipinit=false"}

NETS = '''
from typing import Literal

import torch


def build(norm_layer, num_classes, depth=1, *, placement: Literal["pre", "post"] = "pre", width: int = 8):
    """conv -> (norm -> relu | relu -> norm) -> mean -> linear: placement moves the norm."""
    layers = [torch.nn.Conv2d(1, width, 3, padding=1)]
    for _ in range(depth):
        pair = [norm_layer(width), torch.nn.ReLU()]
        layers += pair if placement == "pre" else pair[::-1]
        layers.append(torch.nn.Conv2d(width, width, 3, padding=1))
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(width, num_classes)]
    return torch.nn.Sequential(*layers)
'''


def _space(text: str, path: str = "net.yaml"):
    return parse_space(text, path, "net", path)


def _problems(text: str) -> list[str]:
    with pytest.raises(SpaceError) as info:
        _space(text)
    return info.value.problems


# ---------------------------------------------------------------------------------------------------------
# the candidate string and the options each network takes


@pytest.mark.parametrize(
    "network",
    [{}, {"skipinit": True}, {"placement": "post", "qk_norm": False}, {"alpha": 0.5, "depth": 3}],
)
def test_candidate_strings_round_trip(network: dict) -> None:
    candidate = CandidateConfig.of("gn:groups=8", network)
    text = candidate.spec()
    assert CandidateConfig.parse(text) == candidate
    assert ("|" in text) == bool(network) and text.startswith(parse_spec("gn:groups=8").spec())
    assert CandidateConfig.parse(text).options == network


def test_candidate_strings_are_canonical_and_malformed_ones_say_so() -> None:
    assert CandidateConfig.of("pn", {"qk_norm": True, "placement": "post"}).spec() == (
        "pn|placement=post,qk_norm=true"
    )
    for bad in ("bn|skipinit", "bn|=1", "bn|a=1,a=2", "bn|a="):
        with pytest.raises(ValueError, match="network options must be name=value"):
            CandidateConfig.parse(bad)


def test_each_network_declares_its_options(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(NETS)
    assert [o.name for o in network_options("resnet").options] == ["skipinit"]
    assert network_options("cnn").options == ()
    user = network_options(f"{tmp_path}/nets.py:build")
    assert [(o.name, o.kind, o.default, o.choices) for o in user.options] == [
        ("placement", str, "pre", ("pre", "post")),
        ("width", int, 8, ()),
    ]
    assert "depth" in user.other_arguments
    assert "torchvision builders take no network options for now" in network_options(
        "torchvision:resnet18"
    ).unknown("width")


def test_the_built_network_takes_the_options(tmp_path: Path) -> None:
    with_gain = build_model("resnet", "bn", depth=8, width=4, network={"skipinit": True})
    assert all(block.skip_gain is not None for block in with_gain.blocks)
    assert all(block.skip_gain is None for block in build_model("resnet", "bn", depth=8, width=4).blocks)
    with pytest.raises(
        ValueError, match="network option skipinit: unknown network option; cnn takes no network options"
    ):
        build_model("cnn", "bn", depth=2, width=4, network={"skipinit": True})
    (tmp_path / "nets.py").write_text(NETS)
    post = build_model(f"{tmp_path}/nets.py:build", "bn", depth=0, width=1, network={"placement": "post"})
    assert isinstance(post[1], torch.nn.ReLU)
    with pytest.raises(
        ValueError, match="network option placement of .* must be one of pre, post, got 'mid'"
    ):
        build_model(f"{tmp_path}/nets.py:build", "bn", depth=0, width=1, network={"placement": "mid"})


# ---------------------------------------------------------------------------------------------------------
# the space section


def test_network_entries_take_the_space_forms_and_conditions_across_sections() -> None:
    space = _space(
        "network:\n  skipinit: {choices: [true, false]}\n"
        "space:\n"
        "  preset: [{value: bn, when: {skipinit: false}}, {choices: [ln, gn]}]\n" + PROBE
    )
    points = {space.candidate(options).spec(): params for params, options in space.grid()}
    assert points == {
        "bn|skipinit=false": {"skipinit": False},
        "ln|skipinit=true": {"skipinit": True, "preset": "ln"},
        "gn|skipinit=true": {"skipinit": True, "preset": "gn"},
    }
    assert space.size() == (3, 3)
    # the known layers are enqueued at the network's defaults (resnet: skipinit false)
    assert space.params_for(parse_spec("bn")) == {"skipinit": False}
    assert space.params_for(CandidateConfig.of("ln", {"skipinit": True})) == {
        "skipinit": True,
        "preset": "ln",
    }
    assert space.params_for(CandidateConfig.of("bn", {"skipinit": True})) is None
    conditional = _space(
        "space:\n  preset: {choices: [bn, ln]}\n"
        "network:\n  skipinit: {value: true, when: {preset: ln}}\n" + PROBE
    )
    assert {conditional.candidate(o).spec() for _, o in conditional.grid()} == {"bn", "ln|skipinit=true"}


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("  skipinit: {choices: [true, 1]}\n", "network.skipinit.choices[1]: must be true or false, got 1"),
        (
            "  depth: {choices: [8, 14]}\n",
            "network.depth: unknown network option of resnet; allowed: skipinit",
        ),
        (
            "  eps: 0.1\n",
            "network.eps: eps is a layer option (the space section's): a network option of that name cannot",
        ),
        (
            "  skipinit: {low: 0, high: 1}\n",
            "network.skipinit: low/high ranges apply only to numeric options",
        ),
        ("  skipinit: {value: true, when: {act: relu}}\n", "network.skipinit.when.act: must name an option"),
    ],
)
def test_bad_network_entries_are_one_line_each(network: str, expected: str) -> None:
    problems = _problems("space:\n  preset: {choices: [bn, ln]}\nnetwork:\n" + network + PROBE)
    assert len(problems) == 1 and problems[0].startswith(f"net.yaml: {expected}"), problems


def test_a_user_function_is_checked_against_its_keyword_only_arguments(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(NETS)
    model = f"{tmp_path}/nets.py:build"
    head = f"space:\n  preset: {{choices: [bn, ln]}}\nconfirm: {{model: '{model}'}}\nnetwork:\n"
    assert _problems(head + "  placement: {choices: [pre, side]}\n") == [
        "net.yaml: network.placement.choices[1]: must be one of pre, post, got 'side'"
    ]
    (not_kw,) = _problems(head + "  depth: {choices: [1, 2]}\n")
    assert not_kw.startswith(f"net.yaml: network.depth: depth is not a keyword-only argument of {model}")
    assert not_kw.endswith("its keyword-only arguments: placement, width")
    assert _problems(head + "  heads: 2\n") == [
        f"net.yaml: network.heads: unknown network option of {model}; allowed: placement, width"
    ]
    # the CLI: one error line, exit 2, nothing written
    (tmp_path / "bad.yaml").write_text(head + "  placement: {choices: [pre, side]}\n")
    result = runner.invoke(
        app, ["run", "--space", str(tmp_path / "bad.yaml"), "--runs-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'bad.yaml'}: network.placement.choices[1]: must be one of pre, post, got 'side'"
    ]
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------
# probes, repeats, training


def test_the_probes_build_the_network_with_the_options() -> None:
    probe = ProbeRunner(ProbeSettings(depth=8, width=8, batch_size=16, seeds=1, resolution=8))
    network = probe.network(CandidateConfig.of("bn", {"skipinit": True}), 0)
    assert all(block.skip_gain is not None for block in network.blocks)
    on, off = probe.run("bn|skipinit=true"), probe.run("bn|skipinit=false")
    assert on.spec == "bn|skipinit=true" and off.spec == "bn|skipinit=false"
    assert on.activation_growth != off.activation_growth


def test_a_repeat_reuses_its_scores_and_other_network_options_are_a_new_candidate(tmp_path: Path) -> None:
    space = _space(SKIPINIT)
    study = optuna.create_study(directions=DIRECTIONS)
    for params in (
        {"preset": "bn", "skipinit": True},
        {"preset": "bn", "skipinit": True},
        {"preset": "bn", "skipinit": False},
    ):
        study.enqueue_trial(params)
    study.optimize(Objective(space), n_trials=3)
    first, repeat, other = map(TrialRecord.of, study.trials)
    assert (first.config, repeat.config, other.config) == (
        "bn|skipinit=true",
        "bn|skipinit=true",
        "bn|skipinit=false",
    )
    assert repeat.duplicate_of == 0 and other.duplicate_of is None
    assert repeat.probe == first.probe and other.probe != first.probe
    assert study.trials[2].params == {"preset": "bn", "skipinit": False}


def test_training_builds_the_network_with_the_options() -> None:
    settings = ConfirmSettings(depth=8, width=8, epochs=1, steps=1, batch_size=32, device="cpu")
    on = train("bn|skipinit=true", settings, seed=0)
    off = train(CandidateConfig.of("bn", {"skipinit": False}), settings, seed=0)
    assert on.spec == "bn|skipinit=true" and off.spec == "bn|skipinit=false"
    assert on.train_loss != off.train_loss


# ---------------------------------------------------------------------------------------------------------
# end to end: search, confirm --all, leaderboard --json, export


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("network")
    (root / "skipinit.yaml").write_text(SKIPINIT)
    runs = str(root / "runs")
    result = runner.invoke(
        app, ["run", "--space", str(root / "skipinit.yaml"), "--runs-dir", runs, "--no-confirm"]
    )
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["confirm", "skipinit", "--runs-dir", runs, "--all"])
    assert result.exit_code == 0, result.stderr
    return root / "runs"


def test_a_network_option_is_searched_and_confirmed_end_to_end(searched: Path) -> None:
    study = open_study("skipinit", runs_dir=str(searched))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert {t.user_attrs["config"] for t in complete} == CONFIGS
    assert all(t.params["skipinit"] == ("skipinit=true" in t.user_attrs["config"]) for t in complete)
    baselines = {t.user_attrs["config"] for t in complete if t.user_attrs.get("baseline")}
    assert baselines == {"bn|skipinit=false", "ln|skipinit=false"}  # at resnet's default
    units = companion(study).get_trials(states=(TrialState.COMPLETE,))
    assert {u.user_attrs["config"] for u in units} == CONFIGS  # one unit per layer x network options
    assert all(f"|{u.user_attrs['config']}|" in u.user_attrs["key"] for u in units)

    board = json.loads(
        runner.invoke(app, ["leaderboard", "skipinit", "--runs-dir", str(searched), "--json"]).stdout
    )
    assert {row["config"] for row in board["rows"]} == CONFIGS
    for row in board["rows"]:
        assert row["network"] == {"skipinit": row["config"].endswith("true")}
        assert "accuracy" in row
    assert board["winner"]["network"] == CandidateConfig.parse(board["winner"]["config"]).options

    exported = runner.invoke(app, ["export", "skipinit", "--runs-dir", str(searched)])
    assert exported.exit_code == 0, exported.stderr
    winner = board["rows"][0]
    value = "true" if winner["network"]["skipinit"] else "false"
    assert f"    Network options: skipinit={value}.\n    Scored and trained in a network" in exported.stdout
    (searched.parent / "winner.py").write_text(exported.stdout)
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    for command in (["check", "--isolated", "winner.py"], ["format", "--isolated", "--check", "winner.py"]):
        checked = subprocess.run([ruff, *command], cwd=searched.parent, capture_output=True, check=False)
        assert checked.returncode == 0, checked.stdout


def test_a_user_function_keyword_only_placement_is_searched(tmp_path: Path) -> None:
    (tmp_path / "nets.py").write_text(NETS)
    (tmp_path / "placement.yaml").write_text(
        "space:\n  preset: {choices: [bn, ln]}\n"
        "network:\n  placement: {choices: [pre, post]}\n"
        "probe: {batch_size: 16, seeds: 1}\n"
        "search: {n_trials: 4, sampler: brute_force, baselines: false}\n"
        f"confirm: {{model: '{tmp_path}/nets.py:build'}}\n"
    )
    runs = str(tmp_path / "runs")
    result = runner.invoke(
        app, ["run", "--space", str(tmp_path / "placement.yaml"), "--runs-dir", runs, "--no-confirm"]
    )
    assert result.exit_code == 0, result.stderr
    rows = build_rows(open_study("placement", runs_dir=runs))
    by_config = {row["config"]: row for row in rows}
    assert set(by_config) == {f"{p}|placement={q}" for p in ("bn", "ln") for q in ("pre", "post")}
    assert by_config["bn|placement=post"]["network"] == {"placement": "post"}
    assert by_config["bn|placement=pre"]["similarity"] != by_config["bn|placement=post"]["similarity"]


# ---------------------------------------------------------------------------------------------------------
# studies from before network options


def test_a_study_without_network_options_still_reads(searched: Path, tmp_path: Path) -> None:
    """A version-1 study (no schema version stored, plain layer configs) reads with empty network options."""
    runs = Path(shutil.copytree(searched, tmp_path / "runs"))
    study = open_study("skipinit", runs_dir=str(runs))
    legacy = optuna.create_study(study_name="legacy", storage=study._storage, directions=DIRECTIONS)
    for key, value in study.user_attrs.items():
        if key != "schema_version":
            legacy.set_user_attr(key, value)
    old = study.trials[0]
    legacy.add_trial(
        optuna.trial.create_trial(
            params={"preset": "bn"},
            distributions={"preset": optuna.distributions.CategoricalDistribution(["bn", "ln"])},
            values=old.values,
            user_attrs={**old.user_attrs, "config": "bn"},
        )
    )
    check_schema(legacy)
    (row,) = build_rows(legacy)
    assert row["config"] == "bn" and row["network"] == {}
    assert CandidateConfig.parse(row["config"]) == CandidateConfig.of("bn")


def test_a_model_given_after_the_file_is_checked_against_the_network_section(tmp_path: Path) -> None:
    (tmp_path / "skipinit.yaml").write_text(SKIPINIT)
    result = runner.invoke(
        app,
        [
            "run",
            "--space",
            str(tmp_path / "skipinit.yaml"),
            "--model",
            "cnn",
            "--runs-dir",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --model: cnn: network.skipinit: unknown network option; cnn takes no network options"
    ]
    assert not (tmp_path / "r").exists()
