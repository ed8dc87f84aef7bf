"""``gpt``: a decoder-only byte-level language model whose every norm slot is the candidate's layer.

Input (N, L) int64 bytes with L ≤ ``context``; output (N, L, 256) next-byte logits. Token embedding (256 ×
C) plus a learned position embedding (context × C), ``depth`` blocks, an optional final norm and a linear head
(256 outputs, no bias, untied). C = ``width``, H = ``heads``, head dim d = C / H. A block has two branches,
causal self-attention A and an MLP M (C → 4C → GELU → C), placed on the residual stream x as ``placement``
says, with N the norm slots and s = 1/√ℓ when ``depth_scaling`` (ℓ the block's 1-based index; LayerNorm
Scaling, Sun et al. 2025, arXiv 2502.05795), else s = 1:

- ``pre`` (GPT-2, Pre-LN):  x ← x + A(s·N₁(x)),  x ← x + M(s·N₂(x));
- ``post`` (the original Transformer, Post-LN):  x ← s·N₁(x + A(x)),  x ← s·N₂(x + M(x));
- ``peri`` (Peri-LN, Kim et al. 2025, arXiv 2502.02732; Gemma/OLMo's "sandwich"):
  x ← x + s·N₁'(A(s·N₁(x))),  x ← x + s·N₂'(M(s·N₂(x)));
- ``mix`` (Mix-LN, Li et al. 2024, arXiv 2412.13795): ``post`` in the first ⌊depth/4⌋ blocks (the paper's
  Post-LN ratio α = 0.25), ``pre`` in the others.

``final_norm``: x ← N_f(x) before the head (not depth-scaled). ``qk_norm``: queries and keys of each head
pass through their own candidate layer over the head dim d before the dot product (Dehghani et al. 2023;
Wortsman et al. 2023, arXiv 2309.14322); not depth-scaled. Attention: logits q·kᵀ/√d, causal mask, softmax.

Every norm slot is ``build_norm(cfg.replace(layout="tokens"), C or d)``: a ``UnifiedNorm`` over the last
dim. Only partitions whose statistics stay within one position are causal (``position``: the transformer
LayerNorm/RMSNorm; ``none``: DyT/Derf, affine-only, no norm); the others (``batch``, ``layer``, ``instance``,
``group``, ``batch_group``) average over positions, so a later byte would leak into an earlier prediction,
and they are refused with a ``ValueError``, as are weight schemes (the network has no convs).

Init (GPT-2, ``init_std`` None): every linear and embedding weight N(0, 0.02²), biases 0, the two residual
projections (A's output and M's second linear) N(0, (0.02/√(2·depth))²). ``init_std`` σ: every linear and
embedding weight N(0, σ²), no residual scaling (σ = 1/√C is the Xavier-like scale under which Xiong et al.
2020 analyse Post-LN: branch outputs as large as the stream). Norm layers keep their own init.

Probe points: :meth:`GPT.block_modules` (block outputs, the residual stream), :meth:`GPT.branch_modules`
(each block's A and M, whose outputs are the branch outputs), :meth:`GPT.attention_modules` (with
``explicit = True`` their ``logits`` / ``probs`` identity modules see the (N, H, L, L) pre-mask logits and
the attention probabilities; otherwise attention runs on ``F.scaled_dot_product_attention``, the same
numbers up to rounding) and :attr:`GPT.final` (the final norm, or None).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .norm import NormConfig, UnifiedNorm, as_config, build_norm
from .norm.config import Allowed

VOCAB = 256
PLACEMENTS = ("pre", "post", "peri", "mix")
CAUSAL_PARTITIONS = ("position", "none")
INIT_STD = 0.02
MLP_RATIO = 4

NETWORK_OPTIONS: dict[str, tuple[Any, Allowed]] = {
    "heads": (4, Allowed(kind=int, low=1, low_closed=True)),
    "context": (64, Allowed(kind=int, low=1, low_closed=True)),
    "placement": ("pre", Allowed(choices=PLACEMENTS)),
    "qk_norm": (False, Allowed(kind=bool)),
    "final_norm": (True, Allowed(kind=bool)),
    "depth_scaling": (False, Allowed(kind=bool)),
    "init_std": (None, Allowed(kind=float, low=0.0, high=10.0, null="GPT-2's init")),
}
"""The keyword-only options of :func:`build_gpt` beyond depth and width: name → (default, what is allowed)."""


def block_placements(placement: str, depth: int) -> list[str]:
    """Each block's own placement (``pre``, ``post`` or ``peri``): ``mix`` is ``post`` for the first
    ⌊depth/4⌋ blocks and ``pre`` after."""
    if placement == "mix":
        return ["post" if i < depth // 4 else "pre" for i in range(depth)]
    return [placement] * depth


class Attention(nn.Module):
    """Causal multi-head self-attention, (N, L, C) → (N, L, C); optional q/k norms over the head dim."""

    def __init__(self, cfg: NormConfig, width: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.q_norm = build_norm(cfg, self.head_dim) if qk_norm else None
        self.k_norm = build_norm(cfg, self.head_dim) if qk_norm else None
        self.logits = nn.Identity()
        self.probs = nn.Identity()
        self.explicit = False

    def forward(self, x: Tensor) -> Tensor:
        n, length, width = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.explicit:
            logits = self.logits(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim))
            mask = torch.ones(length, length, dtype=torch.bool, device=x.device).triu_(1)
            probs = self.probs(logits.masked_fill(mask, float("-inf")).softmax(-1))
            y = probs @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(n, length, width))


class MLP(nn.Module):
    """C → 4C → GELU → C on (N, L, C)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, MLP_RATIO * width)
        self.proj = nn.Linear(MLP_RATIO * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """One transformer block with its norms placed as ``placement`` (``pre``, ``post``, ``peri``) says;
    ``scale`` is s of the module docstring. (N, L, C) → (N, L, C)."""

    def __init__(
        self, cfg: NormConfig, width: int, heads: int, *, placement: str, qk_norm: bool, scale: float
    ) -> None:
        super().__init__()
        self.placement, self.scale = placement, scale
        self.attn = Attention(cfg, width, heads, qk_norm)
        self.mlp = MLP(width)
        self.norm1, self.norm2 = build_norm(cfg, width), build_norm(cfg, width)
        peri = placement == "peri"
        self.norm1_out = build_norm(cfg, width) if peri else None
        self.norm2_out = build_norm(cfg, width) if peri else None

    def _norm(self, norm: nn.Module, x: Tensor) -> Tensor:
        y = norm(x)
        return y if self.scale == 1.0 else y * self.scale

    def forward(self, x: Tensor) -> Tensor:
        if self.placement == "post":
            x = self._norm(self.norm1, x + self.attn(x))
            return self._norm(self.norm2, x + self.mlp(x))
        if self.placement == "peri":
            x = x + self._norm(self.norm1_out, self.attn(self._norm(self.norm1, x)))
            return x + self._norm(self.norm2_out, self.mlp(self._norm(self.norm2, x)))
        x = x + self.attn(self._norm(self.norm1, x))
        return x + self.mlp(self._norm(self.norm2, x))


class GPT(nn.Module):
    """The byte-level decoder of the module docstring. ``forward(tokens (N, L)) -> logits (N, L, 256)``."""

    def __init__(
        self,
        cfg: NormConfig,
        *,
        depth: int,
        width: int,
        heads: int,
        context: int,
        placement: str,
        qk_norm: bool,
        final_norm: bool,
        depth_scaling: bool,
        init_std: float | None,
    ) -> None:
        super().__init__()
        self.context, self.depth, self.width = context, depth, width
        self.config = cfg
        self.tokens = nn.Embedding(VOCAB, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(
            Block(
                cfg,
                width,
                heads,
                placement=kind,
                qk_norm=qk_norm,
                scale=1 / math.sqrt(layer) if depth_scaling else 1.0,
            )
            for layer, kind in enumerate(block_placements(placement, depth), start=1)
        )
        self.final = build_norm(cfg, width) if final_norm else None
        self.head = nn.Linear(width, VOCAB, bias=False)
        self._init_weights(init_std)

    def _init_weights(self, init_std: float | None) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=INIT_STD if init_std is None else init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        if init_std is not None:
            return
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=INIT_STD / math.sqrt(2 * self.depth))

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"gpt takes at most context={self.context} tokens, got {length}")
        x = self.tokens(tokens) + self.positions(torch.arange(length, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        if self.final is not None:
            x = self.final(x)
        return self.head(x)

    def block_modules(self) -> list[Block]:
        """The blocks, whose outputs are the residual stream after each block (N, L, C)."""
        return list(self.blocks)

    def branch_modules(self) -> list[tuple[Attention, MLP]]:
        """Each block's (attention, MLP): their outputs are the branch outputs (N, L, C)."""
        return [(block.attn, block.mlp) for block in self.blocks]

    def attention_modules(self) -> list[Attention]:
        """Each block's attention (set ``explicit`` to read ``logits`` / ``probs``)."""
        return [block.attn for block in self.blocks]

    def norm_slots(self) -> list[UnifiedNorm]:
        """Every norm slot (the candidate's layer), in registration order."""
        return [m for m in self.modules() if isinstance(m, UnifiedNorm)]


def _check(name: str, value: Any, allowed: Allowed, *, none_ok: bool = False) -> None:
    problem = allowed.problem(value, none_ok=none_ok)
    if problem is not None:
        raise ValueError(f"gpt option '{name}' must be {problem}, got {value!r}")


def build_gpt(
    spec: NormConfig | str,
    *,
    depth: int,
    width: int,
    num_classes: int = VOCAB,
    in_channels: int = 1,
    skipinit: bool = False,
    heads: int = 4,
    context: int = 64,
    placement: str = "pre",
    qk_norm: bool = False,
    final_norm: bool = True,
    depth_scaling: bool = False,
    init_std: float | None = None,
) -> GPT:
    """A freshly initialised :class:`GPT` (torch's global RNG) normalized by ``spec`` in tokens layout.

    ``num_classes`` must be 256 (bytes) and ``in_channels`` is ignored (the input is bytes); ``skipinit``
    belongs to the ResNet. Defaults: Pre-LN, no QK-norm, a final norm, no depth scaling, GPT-2's init. Raises
    ``ValueError`` naming the option for a bad option, a non-causal partition or a weight scheme."""
    cfg = as_config(spec)
    _check("depth", depth, Allowed(kind=int, low=1, low_closed=True))
    _check("width", width, Allowed(kind=int, low=1, low_closed=True))
    options = {
        "heads": heads,
        "context": context,
        "placement": placement,
        "qk_norm": qk_norm,
        "final_norm": final_norm,
        "depth_scaling": depth_scaling,
        "init_std": init_std,
    }
    for name, value in options.items():
        default, allowed = NETWORK_OPTIONS[name]
        _check(name, value, allowed, none_ok=default is None)
    if width % heads:
        raise ValueError(f"gpt option 'heads'={heads} does not divide width={width}")
    if num_classes != VOCAB:
        raise ValueError(f"gpt predicts bytes: num_classes must be {VOCAB} (data text), got {num_classes}")
    if skipinit:
        raise ValueError("skipinit applies to the residual network only (model resnet), not gpt")
    if cfg.partition not in CAUSAL_PARTITIONS:
        raise ValueError(
            f"gpt needs causal norms: partition={cfg.partition} averages over positions, so later bytes "
            f"leak into earlier predictions; allowed: {', '.join(CAUSAL_PARTITIONS)} "
            "(pn is the transformer LayerNorm, pn:center=false,scale=rms,affine=gain RMSNorm)"
        )
    if cfg.weight != "none":
        raise ValueError(f"gpt has no convs for weight={cfg.weight} to reparametrize; allowed: none")
    tokens_cfg = cfg if cfg.layout == "tokens" else cfg.replace(layout="tokens")
    return GPT(tokens_cfg, depth=depth, width=width, **options)


__all__ = [
    "CAUSAL_PARTITIONS",
    "GPT",
    "NETWORK_OPTIONS",
    "PLACEMENTS",
    "VOCAB",
    "Attention",
    "Block",
    "block_placements",
    "build_gpt",
]
