"""timm's norm+act contract (normsearch/norm/norm_act.py) on the real timm convnets that use it: with ``bn``
the candidate's model is timm's own (BatchNormAct2d) model, activation for activation and output for
output; any candidate that fits builds, probes and trains."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import BatchNormAct2d

from normsearch.confirm import ConfirmSettings
from normsearch.norm import UnifiedNorm, UnifiedNormAct, norm_act_layer, norm_layer, parse_spec
from normsearch.probes import ProbeRunner, ProbeSettings
from normsearch.sources import resolve_model
from normsearch.train import train

MODELS = ("efficientnet_b0", "regnety_002")


def _norm_acts(model: torch.nn.Module, kind: type) -> dict[str, type]:
    """Module name → the class of the activation its norm+act layer holds (Identity: none)."""
    return {name: type(m.act) for name, m in model.named_modules() if isinstance(m, kind)}


@pytest.mark.parametrize("arch", MODELS)
def test_bn_through_the_norm_act_contract_is_timms_own_model(arch: str, one_thread) -> None:
    torch.manual_seed(0)
    reference = timm.create_model(arch, num_classes=4)  # BatchNormAct2d everywhere
    ours = timm.create_model(arch, num_classes=4, norm_layer=norm_act_layer("bn"))
    expected = _norm_acts(reference, BatchNormAct2d)
    assert len(expected) > 10 and set(expected.values()) != {torch.nn.Identity}  # the model's activations
    assert _norm_acts(ours, UnifiedNormAct) == expected  # the same activation in every slot
    ours.load_state_dict(reference.state_dict())  # the same parameter and buffer names
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)  # train mode: batch statistics
    reference.eval(), ours.eval()
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)  # running estimates


def test_the_plain_factory_names_the_norm_act_one_for_timm() -> None:
    with pytest.raises(TypeError, match=r"inplace; accepted: .*take normsearch.norm_act_layer\(spec\)"):
        timm.create_model("efficientnet_b0", norm_layer=norm_layer("bn"))
    plain = norm_act_layer("gn:groups=2")(8)  # called as a plain norm layer: no activation
    assert isinstance(plain, UnifiedNorm) and isinstance(plain.act, torch.nn.Identity)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(plain(x), torch.nn.functional.group_norm(x, 2, plain.weight, plain.bias))


@pytest.mark.parametrize("spec", ["gn:group_size=8", "evonorm_s0:group_size=8", "frn", "ln", "dyt"])
def test_candidates_build_and_backpropagate_on_timm_convnets(spec: str, one_thread) -> None:
    for arch in MODELS:
        torch.manual_seed(0)
        model = resolve_model(f"timm:{arch}").build(
            parse_spec(spec), num_classes=3, in_channels=1, resolution=16
        )
        slots = [m for m in model.modules() if isinstance(m, UnifiedNormAct)]
        assert slots and all(m.config == slots[0].config for m in slots)
        model(torch.randn(2, 1, 16, 16)).sum().backward()
        assert all(p.grad is not None for p in slots[0].parameters())


@pytest.mark.slow
@pytest.mark.parametrize("arch", MODELS)
def test_timm_convnets_probe_and_train(arch: str, one_thread) -> None:
    spec, model = "gn:group_size=8", f"timm:{arch}"
    result = ProbeRunner(ProbeSettings(model=model, batch_size=4, seeds=1, resolution=16)).run(spec)
    assert not result.unstable and len(result.curves["grad_norm"]) > 3
    settings = ConfirmSettings(model=model, steps=1, batch_size=4, resolution=16, device="cpu", lr=0.01)
    trained = train(spec, settings, seed=0)
    assert 0 <= trained.accuracy <= 1
