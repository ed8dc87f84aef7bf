"""``normsearch export``: generated modules against ``build_norm``/``build_conv`` (outputs, gradients,
running estimates, state dicts both ways), their formatting (ruff), naming and docstring safety, the CLI,
and an exported layer training inside a torchvision ResNet."""

from __future__ import annotations

import ast
import importlib.util
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.export import Provenance, check_class_name, default_class_name, export_source
from normsearch.norm import PRESETS, NormConfig, as_config, build_conv, build_norm, parse_spec
from normsearch.norm import layer as kernels
from normsearch.norm.config import ACTS, AFFINES, PARTITIONS, SCALES, WEIGHTS

ATOL = RTOL = 1e-5
FUSED_CALLS = {
    kernels._batch_norm_kernel: "F.batch_norm(",
    kernels._group_norm_kernel: "F.group_norm(",
    kernels._position_layer_norm_kernel: "F.layer_norm(",
    kernels._position_rms_norm_kernel: "F.rms_norm(",
    kernels._layer_rms_norm_kernel: "F.rms_norm(",
}
EVIL_STUDY = 'x"""\nimport os\nos.system("touch PWNED")\n"""\u2028 \\ \'\'\' end"'


def random_configs(count: int, seed: int, channels: int = 8) -> list[NormConfig]:
    """Distinct valid configs drawn from NormConfig's option domains (invalid combinations redrawn)."""
    rng = random.Random(seed)
    divisors = [d for d in range(1, channels + 1) if channels % d == 0]
    found: dict[NormConfig, None] = {}
    while len(found) < count:
        options = {
            "partition": rng.choice(PARTITIONS),
            "center": rng.random() < 0.5,
            "scale": rng.choice(SCALES),
            "affine": rng.choice(AFFINES),
            "act": rng.choice(ACTS),
            "weight": rng.choice(WEIGHTS),
            "eps": rng.choice([1e-5, 1e-3, 0.1]),
        }
        if options["partition"] in ("group", "batch_group"):
            options[rng.choice(["groups", "group_size"])] = rng.choice(divisors)
        if options["partition"] in ("batch", "batch_group"):
            options["running"] = rng.random() < 0.7
            if options["running"] and rng.random() < 0.5:
                options["momentum"] = rng.choice([0.05, 0.3, 1.0])
        try:
            found[NormConfig(**options)] = None
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


def test_random_configs_match_build_norm():
    for index, cfg in enumerate(random_configs(300, seed=0)):
        shape = (3, 8, 4, 4) if index % 4 else (3, 8, 5)  # 2-d and 1-d spatial inputs
        assert_same_layer(exported_layer(cfg, 8), build_norm(cfg, 8), shape, seed=index, label=cfg.spec())


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


def test_weightless_configs_emit_no_conv():
    source = export_source("gn:groups=2")
    assert "Conv2d" not in source and "math" not in source


# ---------------------------------------------------------------------------------------------------
# The code itself: fused kernels, no unused branches, formatting


def _class_node(source: str, name: str) -> ast.ClassDef:
    return next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == name)


def test_fused_configs_call_the_same_torch_kernel_and_generic_ones_none():
    for cfg in [parse_spec(name) for name in PRESETS] + random_configs(120, seed=1):
        source = export_source(cfg, class_name="L")
        layer = _class_node(source, "L")
        code = ast.unparse(layer)
        forward = next(f for f in layer.body if getattr(f, "name", "") == "forward")
        body = ast.unparse(forward)
        kernel = kernels.select_kernel(cfg)
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
    configs = [parse_spec(name) for name in PRESETS] + random_configs(40, seed=2)
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
    for cfg in random_configs(200, seed=3):
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
    assert kinds == ["Expr", "Import", "ImportFrom", "FunctionDef", "ClassDef"]
    namespace = load(source, "evil")
    assert not (tmp_path / "PWNED").exists()
    doc = namespace["FRN"].__doc__
    assert f"study '{EVIL_STUDY}', trial 12 (leaderboard rank 1)." in doc
    assert "Probe scores: activation_growth 0.5, similarity n/a, grad_ratio 3, score 1.5." in doc
    assert "Confirmed by training: accuracy 0.875." in doc


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


# ---------------------------------------------------------------------------------------------------
# End to end: export, import, train inside a torchvision ResNet


def _import_file(path: Path, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_steps(model: nn.Module, steps: int = 2) -> list[float]:
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
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
