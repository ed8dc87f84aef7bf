"""``normsearch export``: generated modules against ``build_norm``/``build_conv`` (outputs, gradients,
running estimates, state dicts both ways), their formatting (ruff), naming and docstring safety, the CLI,
and an exported layer training inside a torchvision ResNet."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from torch import nn
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.export import Provenance, check_class_name, default_class_name, export_source
from normsearch.export.core import CORE_NAMES
from normsearch.leaderboard import build_rows
from normsearch.norm import PRESETS, NormConfig, as_config, build_conv, build_norm, parse_spec, primitives
from normsearch.norm import conv as norm_conv
from normsearch.norm import functional as norm_functional
from normsearch.norm.layer import CORE_FUNCTIONS, kernel_of
from normsearch.space import load_space
from normsearch.storage import open_study

ATOL = RTOL = 1e-5
FUSED_CALLS = {
    "batch_norm": "F.batch_norm(",
    "group_norm": "F.group_norm(",
    "layer_rms_norm": "F.rms_norm(",
}
EVIL_STUDY = 'x"""\nimport os\nos.system("touch PWNED")\n"""\u2028 \\ \'\'\' end"'


def space_configs(count: int, seed: int) -> list[NormConfig]:
    """Distinct configs drawn at random from the shipped ``full`` space (invalid combinations redrawn)."""
    space = load_space("full")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    found: dict[NormConfig, None] = {}
    while len(found) < count:
        try:
            found[space.config(space.sample(study.ask()))] = None
        except ValueError:
            continue
    return list(found)


def load(source: str, label: str) -> dict:
    """Execute a generated module in a fresh namespace and return it."""
    namespace = {"__name__": "exported"}
    exec(compile(source, f"<export {label}>", "exec"), namespace)  # noqa: S102  (our own generated code)
    return namespace


def _randomize(module: nn.Module, gen: torch.Generator) -> None:
    """Random parameters away from their init (init values would hide affine/TLU/gate bugs)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            centre = 1.0 if name in ("weight", "v") else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + centre)


def assert_same_layer(ours: nn.Module, ref: nn.Module, shape: tuple[int, ...], seed: int, label: str) -> None:
    """State dicts load both ways (strict), then two train steps and one eval step agree: outputs,
    input and parameter gradients, running estimates."""
    gen = torch.Generator().manual_seed(seed)
    _randomize(ref, gen)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    for mode in ("train", "train", "eval"):
        ours.train(mode == "train"), ref.train(mode == "train")
        x = torch.randn(shape, generator=gen) * 2 + 0.5
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours(xa), ref(xb)
        torch.testing.assert_close(
            ya, yb, atol=ATOL, rtol=RTOL, msg=lambda m, mode=mode: f"{label} {mode} y: {m}"
        )
        grad = torch.randn(ya.shape, generator=gen)
        ya.backward(grad), yb.backward(grad)
        torch.testing.assert_close(xa.grad, xb.grad, atol=ATOL, rtol=RTOL, msg=lambda m: f"{label} dx: {m}")
    ref_params = dict(ref.named_parameters())
    assert [n for n, _ in ours.named_parameters()] == list(ref_params), label
    for name, p in ours.named_parameters():
        torch.testing.assert_close(
            p.grad, ref_params[name].grad, atol=ATOL, rtol=RTOL, msg=f"{label} d{name}"
        )
    ours_state, ref_state = ours.state_dict(), ref.state_dict()
    assert list(ours_state) == list(ref_state), label
    for key in ref_state:
        torch.testing.assert_close(
            ours_state[key], ref_state[key], atol=ATOL, rtol=RTOL, msg=f"{label} {key}"
        )


def exported_layer(cfg: NormConfig, channels: int) -> nn.Module:
    source = export_source(cfg, class_name="Exported")
    return load(source, cfg.spec())["Exported"](channels)


# ---------------------------------------------------------------------------------------------------
# Exactness


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_match_build_norm(name):
    cfg = parse_spec(name)
    namespace = load(export_source(cfg), name)
    layer = namespace[default_class_name(cfg)](32)
    assert_same_layer(layer, build_norm(cfg, 32), (4, 32, 3, 3), seed=1, label=name)


EXTRA_SPECS = [
    "bn:running=false",
    "bn:center=false,scale=rms,momentum=0.3",
    "bgn:group_size=4,running=false",
    "bgn:groups=4,scale=rms,act=tlu,momentum=1.0",
    "evonorm_b0:running=false,affine=gain",
    "evonorm_b0:partition=batch_group,groups=2",
    "evonorm_b0:partition=layer",
    "evonorm_b0:partition=instance,center=true,scale=rms",
    "evonorm_b0:partition=group,groups=4,center=true",
    "in:center=true,act=evo_s0",
]
"""Configs outside full.yaml: running estimates switched off or tuned, EvoNorm on other partitions."""


def test_space_configs_match_build_norm():
    for index, cfg in enumerate(space_configs(300, seed=0) + [parse_spec(s) for s in EXTRA_SPECS]):
        shape = (3, 32, 3, 3) if index % 4 else (3, 32, 5)  # 2-d and 1-d spatial inputs
        assert_same_layer(exported_layer(cfg, 32), build_norm(cfg, 32), shape, seed=index, label=cfg.spec())


def test_inputs_without_spatial_dims_match_build_norm():
    """(N, C) inputs: instance statistics are over one element each (a reduction over ``dim=()`` would
    take the whole tensor instead).

    eps = 0.5: a one-element set has σ² = 0, and the layer's backward through the statistics, x · c₂ + c₁
    (the form of torch's group-norm backward), cancels to within float32 rounding of |x · c₂| ∝
    (σ² + eps)^(-3/2), i.e. ~1e-5 relative at eps = 1e-5, where the export's autograd gives exact zeros.
    """
    configs = [parse_spec(name) for name in PRESETS] + space_configs(60, seed=5)
    for index, cfg in enumerate(configs):
        cfg = cfg.replace(eps=0.5)
        assert_same_layer(exported_layer(cfg, 32), build_norm(cfg, 32), (5, 32), seed=index, label=cfg.spec())


def test_constructor_arguments_vary_the_hyperparameters():
    cfg = parse_spec("bgn:groups=4,momentum=0.2,eps=0.001")
    cls = load(export_source(cfg), "bgn")[default_class_name(cfg)]
    assert_same_layer(
        cls(16, groups=8, eps=0.01, momentum=0.5),
        build_norm(cfg.replace(groups=8, eps=0.01, momentum=0.5), 16),
        (4, 16, 3, 3),
        seed=2,
        label="bgn args",
    )
    sized = load(export_source("gn:group_size=4"), "gn")["GroupNormSize4"]
    assert_same_layer(sized(16, group_size=2), build_norm("gn:group_size=2", 16), (2, 16, 3, 3), 3, "size")
    with pytest.raises(ValueError, match="groups=3 must divide num_channels=16"):
        cls(16, groups=3)


@pytest.mark.parametrize("scheme", ["weight_norm", "scaled_ws"])
def test_conv_wrapper_matches_build_conv(scheme):
    cfg = parse_spec(f"gn:groups=2,weight={scheme},eps=0.001")
    namespace = load(export_source(cfg), scheme)
    conv_class = {"weight_norm": "WeightNormConv2d", "scaled_ws": "ScaledStdConv2d"}[scheme]
    ours = namespace[conv_class](4, 6, 3, padding=1, bias=True, eps=cfg.eps)
    ref = build_conv(cfg, 4, 6, 3)
    assert_same_layer(ours, ref, (2, 4, 5, 5), seed=4, label=scheme)
    assert {"weight", "bias", "gain"} == set(ours.state_dict())
    assert namespace["CONV_EPS"] == cfg.eps  # the config's eps is the class's default
    with pytest.raises(ValueError, match="padding_mode='reflect': only 'zeros'"):
        namespace[conv_class](4, 6, 3, padding=1, padding_mode="reflect")  # its forward is F.conv2d


def test_compile_option_matches_eager():
    """The exported class's ``compile=True`` (default set by ``normsearch export --compile``) runs the
    copied core through ``torch.compile`` and still matches ``build_norm`` (one config: compiling costs
    seconds on CPU)."""
    result = runner.invoke(app, ["export", "--spec", "evonorm_b0", "--compile"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == export_source("evonorm_b0", compile=True) != export_source("evonorm_b0")
    assert "compile: bool = True" in result.stdout
    layer = load(result.stdout, "compiled")["EvoNormB0"](16)
    assert_same_layer(layer, build_norm("evonorm_b0", 16), (4, 16, 3, 3), seed=6, label="compiled")
    assert "compile" not in export_source("gn:groups=8")  # fused kernels: one torch call, nothing to compile


def test_weightless_configs_emit_no_conv():
    source = export_source("gn:groups=2")
    assert "Conv2d" not in source and "math" not in source


# ---------------------------------------------------------------------------------------------------
# The code itself: fused kernels, no unused branches, formatting


def _class_node(source: str, name: str) -> ast.ClassDef:
    return next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == name)


def test_fused_configs_call_the_same_torch_kernel_and_generic_ones_none():
    for cfg in [parse_spec(name) for name in PRESETS] + space_configs(120, seed=1):
        source = export_source(cfg, class_name="L")
        layer = _class_node(source, "L")
        code = ast.unparse(layer)
        forward = next(f for f in layer.body if getattr(f, "name", "") == "forward")
        body = ast.unparse(forward)
        kernel = kernel_of(cfg)
        if kernel in FUSED_CALLS:
            assert FUSED_CALLS[kernel] in body and "var_mean" not in body, cfg.spec()
        else:
            assert "F." not in body, cfg.spec()
        # Only the options the config uses appear: no generic branches.
        ifs = {ast.unparse(n.test) for n in ast.walk(layer) if isinstance(n, ast.If)}
        assert ifs <= {"self.training", "num_channels % groups", "num_channels % group_size"}, cfg.spec()
        assert ("self.training" in ifs or "training=self.training" in body) == bool(cfg.running), cfg.spec()
        assert ("self.tau" in code) == (cfg.act == "tlu"), cfg.spec()
        assert ("self.v" in code) == (cfg.act in ("evo_s0", "evo_b0")), cfg.spec()
        assert ("self.bias" in code) == (cfg.affine == "full"), cfg.spec()
        assert ("momentum" in code) == bool(cfg.running), cfg.spec()


def test_output_passes_ruff_check_and_format_with_defaults(tmp_path):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a test dependency (pip install -e .[test])"
    configs = [parse_spec(name) for name in PRESETS] + space_configs(40, seed=2)
    configs += [parse_spec(name).replace(layout="tokens") for name in PRESETS]
    for index, cfg in enumerate(configs):
        (tmp_path / f"layer_{index}.py").write_text(export_source(cfg), encoding="utf-8")
    provenance = Provenance(
        EVIL_STUDY, trial=7, rank=2, scores={"score": 0.25, "similarity": None}, accuracy=0.9
    )
    (tmp_path / "provenance.py").write_text(export_source("frn", provenance=provenance), encoding="utf-8")
    for command in (
        ["check", "--isolated", "--no-cache", "."],
        ["format", "--isolated", "--no-cache", "--check", "."],
    ):
        result = subprocess.run([ruff, *command], cwd=tmp_path, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------
# Names and provenance


def test_default_class_names():
    names = {
        "gn:groups=8": "GroupNorm8",
        "gn:group_size=4": "GroupNormSize4",
        "frn": "FRN",
        "frn:eps=0.001": "FRN",
        "bn:momentum=0.05,weight=scaled_ws": "BatchNorm",
        "evonorm_s0": "EvoNormS0G32",
        "wn": "NoNorm",
        "in:scale=rms": "NormLayer",
    }
    assert {spec: default_class_name(parse_spec(spec)) for spec in names} == names
    for cfg in space_configs(200, seed=3):
        check_class_name(default_class_name(cfg))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("1Norm", "not a Python identifier"),
        ("my-norm", "not a Python identifier"),
        ("", "not a Python identifier"),
        ("Norm\nimport os", "not a Python identifier"),
        ("Ｆ", "not a Python identifier"),  # NFKC-normalizes to F
        ("class", "keyword"),
        ("nn", "taken by the exported module"),
        ("ScaledStdConv2d", "taken by the exported module"),
        ("folded_norm", "taken by the exported module"),
        ("Folded", "taken by the exported module"),
    ],
)
def test_bad_class_names_are_refused(name, reason):
    with pytest.raises(ValueError, match=reason):
        export_source("bn", class_name=name)


def test_provenance_cannot_break_out_of_the_docstring(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    provenance = Provenance.from_row(
        EVIL_STUDY,
        {
            "rank": 1,
            "trial": 12,
            "config": "frn",
            "activation_growth": 0.5,
            "similarity": float("nan"),
            "grad_ratio": 3,
            "score": "1.5",
            "accuracy": 0.875,
            "diverged": False,
        },
    )
    source = export_source("frn", provenance=provenance)
    module = ast.parse(source)
    kinds = [type(node).__name__ for node in module.body]
    assert kinds[0] == "Expr" and kinds[-1] == "ClassDef"
    # After the docstring: imports, then the copied core definitions and the class, nothing else.
    imports = [n for n in module.body[1:] if isinstance(n, (ast.Import, ast.ImportFrom))]
    definitions = module.body[1 + len(imports) :]
    assert all(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in definitions)
    assert {n.name for n in definitions[:-1]} <= CORE_NAMES and definitions[-1].name == "FRN"
    namespace = load(source, "evil")
    assert not (tmp_path / "PWNED").exists()
    doc = namespace["FRN"].__doc__
    assert f"study '{EVIL_STUDY}', trial 12 (leaderboard rank 1)." in doc
    assert "Probe scores: activation_growth 0.5, similarity n/a, grad_ratio 3, score 1.5." in doc
    assert "Confirmed by training: validation accuracy 0.875 (best epoch)." in doc


# ---------------------------------------------------------------------------------------------------
# CLI


runner = CliRunner()


def _error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_cli_spec_to_stdout_and_file(tmp_path):
    result = runner.invoke(app, ["export", "--spec", "gn:groups=8"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == export_source("gn:groups=8")
    target = tmp_path / "my_norm.py"
    result = runner.invoke(
        app, ["export", "--spec", "gn:groups=8", "--class-name", "MyNorm", "-o", str(target)]
    )
    assert result.exit_code == 0, result.stderr
    assert target.read_text(encoding="utf-8") == export_source("gn:groups=8", class_name="MyNorm")
    assert result.stdout == "" and "MyNorm" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["my_norm.py"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--spec", "gn:groups=x"], "option 'groups' must be an integer"),
        (["--spec", "bn", "--class-name", "my norm"], "not a Python identifier"),
        (["--spec", "bn", "--class-name", "lambda"], "keyword"),
        (["--spec", "bn", "somestudy"], "--spec exports a config without a study"),
        (["--rank", "1", "--trial", "3"], "--rank or --trial, not both"),
        (["--rank", "0"], "--rank must be at least 1"),
    ],
)
def test_cli_bad_input_exits_2_and_keeps_the_file(tmp_path, args, message):
    target = tmp_path / "keep.py"
    target.write_text("# existing results\n", encoding="utf-8")
    result = runner.invoke(app, ["export", *args, "-o", str(target)])
    assert result.exit_code == 2
    assert message in _error_line(result)
    assert target.read_text(encoding="utf-8") == "# existing results\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.py"]


def test_cli_unwritable_output_exits_2(tmp_path):
    result = runner.invoke(app, ["export", "--spec", "bn", "-o", str(tmp_path / "missing" / "norm.py")])
    assert result.exit_code == 2
    assert "cannot write" in _error_line(result)
    assert list(tmp_path.iterdir()) == []


TINY_SPACE = """\
description: a few seconds of probes for the export tests
space:
  partition: {choices: [group, batch]}
  group_size: {when: {partition: group}, choices: [2, 4]}
  act: {choices: [none, tlu]}
probe: {model: cnn, depth: 2, width: 8, batch_size: 8, seeds: 1, resolution: 8}
search: {n_trials: 4, sampler: random, seed: 0, baselines: false}
"""


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A real study ``tiny`` (a short probe search), with a confirmation result recorded for rank 1."""
    root = tmp_path_factory.mktemp("study")
    (root / "tiny.yaml").write_text(TINY_SPACE, encoding="utf-8")
    runs = root / "runs"
    result = runner.invoke(
        app, ["run", "--space", str(root / "tiny.yaml"), "--runs-dir", str(runs), "--no-confirm"]
    )
    assert result.exit_code == 0, result.stderr
    study = open_study("tiny", runs_dir=runs)
    best = build_rows(study)[0]
    study.set_user_attr(f"confirm:{best['trial']}", {"accuracy": 0.875, "diverged": False})
    return runs


def test_cli_exports_rank_1_of_the_latest_study_by_default(study_dir, tmp_path):
    rows = build_rows(open_study("tiny", runs_dir=study_dir))
    target = tmp_path / "best.py"
    result = runner.invoke(app, ["export", "--runs-dir", str(study_dir), "-o", str(target)])
    assert result.exit_code == 0, result.stderr
    best = rows[0]
    expected = export_source(best["config"], provenance=Provenance.of(open_study("tiny", study_dir), best))
    assert target.read_text(encoding="utf-8") == expected
    assert f"study 'tiny', trial {best['trial']} (leaderboard rank 1)." in expected
    assert "Confirmed by training: validation accuracy 0.875 (best epoch) on digits." in expected
    layer = _import_file(target, "best").__dict__[default_class_name(as_config(best["config"]))](8)
    assert_same_layer(layer, build_norm(best["config"], 8), (4, 8, 3, 3), seed=5, label="rank 1")


def test_cli_exports_a_rank_or_a_trial(study_dir):
    rows = build_rows(open_study("tiny", runs_dir=study_dir))
    last = rows[-1]
    by_rank = runner.invoke(
        app, ["export", "tiny", "--rank", str(last["rank"]), "--runs-dir", str(study_dir)]
    )
    by_trial = runner.invoke(
        app, ["export", "tiny", "--trial", str(last["trial"]), "--runs-dir", str(study_dir)]
    )
    assert by_rank.exit_code == by_trial.exit_code == 0, by_rank.stderr + by_trial.stderr
    assert (
        by_rank.stdout
        == by_trial.stdout
        == export_source(last["config"], provenance=Provenance.from_row("tiny", last))
    )
    journal = study_dir / "tiny" / "journal.log"
    by_storage = runner.invoke(
        app, ["export", "tiny", "--storage", str(journal), "--runs-dir", str(study_dir.parent)]
    )
    assert by_storage.exit_code == 0, by_storage.stderr
    assert by_storage.stdout == export_source(
        rows[0]["config"], provenance=Provenance.of(open_study("tiny", study_dir), rows[0])
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tiny", "--rank", "99"], "--rank 99 is out of range"),
        (["tiny", "--trial", "99"], "has no trial 99"),
        (["nosuch"], "no study 'nosuch'"),
        (["../escape"], "study name"),
    ],
)
def test_cli_study_errors_exit_2(study_dir, tmp_path, args, message):
    target = tmp_path / "keep.py"
    target.write_text("# existing results\n", encoding="utf-8")
    result = runner.invoke(app, ["export", *args, "--runs-dir", str(study_dir), "-o", str(target)])
    assert result.exit_code == 2
    assert message in _error_line(result)
    assert target.read_text(encoding="utf-8") == "# existing results\n"


def test_cli_without_studies_exits_2(tmp_path):
    result = runner.invoke(app, ["export", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no studies under" in _error_line(result)


# ---------------------------------------------------------------------------------------------------
# End to end: export, import, train inside a torchvision ResNet


def _import_file(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_steps(model: nn.Module, steps: int = 2) -> list[float]:
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    model.train()
    for _ in range(steps):
        x = torch.randn(4, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("spec", ["bgn:groups=8", "evonorm_s0:groups=8"])
def test_exported_layer_trains_in_a_torchvision_resnet(tmp_path, spec):
    from torchvision.models import resnet18

    path = tmp_path / "my_norm.py"
    assert runner.invoke(app, ["export", "--spec", spec, "-o", str(path)]).exit_code == 0
    module = _import_file(path, f"my_norm_{spec.split(':')[0]}")
    cls = getattr(module, default_class_name(as_config(spec)))
    ours = resnet18(num_classes=10, norm_layer=cls)
    ref = resnet18(num_classes=10, norm_layer=lambda c: build_norm(spec, c))
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours_losses, ref_losses = _train_steps(ours), _train_steps(ref)
    assert all(torch.isfinite(torch.tensor(ours_losses)))
    assert ours_losses == pytest.approx(ref_losses, rel=1e-4)
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------
# One source: the exported file runs normsearch's own functional core, through public torch APIs only

EXPORTED_PRIVATE = ("self._norm", "self._forward_channels_first")
"""The only underscored attributes an exported file may touch: its own."""


def _all_configs() -> list[NormConfig]:
    configs = [parse_spec(name) for name in PRESETS] + space_configs(300, seed=0)
    return configs + [parse_spec(name).replace(layout="tokens") for name in PRESETS]


def test_exports_use_only_public_torch_apis():
    """No ``torch.ops`` (internal aten kernels), ``torch._*`` or underscored attribute (dunders aside) of torch's
    classes: torch may change those without notice. Every preset (both layouts) and 300 space configs."""
    for cfg in _all_configs():
        source = export_source(cfg, class_name="L")
        assert "torch.ops" not in source and "torch._" not in source, cfg.spec()
        private = {
            ast.unparse(node)
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__")
        }
        assert private <= set(EXPORTED_PRIVATE), (cfg.spec(), private)


def _docstrings(node: ast.AST) -> list[str]:
    return [
        ast.get_docstring(n, clean=False) or ""
        for n in ast.walk(node)
        if isinstance(n, (ast.FunctionDef, ast.ClassDef))
    ]


def _code(node: ast.AST) -> str:
    """The definition without its docstrings."""
    node = ast.parse(ast.unparse(node))
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(n, clean=False) is not None:
            n.body = n.body[1:] or [ast.Pass()]
    return ast.dump(node)


def _words(text: str) -> list[str]:
    """The words of a docstring, Sphinx roles and literal quotes aside."""
    return re.sub(r":(?:func|class|data|meth|mod):|`", "", text).split()


def test_exported_core_is_the_library_source():
    """Every definition the file holds besides the layer class is ``inspect.getsource`` of normsearch's own
    (the primitives in their public-API version), its docstrings trimmed only, and the layer class calls the core function its config
    dispatches to in ``UnifiedNorm``."""
    library = {
        **{name: getattr(norm_functional, name) for name in vars(norm_functional)},
        **{name: getattr(norm_conv, name) for name in vars(norm_conv)},
        **{name: getattr(primitives, name) for name in primitives.__all__},
    }
    seen: set[str] = set()
    for cfg in _all_configs():
        source = export_source(cfg, class_name="L")
        definitions = [
            node
            for node in ast.parse(source).body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name != "L"
        ]
        for node in definitions:
            original = ast.parse(textwrap.dedent(inspect.getsource(library[node.name]))).body[0]
            assert _code(node) == _code(original), (cfg.spec(), node.name)
            for copied, full in zip(_docstrings(node), _docstrings(original), strict=True):
                assert set(_words(copied)) <= set(_words(full)), (cfg.spec(), node.name)  # trimmed only
        kernel = kernel_of(cfg)
        if kernel in CORE_FUNCTIONS:
            name = CORE_FUNCTIONS[kernel].__name__
            assert f"self._norm = compile_core({name}) if compile else {name}" in source, cfg.spec()
        seen |= {node.name for node in definitions}
    assert {
        "folded_norm",
        "evo_b0_norm",
        "stepwise_norm",
        "Folded",
        "EvoB0",
        "Moments",
        "compile_core",
    } <= seen
    assert {"WeightNormConv2d", "ScaledStdConv2d", "group_moments", "row_sums"} <= seen


def test_position_evonorm_b0_takes_the_layers_maximum():
    """The drift issue 13 found: the exported position EvoNorm-B0 used ``torch.maximum`` (gradient split
    at ties) where the layer used its relu-based max; both now run the core's ``maximum``."""
    cfg = parse_spec("evonorm_b0:partition=position,running=false")
    source = export_source(cfg, class_name="L")
    assert "torch.maximum(" not in source and inspect.getsource(norm_functional.maximum) in source
    assert_same_layer(exported_layer(cfg, 8), build_norm(cfg, 8), (3, 8, 4, 4), seed=9, label=cfg.spec())


def test_exported_docstrings_hold_in_the_file():
    """No repository path (``benchmarks/norm_speed.py``) and no Sphinx reference to a definition the exported
    file lacks, for every preset (both layouts) and 300 space configs; the formula the core's docstrings call
    "the module docstring's" is in the module docstring."""
    for cfg in _all_configs():
        source = export_source(cfg, class_name="L")
        assert not re.search(r"\b[\w.-]+/[\w./-]*\.py\b", source), cfg.spec()
        tree = ast.parse(source)
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))} | {
            t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
        }
        for name in re.findall(r":(?:func|class|data|meth):`~?([\w.]+)`", source):
            assert name.rpartition(".")[2] in defined, (cfg.spec(), name)
        if "module docstring" in source:
            assert "d = sqrt(σ² + eps)          if scale = std" in ast.get_docstring(tree), cfg.spec()


def test_docstring_quotes_both_objectives_and_what_the_accuracy_was_trained_for():
    row = {
        "rank": 1,
        "trial": 4,
        "config": "gn:group_size=2",
        "activation_growth": 0.084,
        "similarity": 0.733,
        "grad_ratio": 2.706,
        "step_loss_ratio": 0.838,
        "score": 0.615,
        "accuracy": 0.9805,
        "budget": 3,
        "lr": 0.025,
        "diverged": False,
        "confirm": {"seeds": [{}, {}]},
    }
    doc = load(export_source("gn:group_size=2", provenance=Provenance.from_row("vgg", row, "digits")), "p")[
        "GroupNormSize2"
    ].__doc__
    assert "step_loss_ratio 0.838" in doc and "similarity 0.733" in doc
    assert (
        "Confirmed by training: validation accuracy 0.9805 (best epoch, mean of 2 seed(s)) after 3 epoch(s) "
        "at lr 0.025 on digits." in " ".join(doc.split())
    )


def test_cli_says_which_of_several_studies_it_exports(study_dir, tmp_path):
    runs = Path(shutil.copytree(study_dir, tmp_path / "runs"))
    (runs / "newer").mkdir()
    optuna.copy_study(
        from_study_name="tiny",
        from_storage=JournalStorage(JournalFileBackend(str(runs / "tiny" / "journal.log"))),
        to_storage=JournalStorage(JournalFileBackend(str(runs / "newer" / "journal.log"))),
        to_study_name="newer",
    )
    result = runner.invoke(app, ["export", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.stderr
    assert "export: study 'newer', the latest of 2 under" in result.stderr and "also: tiny" in result.stderr
    assert "study 'newer'" in result.stdout  # the provenance of what was exported
    helped = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert "the latest in --runs-dir" in helped.stdout and "the only study" not in helped.stdout
