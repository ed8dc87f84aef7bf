"""Init-time probes: definitions against direct computations, hooks, determinism, instability, the CLI, and
the findings of "Beyond BatchNorm" reproduced on small settings."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from normsearch.cli import app
from normsearch.models import build_model
from normsearch.norm import as_config
from normsearch.probes import ProbeResult, ProbeRunner, ProbeSettings, Trace, probe, trace_network
from normsearch.probes.inputs import probe_batch
from normsearch.probes.scores import (
    UNSTABLE_GRAD_RATIO,
    UNSTABLE_GROWTH,
    UNSTABLE_SIMILARITY,
    UNSTABLE_STEP_LOSS_RATIO,
    log_growth_per_block,
    score,
)
from normsearch.probes.step import loss_after_step
from normsearch.probes.trace import channel_variance, mean_cosine_similarity

TINY = ProbeSettings(depth=8, width=8, batch_size=8, seeds=2, resolution=8)


def _twin(spec: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet", spec, **({"depth": 8, "width": 8} | kw))


def _batch(n: int = 8, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


# --------------------------------------------------------------------------------------------------
# Definitions
def test_similarity_equals_mean_off_diagonal_cosine_of_the_gram_matrix() -> None:
    a = torch.relu(torch.randn(7, 4, 3, 3, generator=torch.Generator().manual_seed(0)))
    a[3] = 0  # an all-zero sample counts as orthogonal to the others
    flat = a.flatten(1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
    gram = unit @ unit.T
    off_diagonal = gram.sum() - gram.diagonal().sum()
    assert mean_cosine_similarity(a).item() == pytest.approx((off_diagonal / (7 * 6)).item(), rel=1e-5)
    same = torch.ones(5, 2, 2, 2) * torch.arange(1, 6).view(5, 1, 1, 1)  # parallel samples: cosine 1
    assert mean_cosine_similarity(same).item() == pytest.approx(1.0, abs=1e-6)


def test_variance_is_the_channel_mean_of_unbiased_per_channel_variances() -> None:
    a = torch.randn(6, 5, 4, 4, generator=torch.Generator().manual_seed(1)) * torch.arange(1, 6).view(
        1, 5, 1, 1
    )
    per_channel = [a[:, c].flatten().var(unbiased=True) for c in range(5)]
    assert channel_variance(a).item() == pytest.approx(torch.stack(per_channel).mean().item(), rel=1e-6)


def test_trace_matches_a_hand_instrumented_backward() -> None:
    x, y = _batch()
    probed, manual = _twin("gn:groups=4"), _twin("gn:groups=4")
    trace = trace_network(probed, x, y)
    acts, zs = [], {}

    def keep_grad(module: torch.nn.Module, _args, out: torch.Tensor) -> None:
        out.retain_grad()
        zs[module] = out

    hooks = [m.register_forward_hook(lambda _m, _a, out: acts.append(out)) for m in manual.block_outputs()]
    hooks += [m.register_forward_hook(keep_grad) for m in manual.conv_layers()]
    loss = F.cross_entropy(manual(x), y)
    loss.backward()
    for h in hooks:
        h.remove()
    assert trace.loss == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(trace.variance, torch.stack([channel_variance(a) for a in acts]).double())
    torch.testing.assert_close(
        trace.similarity, torch.stack([mean_cosine_similarity(a) for a in acts]).double()
    )
    torch.testing.assert_close(
        trace.grad_norm, torch.stack([zs[c].grad.norm() for c in manual.conv_layers()]).double()
    )
    assert len(trace.variance) == 4 and len(trace.grad_norm) == 1 + 3 * 2 + 2


def test_growth_score_separates_exponential_from_linear_growth() -> None:
    blocks = torch.arange(20, dtype=torch.float64)
    assert log_growth_per_block(2.0**blocks) == pytest.approx(math.log(2))
    linear = log_growth_per_block(1 + blocks)
    assert 0 < linear < math.log(2) / 4
    assert log_growth_per_block(torch.ones(20)) == 0.0


def test_scores_follow_their_definitions() -> None:
    x, y = _batch()
    model = _twin("bn")
    trace = trace_network(model, x, y)
    after = loss_after_step(model, x, y, trace.parameter_grads, lr=0.1)
    scores = score(trace, (trace.loss, after))
    assert scores.step_loss_ratio == pytest.approx(after / trace.loss)
    assert scores.similarity == pytest.approx(trace.similarity[-1].item())
    assert scores.grad_ratio == pytest.approx((trace.grad_norm[0] / trace.grad_norm[-1]).item())
    assert scores.activation_growth == pytest.approx(log_growth_per_block(trace.variance))
    assert scores.reason is None


def test_grad_ratio_skips_the_zero_gradients_of_skipinit_branches() -> None:
    x, y = _batch()
    model = _twin("bn", skipinit=True)
    trace = trace_network(model, x, y)
    convs = model.conv_layers()
    branch = {id(c) for b in model.blocks for c in (b.conv1, b.conv2)}
    zero = [i for i, c in enumerate(convs) if id(c) in branch]
    assert torch.all(trace.grad_norm[zero] == 0) and torch.all(trace.grad_norm[[0, 4, 7]] > 0)
    last = max(i for i in range(len(convs)) if i not in zero)
    assert score(trace, (trace.loss, trace.loss)).grad_ratio == pytest.approx(
        (trace.grad_norm[0] / trace.grad_norm[last]).item()
    )


# --------------------------------------------------------------------------------------------------
# Hooks leave the network alone
def test_probing_leaves_the_network_unmodified() -> None:
    x, y = _batch()
    probed, twin = _twin("frn"), _twin("frn")
    probed.eval()
    trace_network(probed, x, y)
    assert not probed.training  # mode restored
    assert all(not m._forward_hooks and not m._backward_hooks for m in probed.modules())
    assert all(p.grad is None for p in probed.parameters())
    for p, q in zip(probed.state_dict().values(), twin.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    torch.testing.assert_close(probed.train()(x), twin.train()(x), rtol=0, atol=0)


def test_runner_keeps_the_global_rng_state() -> None:
    state = torch.random.get_rng_state()
    ProbeRunner(TINY).run("bn")
    assert torch.equal(torch.random.get_rng_state(), state)


# --------------------------------------------------------------------------------------------------
# Runner contract
def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    def numbers(result: ProbeResult) -> dict:
        return {k: v for k, v in result.to_dict().items() if k != "seconds"}

    a, b = ProbeRunner(TINY).run("gn:groups=4"), probe("gn:groups=4", TINY)
    assert numbers(a) == numbers(b)
    other = ProbeRunner(dataclasses.replace(TINY, seed=1)).run("gn:groups=4")
    assert numbers(other) != numbers(a)
    assert a.seeds == 2 and a.activation_growth_std > 0 and a.similarity_std > 0 and a.grad_ratio_std > 0


def test_batches_are_seeded_digits_or_noise() -> None:
    x, y = probe_batch(ProbeSettings(batch_size=12, resolution=16), 0)
    assert x.shape == (12, 1, 16, 16) and y.shape == (12,) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, probe_batch(ProbeSettings(batch_size=12, resolution=16), 0)[0])
    assert not torch.equal(x, probe_batch(ProbeSettings(batch_size=12, resolution=16), 1)[0])
    noise, labels = probe_batch(ProbeSettings(batch_size=12, data="gaussian", resolution=8), 0)
    assert noise.shape == (12, 1, 8, 8) and noise.min() < -1 and labels.max() < 10


def test_result_schema_and_spec_forms() -> None:
    runner = ProbeRunner(TINY)
    result = runner.run({"partition": "group", "group_size": 2})
    assert result.spec == as_config("gn:group_size=2").spec()
    assert runner.run(as_config("gn:group_size=2")).similarity == result.similarity
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    for key, kind in (
        ("activation_growth", float),
        ("similarity", float),
        ("grad_ratio", float),
        ("unstable", bool),
        ("seconds", float),
        ("spec", str),
    ):
        assert isinstance(doc[key], kind)
    assert len(doc["curves"]["variance"]) == len(doc["curves"]["similarity"]) == 4
    assert len(doc["curves"]["grad_norm"]) == 9


def test_config_that_does_not_fit_the_network_raises_value_error() -> None:
    with pytest.raises(ValueError, match="groups'=32 does not divide num_channels=8"):
        ProbeRunner(TINY).run("gn")
    with pytest.raises(ValueError, match="unknown preset"):
        ProbeRunner(TINY).run("groupnorm")


# --------------------------------------------------------------------------------------------------
# Instability: finite scores, a flag and a reason, never an exception
def test_overflowing_input_is_unstable_with_finite_scores() -> None:
    x, y = _batch()
    trace = trace_network(_twin("none"), x * 1e38, y)
    assert not torch.isfinite(trace.variance).all()
    scores = score(trace, (trace.loss, math.nan))
    assert scores.reason is not None and "non-finite" in scores.reason
    assert (scores.activation_growth, scores.similarity, scores.grad_ratio) == (
        UNSTABLE_GROWTH,
        UNSTABLE_SIMILARITY,
        UNSTABLE_GRAD_RATIO,
    )
    assert all(math.isfinite(v) for curve in scores.curves.values() for v in curve)


def test_deep_weight_normalized_resnet_overflows_into_an_unstable_result() -> None:
    # WN's activation variance roughly quadruples per block: 44 blocks per stage overflow float32.
    settings = ProbeSettings(depth=134, width=4, batch_size=4, seeds=2, data="gaussian")
    result = ProbeRunner(settings).run("wn")
    assert result.unstable and "non-finite activation variance" in result.reason
    values = [result.activation_growth, result.similarity, result.grad_ratio]
    assert values == [UNSTABLE_GROWTH, UNSTABLE_SIMILARITY, UNSTABLE_GRAD_RATIO]
    json.dumps(result.to_dict(), allow_nan=False)  # strict JSON: every number finite
    stable = ProbeRunner(settings).run("bn")
    assert not stable.unstable and stable.reason is None
    assert all(v < w for v, w in zip([stable.activation_growth, stable.grad_ratio], values[::2], strict=True))


def test_collapsed_network_is_unstable() -> None:
    # The paper's CNN halves 16 px four times: instance statistics of a 1×1 map are constant.
    # Its output no longer depends on the input: the variance drops to rounding noise and no gradient flows.
    result = ProbeRunner(
        ProbeSettings(model="cnn", depth=5, width=4, batch_size=4, seeds=1, resolution=16)
    ).run("in")
    variance = result.curves["variance"]
    assert variance[-2] < 1e-9 * variance[0] and variance[-1] < 1e-9 * variance[0]
    assert result.unstable and "no gradient reaches any conv" in result.reason
    assert result.grad_ratio == UNSTABLE_GRAD_RATIO


def test_dead_activations_are_a_collapse_not_a_log_of_zero() -> None:
    ones = torch.ones(4, dtype=torch.float64)
    dead = Trace(
        variance=torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64),
        similarity=ones / 2,
        grad_norm=ones,
        loss=2.3,
    )
    scores = score(dead, (2.3, 2.0))
    assert scores.reason == "activations collapse to a constant at block 2"
    assert scores.activation_growth == UNSTABLE_GROWTH


# --------------------------------------------------------------------------------------------------
# The one-step loss probe
def test_the_step_probe_takes_exactly_the_first_step_of_torch_sgd() -> None:
    x, y = _batch()
    probed, twin = _twin("gn:groups=4"), _twin("gn:groups=4")
    trace = trace_network(probed, x, y)  # its one backward gives ∂L/∂z and ∇θL
    before = trace.loss
    after = loss_after_step(probed, x, y, trace.parameter_grads, lr=0.3)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.3, momentum=0.9)  # its first step has no history
    loss = F.cross_entropy(twin(x), y)
    loss.backward()
    optimizer.step()
    assert before == pytest.approx(loss.item())
    for p, q in zip(probed.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    with torch.no_grad():
        assert after == pytest.approx(float(F.cross_entropy(twin(x), y)), rel=1e-5)
    unchanged = _twin("gn:groups=4")
    assert loss_after_step(unchanged, x, y, trace_network(unchanged, x, y).parameter_grads, lr=0.0) == (
        pytest.approx(before)
    )


# The network the shipped spaces probe and confirmation trains: ResNet-14, width 32, 8 px digits, batch 64.
TRAINED = ProbeSettings(depth=14, width=32, batch_size=64, seeds=3, resolution=8)


@pytest.mark.slow
def test_step_probe_separates_a_layer_that_trains_at_a_learning_rate_from_one_that_does_not() -> None:
    # Trained with normsearch's trainer on digits (3 epochs, 2 seeds, docs/confirm.md): at lr 0.1 InstanceNorm
    # reaches 97.6 % and LayerNorm 36.2 %; at lr 0.05 both train (96.9 %, 96.0 %).
    high = ProbeRunner(dataclasses.replace(TRAINED, seeds=2, lr=0.1))
    trains, fails = high.run("in"), high.run("ln")
    assert trains.step_loss_ratio < 0.9 and fails.step_loss_ratio > 1.0  # the step helps / overshoots
    slow = ProbeRunner(dataclasses.replace(TRAINED, seeds=2, lr=0.02)).run("ln")
    assert slow.step_loss_ratio < 0.95
    assert fails.similarity == slow.similarity  # the init-time scores do not depend on lr


def test_a_step_that_overflows_is_unstable_and_leaves_the_init_scores_alone() -> None:
    settings = dataclasses.replace(TINY, seeds=1)
    normal = ProbeRunner(settings).run("bn")
    huge = ProbeRunner(dataclasses.replace(settings, lr=1e38)).run("bn")
    assert huge.unstable and huge.reason == "seed 0: non-finite loss after one SGD step"
    assert huge.step_loss_ratio == UNSTABLE_STEP_LOSS_RATIO
    assert (huge.activation_growth, huge.similarity, huge.grad_ratio) == (
        normal.activation_growth,
        normal.similarity,
        normal.grad_ratio,
    )
    json.dumps(huge.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------------------------------
# The paper's findings
GROUP_SWEEP = ["in", "gn:group_size=2", "gn:group_size=4", "gn:group_size=8", "ln"]  # instance → layer


@pytest.mark.parametrize(
    "settings",
    [
        ProbeSettings(depth=14, width=16, batch_size=16, seeds=3, resolution=8),
        ProbeSettings(model="cnn", depth=10, width=8, batch_size=16, seeds=3, resolution=32),
    ],
    ids=["resnet14", "cnn10"],
)
def test_group_size_raises_similarity_and_lowers_the_gradient_ratio(settings: ProbeSettings) -> None:
    runner = ProbeRunner(settings)
    results = [runner.run(spec) for spec in GROUP_SWEEP]
    similarity = [r.similarity for r in results]
    grad_ratio = [r.grad_ratio for r in results]
    assert similarity == sorted(similarity) and len(set(similarity)) == len(similarity), similarity
    assert grad_ratio == sorted(grad_ratio, reverse=True) and len(set(grad_ratio)) == len(grad_ratio), (
        grad_ratio
    )
    assert grad_ratio[0] > 4 * grad_ratio[-1]  # instance norm: gradients blow up towards the input


ACTIVATION_NORMS = ["bn", "ln", "in", "gn:groups=4", "frn"]
PARAMETRIC = ["none", "wn", "sws"]
GROWTH = ProbeSettings(depth=32, width=8, batch_size=8, seeds=2, resolution=16)  # 15 blocks + stem


def _normalized_variance(result: ProbeResult) -> list[float]:
    v = result.curves["variance"]
    return [x / v[0] for x in v]


def _at_most_linear(result: ProbeResult) -> bool:
    """v_b ≤ 1.5 · (b + 1) · v_0 at every block output b."""
    return all(r <= 1.5 * (b + 1) for b, r in enumerate(_normalized_variance(result)))


def _exponential(result: ProbeResult) -> bool:
    """v_last ≥ 2^(B/2) · v_0: at least ×√2 per block on average, far beyond any linear bound."""
    ratios = _normalized_variance(result)
    return ratios[-1] >= 2 ** (len(ratios) / 2)


def test_resnet_without_skipinit_activation_norms_grow_linearly_parametric_ones_exponentially() -> None:
    runner = ProbeRunner(GROWTH)
    linear = {spec: runner.run(spec) for spec in ACTIVATION_NORMS}
    exponential = {spec: runner.run(spec) for spec in PARAMETRIC}
    assert all(_at_most_linear(r) for r in linear.values()), {
        s: _normalized_variance(r) for s, r in linear.items()
    }
    assert all(_exponential(r) and not _at_most_linear(r) for r in exponential.values())
    worst_linear = max(r.activation_growth for r in linear.values())
    assert min(r.activation_growth for r in exponential.values()) > 4 * worst_linear


def test_skipinit_tames_growth_except_for_weight_norms_post_sum_scaled_relu() -> None:
    # SkipInit zeroes the residual branch; what is left is act(shortcut(x)). For ReLU/TLU slots that is the
    # identity on x ≥ 0, so variance stays flat. WN's slot is 1.71·(ReLU(x) − 0.40), applied after the sum
    # in this (the paper's standard) block, so it still amplifies every block: the authors' code marks a
    # separate "activation before residual" block as the one used for its WeightNorm experiments.
    runner = ProbeRunner(dataclasses.replace(GROWTH, skipinit=True))
    for spec in [*ACTIVATION_NORMS, "none", "sws"]:
        result = runner.run(spec)
        assert _at_most_linear(result), (spec, _normalized_variance(result))
        assert result.activation_growth < 0.05
    assert _exponential(runner.run("wn"))


# --------------------------------------------------------------------------------------------------
# CLI
CLI_ARGS = ["--depth", "8", "--width", "8", "--batch-size", "8", "--seeds", "1", "--resolution", "8"]


def test_cli_json_is_one_document_with_the_issue_schema() -> None:
    out = CliRunner().invoke(app, ["probe", "bn", "gn:groups=4", *CLI_ARGS, "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [r["spec"] for r in doc["results"]] == ["bn", "gn:groups=4"]
    for r in doc["results"]:
        assert set(r) >= {
            "spec",
            "activation_growth",
            "similarity",
            "grad_ratio",
            "step_loss_ratio",
            "unstable",
            "curves",
            "seconds",
        }
        assert set(r["curves"]) == {"variance", "similarity", "grad_norm"}
    assert doc["settings"]["depth"] == 8 and doc["settings"]["lr"] == 0.1
    reference = ProbeRunner(ProbeSettings(depth=8, width=8, batch_size=8, seeds=1, resolution=8)).run("bn")
    assert doc["results"][0]["similarity"] == reference.similarity


def test_cli_table_has_scores_and_sparklines() -> None:
    out = CliRunner().invoke(app, ["probe", "in", "ln", *CLI_ARGS], env={"COLUMNS": "220"})
    assert out.exit_code == 0, out.output
    assert "in" in out.stdout and "ln" in out.stdout and "±" in out.stdout
    assert any(ch in out.stdout for ch in "▁▂▃▄▅▆▇█")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["probe", "bogus"], "unknown preset"),
        (["probe", "gn", *CLI_ARGS], "does not divide"),
        (["probe", "bn", "--data", "cifar"], "--data"),
        (["probe", "bn", "--depth", "9"], "6n+2"),
        (["probe", "bn", "--model", "cnn", "--skipinit"], "skipinit"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2
    assert out.stdout == ""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
