"""The docstring's account of a config's computation: partition, formula and the symbols it uses.

Everything here is derived from a validated :class:`~normsearch.norm.NormConfig` (choices and numbers),
never from free text.
"""

from __future__ import annotations

import textwrap

from ..norm import NormConfig

WIDTH = 84
"""Docstring text width: class docstrings sit at one indent, so lines stay within 88 characters."""

PARTITION_SETS: dict[str, str] = {
    "batch": "each channel over (N, *S), i.e. across the batch",
    "layer": "each sample over (C, *S)",
    "instance": "each sample and channel over *S",
    "group": "each sample and group of C/G contiguous channels over (C/G, *S)",
    "position": "each sample and position over C",
    "batch_group": "each group of C/G contiguous channels over (N, C/G, *S), i.e. across the batch",
}
"""Π: the sets of elements that share statistics, for an input of shape (N, C, *S)."""

ACTIVATION_NOTE = (
    "This layer ends in its own nonlinearity: in normsearch's networks it takes the place of the "
    "ReLU that would follow the norm (drop that ReLU to reproduce them)."
)

_STAT_NAMES = {"μ": "mean", "σ²": "biased variance", "E[x²]": "mean square"}


def _group_text(cfg: NormConfig) -> str:
    if cfg.groups is not None:
        return f" G = ``groups`` (default {cfg.groups})."
    if cfg.group_size is not None:
        return f" C/G = ``group_size`` (default {cfg.group_size})."
    return ""


def formula(cfg: NormConfig) -> str:
    """``y = …`` for this config, in the notation of :mod:`normsearch.norm.functional`."""
    if cfg.normalizes_activations:
        num = "(x - μ)" if cfg.center else "x"
        den = {"std": "sqrt(σ² + eps)", "rms": "sqrt(E[x²] + eps)", "none": None}[cfg.scale]
        if cfg.act == "evo_b0":
            den = f"max({den}, v · x + sqrt(σ²_inst + eps))"
        core = num if den is None else f"{num} / {den}"
        if cfg.act == "evo_s0":
            core = f"{core} · sigmoid(v · x)"
    else:
        core = "x"
    if cfg.act == "dyt":
        core = f"tanh(α · {core})"
    if cfg.act == "derf":
        core = f"erf(α · {core} + s)"
    expr = {"full": f"γ · {core} + β", "gain": f"γ · {core}", "none": core}[cfg.affine]
    if cfg.act == "tlu":
        expr = f"max({expr}, τ)"
    if expr.startswith("(") and expr.endswith(")") and expr.count("(") == 1:
        expr = expr[1:-1]
    return f"y = {expr}"


def _statistics_symbols(cfg: NormConfig) -> list[str]:
    symbols = ["μ"] if cfg.center else []
    if cfg.scale == "std":
        symbols.append("σ²")
    elif cfg.scale == "rms":
        symbols.append("E[x²]")
    return symbols


def _symbol_lines(cfg: NormConfig) -> list[str]:
    lines = []
    if cfg.normalizes_activations:
        symbols = _statistics_symbols(cfg)
        names = ", ".join(_STAT_NAMES[s] for s in symbols)
        lines.append(f"{', '.join(symbols)}: {names} of x over each of those sets.")
    if cfg.act in ("evo_s0", "evo_b0"):
        lines.append("v (``v``, init 1): per channel.")
    if cfg.act == "evo_b0":
        lines.append("σ²_inst: biased variance of each sample and channel over *S.")
    lines += {
        "full": ["γ (``weight``, init 1), β (``bias``, init 0): per channel."],
        "gain": ["γ (``weight``, init 1): per channel."],
        "none": [],
    }[cfg.affine]
    if cfg.act == "tlu":
        lines.append("τ (``tau``, init 0): per-channel threshold (TLU, Singh & Krishnan 2020).")
    if cfg.act == "dyt":
        lines.append(f"α (``alpha``, init {cfg.alpha_init:g}): one learnable scalar (DyT, Zhu et al. 2025).")
    if cfg.act == "derf":
        lines.append(
            f"α (``alpha``, init {cfg.alpha_init:g}), s (``shift``, init 0): learnable scalars (Derf, "
            "Chen et al. 2025)."
        )
    return lines


def _mode_paragraphs(cfg: NormConfig) -> list[list[str]]:
    """How training and eval mode differ: running estimates, or batch statistics in both modes."""
    if not cfg.running:
        if cfg.partition in ("batch", "batch_group"):
            return [["No running estimates: eval mode uses batch statistics too."]]
        return []
    rms = " (E[x²] = σ² + μ²)" if cfg.scale == "rms" else ""
    intro = (
        "Training mode uses the batch's μ and σ² and updates the running estimates ``running_mean`` "
        "and ``running_var`` (σ² unbiased, as torch's batch norm) and counts ``num_batches_tracked``:"
    )
    return [
        textwrap.wrap(intro, WIDTH),
        ["    running = (1 - momentum) · running + momentum · batch value"],
        [f"Eval mode uses the running estimates{rms}."],
    ]


def _partition_text(cfg: NormConfig) -> str:
    if cfg.normalizes_activations:
        return f"Statistics are shared by {PARTITION_SETS[cfg.partition]}.{_group_text(cfg)}"
    if cfg.affine == "none" and cfg.act == "none":
        return "No statistics and no parameters: the input passes through unchanged."
    return "No statistics of the input: only the per-channel recovery step."


def describe(cfg: NormConfig, kernel_note: str) -> list[list[str]]:
    """Docstring paragraphs after the summary: input and partition, formula, symbols, modes, kernel."""
    head = "Input (N, C, *S) with C = ``num_channels``; output of the same shape. " + _partition_text(cfg)
    if cfg.layout == "tokens":
        head = (
            "Input (N, *L, C), channels last as in transformers, with C = ``num_channels``; output of the "
            "same shape. It is normalized as its channels-first view (N, C, *L), so *S below is *L. "
        ) + _partition_text(cfg)
    paragraphs = [textwrap.wrap(head, WIDTH), [f"    {formula(cfg)}"]]
    paragraphs += [lines for lines in [_symbol_lines(cfg)] if lines] + _mode_paragraphs(cfg)
    if cfg.act not in ("none", "dyt", "derf"):
        paragraphs.append(textwrap.wrap(ACTIVATION_NOTE, WIDTH))
    if kernel_note:
        paragraphs.append(textwrap.wrap(kernel_note, WIDTH))
    return paragraphs
