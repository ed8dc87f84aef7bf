"""Model sources (torchvision:, timm:, the user's FILE.py:FUNC / module:FUNC), their error lines, and the
probes on networks normsearch did not build."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.models import build_model
from normsearch.norm import UnifiedNorm
from normsearch.probes import ProbeRunner, ProbeSettings
from normsearch.probes.trace import probe_points
from normsearch.settings import SettingsError
from normsearch.sources import RepeatChannels, resolve_model

USER_MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn


    def plain(norm_layer, num_classes):
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), norm_layer(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), norm_layer(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
        )


    class Block(nn.Module):
        def __init__(self, norm_layer, c):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(c, c, 3, padding=1), norm_layer(c)

        def forward(self, x):
            return x + torch.relu(self.norm(self.conv(x)))


    def rgb(norm_layer, num_classes):  # built for RGB, with no in_channels argument
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), norm_layer(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
        )


    def residual(norm_layer, num_classes, in_channels):
        stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), norm_layer(8))
        blocks = nn.Sequential(*(Block(norm_layer, 8) for _ in range(4)))
        return nn.Sequential(stem, blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
    """
)


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(USER_MODELS)
    return path


def _build(name: str, spec: str = "gn:groups=4", **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model(
        name, spec, depth=8, width=8, num_classes=5, in_channels=kw.pop("in_channels", 1), **kw
    )


def test_torchvision_model_has_the_candidate_in_every_norm_slot() -> None:
    model = _build("torchvision:resnet18", "gn:groups=8")
    slots = [m for m in model.modules() if isinstance(m, UnifiedNorm)]
    assert len(slots) == 20 and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert {m.config.spec() for m in slots} == {"gn:groups=8"}
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 5)  # 1 channel repeated to RGB


def test_torchvision_builder_options_pass_through() -> None:
    model = _build("torchvision:resnet18,zero_init_residual=true", "bn", in_channels=3)
    assert all(block.bn2.weight.abs().max().item() == 0 for block in model.layer1)
    assert model.fc.out_features == 5
    with pytest.raises(ValueError, match=r"could not be built with bn: ValueError: BasicBlock only supports"):
        _build("torchvision:resnet18,width_per_group=32", "bn", in_channels=3)


def test_timm_model_and_user_functions(user_file: Path) -> None:
    timm_model = _build("timm:resnet10t", "bn", in_channels=3)
    assert sum(isinstance(m, UnifiedNorm) for m in timm_model.modules()) > 10
    assert timm_model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    plain = _build(f"{user_file}:plain")
    assert [m.num_channels for m in plain.modules() if isinstance(m, UnifiedNorm)] == [8, 8]
    residual = _build(f"{user_file}:residual", in_channels=3)  # in_channels passed: its signature names it
    assert residual[0][0].in_channels == 3
    assert plain(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_a_user_model_built_for_rgb_gets_gray_data_repeated(user_file: Path) -> None:
    model = _build(f"{user_file}:rgb", "bn", in_channels=1)
    assert isinstance(model, RepeatChannels) and model(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    result = ProbeRunner(ProbeSettings(model=f"{user_file}:rgb", batch_size=4, seeds=1, resolution=8)).run(
        "bn"
    )
    assert not result.unstable  # on the digits, 1 channel
    assert not isinstance(_build(f"{user_file}:rgb", "bn", in_channels=3), RepeatChannels)
    with pytest.raises(
        ValueError,
        match=r"rgb' could not be built with bn: ValueError: its first conv takes 3 "
        r"input channels and the data has 2: give the function an in_channels argument",
    ):
        _build(f"{user_file}:rgb", "bn", in_channels=2)


def test_module_function_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "nets.py").write_text(USER_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _build("my_pkg.nets:plain")(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_weight_schemes_reparametrize_foreign_convs(user_file: Path) -> None:
    model = _build(f"{user_file}:plain", "sws")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)
    w = convs[1].weight  # the effective weight: zero mean, std √(2π/(π−1))/√fan_in per filter
    std, mean = torch.std_mean(w, dim=(1, 2, 3), correction=0)
    torch.testing.assert_close(mean, torch.zeros(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(std, torch.full((8,), 1.7139 / 72**0.5), atol=1e-3, rtol=1e-3)
    wn = _build(f"{user_file}:plain", "wn")
    w = next(m for m in wn.modules() if isinstance(m, nn.Conv2d)).weight
    torch.testing.assert_close(torch.linalg.vector_norm(w, dim=(1, 2, 3)), torch.ones(8), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "name, message",
    [
        ("mlp", "unknown model 'mlp'; allowed: resnet, cnn, gpt, torchvision:NAME, timm:NAME, FILE.py:FUNC"),
        ("torchvision:resnet19", "torchvision has no classification model 'resnet19'"),
        ("torchvision:vgg11", "torchvision's vgg11 takes no norm_layer"),
        ("timm:resnet19", "timm has no model 'resnet19'"),
        ("nowhere.py:build", "file nowhere.py does not exist"),
        ("no_such_package.nets:build", "cannot import module 'no_such_package.nets': ModuleNotFoundError"),
        ("torchvision:resnet18,width", "expected key=value after the name, got 'width'"),
    ],
)
def test_unusable_model_names_say_why(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_model(name)
    with pytest.raises(SettingsError, match="^model: "):
        ProbeSettings(model=name)


def test_the_1x1_resolution_warning_is_for_the_paper_networks_only() -> None:
    """The paper's networks' map sizes are known before they are built (resnet ends on 1×1 maps below 8 px);
    another network's are not, so no warning is guessed for it."""
    assert "resnet-20 ends on 1×1 maps" in ProbeSettings(model="resnet", resolution=4).resolution_note()
    assert ProbeSettings(model="resnet", resolution=8).resolution_note() is None
    assert ProbeSettings(model="torchvision:resnet18", resolution=4).resolution_note() is None


def test_broken_user_files_say_why(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def build(norm_layer, num_classes):\n    return nn.Sequential(\n")
    with pytest.raises(ValueError, match=r"broken.py failed to load: SyntaxError"):
        resolve_model(f"{broken}:build")
    fine = tmp_path / "fine.py"
    fine.write_text("x = 1\n")
    with pytest.raises(
        ValueError, match=r"has no function 'build' \(expected FUNC\(norm_layer, num_classes\)"
    ):
        resolve_model(f"{fine}:build")
    ignores = tmp_path / "ignores.py"
    ignores.write_text(
        "from torch import nn\n\ndef build(norm_layer, num_classes):\n    return nn.Linear(4, num_classes)\n"
    )
    with pytest.raises(ValueError, match="has no normalization layer built by the norm_layer it was given"):
        _build(f"{ignores}:build")
    returns = tmp_path / "returns.py"
    returns.write_text("def build(norm_layer, num_classes):\n    return 3\n")
    with pytest.raises(ValueError, match="the builder returned int, not an nn.Module"):
        _build(f"{returns}:build")


def test_cli_probe_errors_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    for name, text in [("torchvision:vgg11", "takes no norm_layer"), (f"{broken}:f", "RuntimeError: boom")]:
        result = CliRunner().invoke(app, ["probe", "bn", "--model", name])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --model: ") and text in lines[0], result.output


# ---------------------------------------------------------------------------------------------------
# Probes on foreign networks


def test_probe_points_of_foreign_networks(user_file: Path) -> None:
    resnet = _build("torchvision:resnet18", "bn")
    points = probe_points(resnet)
    assert len(points.blocks) == 8 and all(type(b).__name__ == "BasicBlock" for b in points.blocks)
    assert len(points.grads) == 20 and points.grads_at_input and not points.blocks_at_input
    plain = probe_points(_build(f"{user_file}:plain"))  # no residual blocks: the slot inputs
    assert plain.blocks_at_input and len(plain.blocks) == 2
    residual = probe_points(_build(f"{user_file}:residual", in_channels=1))
    assert [type(b).__name__ for b in residual.blocks] == ["Block"] * 4  # containers are looked into


def test_probe_curves_on_a_user_network(user_file: Path) -> None:
    runner = ProbeRunner(ProbeSettings(model=f"{user_file}:residual", batch_size=8, seeds=2, resolution=8))
    result = runner.run("bn")
    assert not result.unstable
    assert len(result.curves["grad_norm"]) == 5  # the stem's slot and one per block, in forward order
    again = runner.run("bn")  # seeded: the same numbers
    assert (again.similarity, again.curves) == (result.similarity, result.curves)


@pytest.mark.slow
def test_paper_orderings_hold_on_torchvision_resnet18() -> None:
    """Similarity rises and the gradient ratio falls with group size; without activation statistics
    (none, SWS) the first stage's block output variance doubles per block, with them it does not.
    16 px digits, batch 16, 2 seeds (measured 32 px, batch 16, 3 seeds: similarity 0.28/0.85/0.95/0.96 for
    C/G = 1/4/16/64, grad ratio 81/6.9/2.1/1.6; variance ratio over stage 1's block: none 2.1, sws 2.1,
    bn 1.4, ln 1.3, wn 1.25)."""
    runner = ProbeRunner(ProbeSettings(model="torchvision:resnet18", batch_size=16, seeds=2, resolution=16))
    groups = [runner.run(f"gn:group_size={k}") for k in (4, 16, 64)]
    assert not any(r.unstable for r in groups)
    similarity = [r.similarity for r in groups]
    ratio = [r.grad_ratio for r in groups]
    assert similarity == sorted(similarity) and similarity[0] < similarity[-1] - 0.05, similarity
    assert ratio == sorted(ratio, reverse=True) and ratio[0] > 2 * ratio[-1], ratio

    def first_stage_growth(spec: str) -> float:
        variance = runner.run(spec).curves["variance"]
        return variance[1] / variance[0]

    unnormalized = [first_stage_growth(s) for s in ("none", "sws")]
    normalized = [first_stage_growth(s) for s in ("bn", "ln")]
    assert min(unnormalized) > 1.8 and max(normalized) < 1.65, (unnormalized, normalized)


@pytest.mark.slow
def test_cli_probe_on_torchvision_and_user_models(user_file: Path) -> None:
    for model in ("torchvision:resnet18", f"{user_file}:residual"):
        result = CliRunner().invoke(
            app,
            ["probe", "bn", "gn:groups=4", "--model", model, "--seeds", "1", "--batch-size", "8", "--json"],
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["settings"]["model"] == model
        assert [r["spec"] for r in doc["results"]] == ["bn", "gn:groups=4"]
        assert all(not r["unstable"] for r in doc["results"])


VIT = "timm:vit_tiny_patch16_224,patch_size=4,depth=2,embed_dim=32,num_heads=2"
RUN_SPACE = """
space:
  layout: {{value: {layout}}}
  preset: {{choices: [{presets}]}}
probe: {{model: "{model}", batch_size: 8, seeds: 1, resolution: 16}}
search: {{n_trials: 3, sampler: brute_force, seed: 0}}
confirm: {{model: "{model}", resolution: 16, top_k: 1, baselines: false, steps: 2, batch_size: 16,
          optimizer: adamw, lr: 0.001, device: cpu}}
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, layout, presets",
    [
        ("torchvision:resnet18", "channels", "bn, gn, dyt"),
        ("USER", "channels", "bn, ln, sws"),
        (VIT, "tokens", "pn, bn, dyt"),
    ],
)
def test_short_run_on_foreign_models(
    tmp_path: Path, user_file: Path, model: str, layout: str, presets: str
) -> None:
    """``normsearch run`` end to end (probes, search, confirmation, leaderboard) on each model source."""
    model = f"{user_file}:residual" if model == "USER" else model
    space = tmp_path / "space.yaml"
    space.write_text(RUN_SPACE.format(layout=layout, presets=presets, model=model))
    result = CliRunner().invoke(app, ["run", "--space", str(space), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    board = CliRunner().invoke(app, ["leaderboard", "space", "--runs-dir", str(tmp_path / "runs"), "--json"])
    rows = json.loads(board.stdout)["rows"]
    assert len(rows) == 3 and all(row["state"] == "COMPLETE" for row in rows), rows
    admitted = [row for row in rows if not row.get("rejected")]  # the probe filters may reject all
    trained = [row for row in rows if row.get("accuracy") is not None]
    default = [row for row in rows if row["config"] == "bn"]  # the space's default trains, even if rejected
    assert bool(trained) == bool(admitted or default) and all(0 <= row["accuracy"] <= 1 for row in trained)
