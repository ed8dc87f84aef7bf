"""Search-space files: validation messages (file, key path, what is allowed, exit 2, nothing written),
conditional entries and variants, Optuna parameter names, sizes, baselines inside a space, shipped spaces."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.confirm.settings import ConfirmSettings
from normsearch.norm import NormConfig, parse_spec
from normsearch.search import study_attrs
from normsearch.space import ScoreWeights, SpaceError, load_space, parse_space, shipped_spaces
from normsearch.space.checks import OPTION_CHECKS, RANGE_KINDS

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
PROBE = "probe: {depth: 8, width: 32, batch_size: 16, seeds: 1, resolution: 8}\n"


def _space(text: str, name: str = "s"):
    return parse_space(text, f"{name}.yaml", name, f"{name}.yaml")


def _problems(text: str) -> list[str]:
    with pytest.raises(SpaceError) as info:
        _space(text, "bad")
    return info.value.problems


BROKEN = {
    "bad choice value": (
        "space:\n  partition: group\n  groups: {choices: [2, 4, x]}\n",
        "bad.yaml: space.groups.choices[2]: must be a positive integer, got 'x'",
    ),
    "unknown option": (
        "space:\n  partitoin: {choices: [batch]}\n",
        "bad.yaml: space.partitoin: unknown option; allowed: preset, partition, groups, group_size",
    ),
    "unknown partition": (
        "space:\n  partition: {choices: [batch, grop]}\n",
        "bad.yaml: space.partition.choices[1]: must be one of none, batch, layer, instance, group",
    ),
    "probe setting": (
        "space:\n  partition: {choices: [batch, layer]}\nprobe: {depth: 1}\n",
        "bad.yaml: probe.depth: must be >= 2, got 1",
    ),
    "range on a categorical option": (
        "space:\n  scale: {low: 1, high: 2}\n",
        "bad.yaml: space.scale: low/high ranges apply only to groups, group_size, eps, momentum",
    ),
    "condition on an undeclared option": (
        "space:\n  group_size: {when: {partition: group}, choices: [2]}\n  partition: {choices: [group, layer]}\n",
        "bad.yaml: space.group_size.when.partition: must name an option declared above it in space",
    ),
    "condition on a value the option cannot take": (
        "space:\n  partition: {choices: [group, layer]}\n  group_size: {when: {partition: grop}, choices: [2]}\n",
        "bad.yaml: space.group_size.when.partition: grop is not a value of partition; its values: group, layer",
    ),
    "log with step": (
        "space:\n  eps: {low: 1e-6, high: 1e-2, log: true, step: 0.001}\n",
        "bad.yaml: space.eps: log and step cannot be combined",
    ),
    "unknown sampler": (
        "space:\n  partition: {choices: [batch, layer]}\nsearch: {sampler: cmaes}\n",
        "bad.yaml: search.sampler: must be one of tpe, random, nsga2, brute_force; got 'cmaes'",
    ),
    "negative weight": (
        "space:\n  partition: {choices: [batch, layer]}\nobjective: {weights: {similarity: -1}}\n",
        "bad.yaml: objective.weights.similarity: must be >= 0.0, got -1.0",
    ),
    "brute force over a continuous range": (
        "space:\n  eps: {low: 1e-6, high: 1e-2, log: true}\nsearch: {sampler: brute_force}\n",
        "bad.yaml: search.sampler: brute_force needs a finite space; continuous: space.eps",
    ),
    "group size that does not fit the probe network": (
        "space:\n  partition: group\n  group_size: {choices: [2, 64]}\n" + PROBE,
        "bad.yaml: space.group_size.choices[1]: 64 does not fit the probe network's channel counts 32, 64, 128",
    ),
    "group size that does not fit a torchvision network": (
        "space:\n  partition: group\n  group_size: {choices: [2, 3]}\nprobe: {model: 'torchvision:resnet18'}\n",
        (
            "bad.yaml: space.group_size.choices[1]: 3 does not fit the probe network's channel counts 64, 128, 256, "
            "512 (torchvision:resnet18); fitting values here: 2"
        ),
    ),
    "unknown section": (
        "space:\n  partition: {choices: [batch, layer]}\nprobes: {depth: 8}\n",
        (
            "bad.yaml: probes: unknown section; "
            "allowed: description, space, network, probe, objective, search, confirm"
        ),
    ),
    "key given twice": (
        "space:\n  center: {choices: [true, false]}\n  center: {choices: [true]}\n",
        "bad.yaml: line 3, column 3: invalid YAML: key 'center' given twice",
    ),
    "YAML syntax": ("space:\n  partition: {choices: [batch\n", "bad.yaml: line 3, column 1: invalid YAML"),
    "a list where choices are meant": (
        "space:\n  partition: [batch, layer]\n",
        "bad.yaml: space.partition: a list of values is not a value: write {choices: [...]}",
    ),
    "variant order": (
        (
            "space:\n  partition: {choices: [batch, none]}\n  center:\n    - {choices: [true, false]}\n"
            "    - {when: {partition: none}, value: false}\n"
        ),
        "bad.yaml: space.center[0]: only the last variant may omit when (it is the otherwise case)",
    ),
    "no valid point": (
        "space:\n  partition: none\n  center: {choices: [true]}\n",
        "bad.yaml: space: none of its 1 points is a valid config (e.g. partition=none computes no statistics",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file_names_file_key_path_and_what_is_allowed(case: str) -> None:
    text, expected = BROKEN[case]
    problems = _problems(text)
    assert any(p.startswith(expected) for p in problems), problems


PROBE_VALUES = (
    True,
    False,
    0,
    1,
    2,
    -1,
    0.0,
    0.5,
    1.0,
    1.5,
    1e-5,
    math.nan,
    math.inf,
    "x",
    "batch",
    "std",
    "full",
    "tlu",
    "scaled_ws",
    "tokens",
    "group",
    "none",
)


@pytest.mark.parametrize("option", list(NormConfig.__dataclass_fields__))
def test_a_space_option_takes_exactly_what_normconfig_takes_with_the_same_words(option: str) -> None:
    """The space's option checks and NormConfig's own validation are one rule (the field's metadata): a value
    NormConfig refuses as that option (``option '<name>' must be ...``) is refused in a space file with the
    same allowed values, and a value it accepts is accepted."""
    for value in PROBE_VALUES:
        try:
            NormConfig(**{option: value})
            refused = None
        except ValueError as err:
            text = str(err)
            refused = (
                text.split(" must be ", 1)[1].rsplit(", got ", 1)[0]
                if text.startswith(f"option '{option}' must be ")
                else None
            )
        assert OPTION_CHECKS[option](value) == refused, (option, value)
        problems = (
            []
            if refused is None
            else _problems(f"space:\n  {option}: {{choices: [{value!r}]}}\n".replace("'", ""))
        )
        assert refused is None or problems[0].startswith(
            f"bad.yaml: space.{option}.choices[0]: must be {refused}, got "
        )


def test_the_range_options_are_normconfigs_numeric_ones() -> None:
    assert RANGE_KINDS == {
        "groups": "int",
        "group_size": "int",
        "eps": "float",
        "momentum": "float",
        "alpha_init": "float",
    }
    assert _problems("space:\n  eps: {low: 0.0, high: 0.5}\n") == [
        "bad.yaml: space.eps.low: must be a number in (0, 1), got 0.0"
    ]
    assert _problems("space:\n  partition: batch\n  momentum: {low: 0.5, high: 1.5}\n") == [
        "bad.yaml: space.momentum.high: must be a number in (0, 1] or null (the default), got 1.5"
    ]


def test_every_problem_is_reported_not_just_the_first() -> None:
    text = (
        "space:\n  partition: {choices: [batch, grop]}\n  scale: {choices: [std, max]}\n"
        "probe: {depth: 1, seeds: 0}\n"
    )
    problems = _problems(text)
    paths = [p.split(": ")[1] for p in problems]
    assert paths == ["space.partition.choices[1]", "space.scale.choices[1]", "probe.depth", "probe.seeds"]


@pytest.mark.parametrize("command", [["space", "validate"], ["run", "--no-confirm", "--space"]])
def test_cli_rejects_a_broken_file_with_exit_2_and_writes_nothing(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text(
        "space:\n  partition: group\n  groups: {choices: [2, 4, x]}\nprobe: {depth: 1}\n"
    )
    result = runner.invoke(app, [*command, "bad.yaml"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: bad.yaml: space.groups.choices[2]: must be a positive integer, got 'x'",
        "error: bad.yaml: probe.depth: must be >= 2, got 1",
    ]
    assert result.stdout == ""
    assert not Path("runs").exists()


def test_missing_file_names_the_shipped_spaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["space", "validate", "nosuch.yaml"])
    assert result.exit_code == 2
    assert "nosuch.yaml: no such space file; shipped spaces: classic, full, groups" in result.stderr


def test_conditional_names_and_first_applicable_variant() -> None:
    space = _space(
        "space:\n  partition: {choices: [group, none, layer]}\n"
        "  group_size: {when: {partition: group}, choices: [2, 4]}\n"
        "  center:\n    - {when: {partition: none}, value: false}\n    - {choices: [true, false]}\n"
        "  scale:\n    - {when: {partition: none}, value: none}\n    - {when: {center: false}, choices: [std, rms]}\n"
        "    - {choices: [std, rms, none]}\n"
    )
    names = [p.name for p in space.params if p.kind != "fixed"]
    assert names == ["partition", "partition=group.group_size", "center", "center=false.scale", "scale"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(200):
        trial = study.ask()
        options = space.sample(trial)
        cfg = space.config(
            options
        )  # every draw is a valid layer: the conditions exclude the bad combinations
        if options["partition"] == "none":
            assert (options["center"], options["scale"]) == (False, "none")
            assert set(trial.params) == {"partition"}
        if options["partition"] == "group":
            assert cfg.group_size == trial.params["partition=group.group_size"]
        seen.add(cfg.spec())
        study.tell(trial, 0.0)
    points, valid = space.size()
    assert len(seen) == valid == points


def test_grid_of_groups_space_matches_its_size_and_all_configs_differ() -> None:
    space = load_space("groups")
    configs = [space.config(options).spec() for _, options in space.grid()]
    assert space.size() == (len(configs), len(configs))
    assert len(set(configs)) == len(configs)
    n_groups = len(next(p for p in space.params if p.option == "group_size").choices)
    assert (
        len(configs) == (2 + n_groups) * 2 * 2 * 3
    )  # instance/layer + group sizes, × center × scale × affine


def test_params_for_finds_exactly_the_configs_inside_the_space() -> None:
    space = load_space("groups")
    for spec in ("ln", "in", "gn:group_size=4", "gn:group_size=8,center=false,scale=rms,affine=gain"):
        params = space.params_for(parse_spec(spec))
        assert params is not None
        study = optuna.create_study()
        study.enqueue_trial(params)  # the params reproduce the config when the trial draws them
        assert space.config(space.sample(study.ask())) == parse_spec(spec)
    for spec in ("bn", "gn", "gn:group_size=4,act=tlu"):  # gn = 32 groups: not a group size
        assert space.params_for(parse_spec(spec)) is None


def test_ranges_and_yaml_12_floats() -> None:
    space = _space(
        "space:\n  partition: batch\n  eps: {low: 1e-6, high: 1e-2, log: true}\n  momentum: {choices: [0.1, 1e-2]}\n"
    )
    eps, momentum = space.params[1], space.params[2]
    assert (eps.kind, eps.low, eps.high, eps.log) == ("float", 1e-6, 1e-2, True)
    assert momentum.choices == (0.1, 0.01)
    assert not space.is_finite() and space.size() == (None, None)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    cfg = space.config(space.sample(trial))
    assert 1e-6 <= cfg.eps <= 1e-2 and cfg.momentum in (0.1, 0.01)


def test_settings_sections_and_defaults() -> None:
    space = _space("space:\n  partition: {choices: [batch, layer]}\n")
    assert space.probe.depth == space.confirm.depth == 14 and space.search.sampler == "tpe"
    assert space.confirm.top_k == 3
    assert space.weights == ScoreWeights()
    custom = _space(
        "space:\n  partition: {choices: [batch, layer]}\nobjective: {weights: {grad_ratio: 2}}\n"
        "search: {n_trials: 7}\nconfirm: {top_k: 1}\n"
    )
    assert custom.weights.grad_ratio == 2.0 and custom.search.n_trials == 7 and custom.confirm.top_k == 1


SPACE = "space:\n  partition: {choices: [batch, layer]}\n"


def test_probe_follows_the_confirmation_network_unless_the_probe_section_says_otherwise() -> None:
    default = _space(SPACE)
    matched = (
        default.probe.model,
        default.probe.depth,
        default.probe.width,
        default.probe.resolution,
        default.probe.data,
        default.probe.lr,
    )
    assert matched == (
        "resnet",
        14,
        32,
        8,
        "digits",
        0.1,
    )  # ConfirmSettings(): ResNet-14 on 8 px digits, lr 0.1
    assert default.probe_differences() == {}
    custom = _space(SPACE + "confirm: {depth: 8, width: 16, resolution: 12, lr: 0.4, skipinit: true}\n")
    p = custom.probe
    assert (p.depth, p.width, p.resolution, p.lr, p.skipinit) == (8, 16, 12, 0.4, True)
    assert custom.probe_differences() == {}
    overridden = _space(SPACE + "probe: {depth: 20, resolution: 16}\n")
    assert overridden.probe_differences() == {
        "depth": {"probe": 20, "confirm": 14},
        "resolution": {"probe": 16, "confirm": 8},
    }
    cifar = _space(SPACE + "confirm: {dataset: cifar10}\n")  # nothing is loaded: the native size is known
    assert cifar.probe.resolution == 32 and cifar.probe.data == "digits"
    assert cifar.probe_differences() == {"data": {"probe": "digits", "confirm": "cifar10"}}


def test_other_confirmation_settings_carry_the_probe_with_them_except_what_the_probe_section_gives() -> None:
    other = ConfirmSettings(depth=8, lr=0.4, resolution=12)
    moved = _space(SPACE).with_confirm(other)
    assert (moved.probe.depth, moved.probe.lr, moved.probe.resolution) == (8, 0.4, 12)
    assert moved.confirm == other and moved.probe_differences() == {}
    pinned = _space(SPACE + "probe: {depth: 20}\n").with_confirm(other)
    assert (pinned.probe.depth, pinned.probe.lr) == (20, 0.4)
    assert pinned.probe_differences() == {"depth": {"probe": 20, "confirm": 8}}


def test_a_confirmation_network_that_cannot_be_built_is_refused_at_load_under_confirm() -> None:
    assert _problems(SPACE + "confirm: {depth: 15}\n") == [
        "bad.yaml: confirm.depth: must be 6n+2 for resnet (8, 14, 20, 56, 110, ...), got 15"
    ]
    assert _problems(SPACE + "confirm: {depth: 15}\nprobe: {depth: 16}\n")[1] == (
        "bad.yaml: probe.depth: must be 6n+2 for resnet (8, 14, 20, 56, 110, ...), got 16"
    )


def _probe(a: float = 0.0, s: float = 0.0, g: float = 1.0, r: float = 1.0) -> dict[str, float]:
    return {"activation_growth": a, "similarity": s, "grad_ratio": g, "step_loss_ratio": r}


def test_score_formula_terms() -> None:
    w = ScoreWeights()
    # default: −ln(1 − s) + 4 · ln r; growth and gradient ratio weigh nothing (they are filters)
    assert w.score(_probe(s=0.5), blocks=7) == pytest.approx(math.log(2))
    assert w.score(_probe(r=math.e), blocks=7) == pytest.approx(4.0)
    assert w.score(_probe(a=0.3, g=50.0, r=0.5), blocks=7) == pytest.approx(4 * math.log(0.5))
    assert math.isfinite(w.score(_probe(s=1.0, r=0.0), blocks=7))  # caps: identical samples, a zero loss
    two_sided = ScoreWeights(similarity=0.0, step_loss_ratio=0.0, activation_growth=1.0, grad_ratio=2.0)
    assert two_sided.score(_probe(a=0.1, g=math.e), blocks=11) == pytest.approx(0.1 * 10 + 2.0)
    assert two_sided.score(_probe(a=-0.1, g=1 / math.e), blocks=11) == pytest.approx(
        0.1 * 10 + 2.0
    )  # decay too


def test_shipped_spaces_load_by_name_and_repo_copies_are_identical() -> None:
    shipped = shipped_spaces()
    assert set(shipped) == {"classic", "full", "groups", "transformer"}
    for name, resource in shipped.items():
        copy = ROOT / "search_spaces" / f"{name}.yaml"
        assert copy.read_bytes() == resource.read_bytes(), (
            f"search_spaces/{name}.yaml differs from the shipped normsearch/spaces/{name}.yaml (the source of "
            f"truth): cp normsearch/spaces/{name}.yaml search_spaces/"
        )
        space = load_space(name)
        assert space.name == name and space.description
        assert load_space(copy).sha256 == space.sha256


def test_space_show_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shown = runner.invoke(app, ["space", "show", "groups.yaml"])
    assert shown.exit_code == 0, shown.stderr
    assert "search space groups: 84 valid configs" in shown.stdout
    assert "partition=group.group_size" in shown.stdout
    assert "baselines inside: ln, in, gn C/G=2, gn C/G=4, gn C/G=8, gn C/G=16, gn C/G=32" in shown.stdout
    listed = runner.invoke(app, ["space", "list"])
    assert listed.exit_code == 0
    for name in ("classic", "full", "groups"):
        assert name in listed.stdout
    valid = runner.invoke(app, ["space", "validate", "full"])
    assert valid.exit_code == 0 and "full: valid" in valid.stdout


def test_continuous_draws_have_three_significant_digits_and_stay_in_range() -> None:
    space = _space(
        "space:\n  partition: batch\n  eps: {low: 1.0e-6, high: 1.0e-2, log: true}\n"
        "  momentum: {low: 0.01, high: 0.5}\n"
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(40):
        options = space.sample(study.ask())
        for key, (low, high) in {"eps": (1e-6, 1e-2), "momentum": (0.01, 0.5)}.items():
            value = options[key]
            assert float(f"{value:.3g}") == value and low <= value <= high
        assert len(space.config(options).spec()) < 50  # no 16-digit floats in the config


# ---------------------------------------------------------------------------------------------------------
# the probe follows every training setting that changes it; the default layer


def test_the_probe_batch_is_the_training_batch_unless_the_probe_section_sets_it() -> None:
    small = _space(SPACE + "confirm: {batch_size: 8}\n")
    assert small.probe.batch_size == 8 and small.probe_differences() == {}
    pinned = _space(SPACE + "probe: {batch_size: 64}\nconfirm: {batch_size: 8}\n")
    assert pinned.probe_differences() == {"batch_size": {"probe": 64, "confirm": 8}}
    assert study_attrs(pinned)["probe_matches_confirm"] is False
    assert study_attrs(small)["probe_matches_confirm"] is True
    # the shipped spaces leave the probe batch to confirm (64), so a smaller training batch carries it along
    for name in shipped_spaces():
        space = load_space(name)
        moved = space.with_confirm(dataclasses.replace(space.confirm, batch_size=8))
        assert moved.probe.batch_size == 8 and moved.probe_differences() == {}, name
    one = _space(SPACE + "confirm: {batch_size: 1}\n")  # a batch of one has nothing to probe across
    assert one.probe.batch_size == 64 and one.probe_differences() == {
        "batch_size": {"probe": 64, "confirm": 1}
    }


def test_training_with_another_optimizer_than_the_step_probes_sgd_does_not_match() -> None:
    adam = _space(SPACE + "confirm: {optimizer: adam, lr: 0.001}\n")
    assert adam.probe.lr == 0.001
    assert adam.probe_differences() == {"optimizer": {"probe": "sgd", "confirm": "adam"}}
    assert study_attrs(adam)["probe_matches_confirm"] is False


def test_the_default_layer_is_a_top_level_spec_bn_unless_given() -> None:
    assert _space(SPACE).confirm.default == "bn"
    assert _space(SPACE + "default: gn:groups=8\n").confirm.default == "gn:groups=8"
    defaults = {name: load_space(name).confirm.default for name in shipped_spaces()}
    assert defaults.pop("transformer") == (  # Pre-LN LayerNorm, with the network's defaults
        "pn|depth_scaling=false,final_norm=true,placement=pre,qk_norm=false"
    )
    assert set(defaults.values()) == {"bn"}
    unknown = (
        "bad.yaml: default: norm spec 'bx': unknown preset 'bx'; allowed: bn, ln, in, gn, rms, pn, bgn, frn, "
        "evonorm_s0, evonorm_b0, wn, sws, dyt, derf, none"
    )
    assert _problems(SPACE + "default: bx\n") == [unknown]
    assert _problems(SPACE + "default: [bn]\n")[0].startswith("bad.yaml: default: must be a string")
    assert _problems(SPACE + "confirm: {default: ln}\n") == [
        "bad.yaml: confirm.default: give the default layer at the top level of the file: default: SPEC"
    ]


def test_a_bad_default_is_one_error_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text(SPACE + "default: gn:groups=x\n")
    result = runner.invoke(app, ["space", "validate", "bad.yaml"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad.yaml: default: norm spec 'gn:groups=x'"), lines
