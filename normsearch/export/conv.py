"""The conv wrapper of weight-based schemes, written out as in :mod:`normsearch.norm.conv`.

Same class names, parameter names (``weight``, ``bias``, ``gain``) and formulas, so state dicts move between
``build_conv`` and the exported class both ways.
"""

from __future__ import annotations

from ..norm import NormConfig
from .codefmt import bracketed

_WEIGHT_NORM = [
    "class WeightNormConv2d(nn.Conv2d):",
    '    """Conv2d with Ŵ = g · W / (‖W‖ + eps) per output filter (Salimans & Kingma 2016).',
    "",
    "    W: ``weight`` (C_out, C_in/groups, kh, kw); g: ``gain`` (C_out, 1, 1, 1), init 1; ‖·‖ over each",
    "    filter. Takes nn.Conv2d's arguments, plus ``eps``.",
    '    """',
    "",
    "{init}",
    "        super().__init__(*args, **kwargs)",
    "        self.eps = eps",
    "        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))",
    "",
    "    def effective_weight(self) -> Tensor:",
    "        norm = torch.linalg.vector_norm(self.weight, dim=(1, 2, 3), keepdim=True)",
    "        return self.gain * self.weight / (norm + self.eps)",
    "",
    "    def forward(self, x: Tensor) -> Tensor:",
    "        return self._conv_forward(x, self.effective_weight(), self.bias)",
]

_SCALED_WS = [
    "RELU_GAIN = math.sqrt(2 * math.pi / (math.pi - 1))",
    '"""√(2π/(π-1)): the gain that keeps ReLU activations at unit variance (NF-ResNets)."""',
    "",
    "",
    "class ScaledStdConv2d(nn.Conv2d):",
    '    """Conv2d with Scaled Weight Standardization (Brock et al. 2021).',
    "",
    "        Ŵ = RELU_GAIN · g · (W - mean) / ((std + eps) · sqrt(fan_in))",
    "",
    "    W: ``weight`` (C_out, C_in/groups, kh, kw); mean and biased std per output filter;",
    "    g: ``gain`` (C_out, 1, 1, 1), init 1; fan_in = C_in/groups · kh · kw.",
    "    Takes nn.Conv2d's arguments, plus ``eps``.",
    '    """',
    "",
    "{init}",
    "        super().__init__(*args, **kwargs)",
    "        self.eps = eps",
    "        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))",
    "",
    "    def effective_weight(self) -> Tensor:",
    "        fan_in = self.weight[0].numel()",
    "        std, mean = torch.std_mean(",
    "            self.weight, dim=(1, 2, 3), correction=0, keepdim=True",
    "        )",
    "        scale = RELU_GAIN / math.sqrt(fan_in)",
    "        return scale * self.gain * (self.weight - mean) / (std + self.eps)",
    "",
    "    def forward(self, x: Tensor) -> Tensor:",
    "        return self._conv_forward(x, self.effective_weight(), self.bias)",
]

_CONV_SOURCES = {"weight_norm": _WEIGHT_NORM, "scaled_ws": _SCALED_WS}

CONV_CLASS_NAMES = {"weight_norm": "WeightNormConv2d", "scaled_ws": "ScaledStdConv2d"}


def conv_lines(cfg: NormConfig) -> list[str]:
    """Module-level lines of the conv wrapper for ``cfg.weight`` (none for ``weight = none``)."""
    if cfg.weight == "none":
        return []
    params = ["self", "*args: Any", f"eps: float = {cfg.eps!r}", "**kwargs: Any"]
    init = bracketed("def __init__(", params, ") -> None:", 1)
    lines: list[str] = []
    for line in _CONV_SOURCES[cfg.weight]:
        lines += init if line == "{init}" else [line]
    return lines
