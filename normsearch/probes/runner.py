"""Probe a normalizer config: ``settings.seeds`` independent (init, batch) passes, summarised as mean ± std.

``ProbeRunner(settings).run(spec)`` builds the probe network of ``settings`` (``build_model``) once per pass,
seeded by (settings.seed, pass), runs :func:`~normsearch.probes.trace.trace_network` on the pass's batch,
then :func:`~normsearch.probes.step.loss_after_step` at ``settings.lr`` with the trace's gradients on the same
network and batch, and scores both (:mod:`~normsearch.probes.scores`). When the probe data is a
language-model corpus, a pass is :func:`~normsearch.probes.transformer.probe_transformer` on seeded byte
windows of the network's context instead, with one AdamW step at ``settings.lr``, mapped onto the same scores
(:func:`~normsearch.probes.scores.transformer_scores`). The runner caches the batches, so probing many candidates
with one runner pays for the data once, and every candidate sees the same batches and, for same-shaped
convs, the same initial weights (common random numbers make candidates comparable with few seeds).
The global torch RNG state is restored after each build.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ..candidate import CandidateConfig, as_candidate
from ..models import build_model
from ..norm import Spec
from ..task import CLASSIFICATION
from .inputs import data_shape, init_seed, probe_batch, probe_task
from .scores import Scores, score, transformer_scores
from .settings import ProbeSettings
from .step import loss_after_step
from .trace import trace_network
from .transformer import probe_transformer

SCORES = ("activation_growth", "similarity", "grad_ratio", "step_loss_ratio")
"""The scalar scores of a :class:`ProbeResult`, each with its ``_std``."""


@dataclass(frozen=True)
class ProbeResult:
    """Scores of one config: means over seeds with their sample std (0 for one seed); ideal growth 0,
    similarity low, gradient ratio 1, step loss ratio below 1.

    ``activation_growth``: fitted ln-variance growth per block; ``similarity``: mean cosine similarity at
    the last block output; ``grad_ratio``: first / last conv gradient norm; ``step_loss_ratio``: loss after
    one SGD step at ``settings.lr`` over the loss before (definitions in :mod:`normsearch.probes.scores`).
    ``unstable``: some pass had NaN/inf, collapsed activations, no gradient or a non-finite loss after the
    step; its scores are then the finite worst values and ``reason`` says what happened (per pass).
    ``curves``: "variance" and "similarity" per block output, "grad_norm" per conv, means over seeds.
    ``seconds``: wall time of the whole run (network builds included).
    """

    spec: str
    activation_growth: float
    similarity: float
    grad_ratio: float
    step_loss_ratio: float
    activation_growth_std: float
    similarity_std: float
    grad_ratio_std: float
    step_loss_ratio_std: float
    unstable: bool
    reason: str | None
    curves: dict[str, list[float]]
    seconds: float
    seeds: int

    def to_dict(self) -> dict:
        """JSON-ready dict (the ``normsearch probe --json`` entry)."""
        return dataclasses.asdict(self)


def _mean_std(values: list[float]) -> tuple[float, float]:
    data = torch.tensor(values, dtype=torch.float64)
    std = float(data.std(correction=1)) if len(values) > 1 else 0.0
    return float(data.mean()), std


def summarize(spec: str, passes: list[Scores], seconds: float) -> ProbeResult:
    """Mean ± std over passes of the scores and mean curves; unstable if any pass is."""
    fields = {}
    for name in SCORES:
        fields[name], fields[f"{name}_std"] = _mean_std([getattr(p, name) for p in passes])
    curves = {
        name: torch.tensor([p.curves[name] for p in passes], dtype=torch.float64).mean(dim=0).tolist()
        for name in passes[0].curves
    }
    reasons = [f"seed {i}: {p.reason}" for i, p in enumerate(passes) if p.reason is not None]
    return ProbeResult(
        spec=spec,
        unstable=bool(reasons),
        reason="; ".join(reasons) or None,
        curves=curves,
        seconds=seconds,
        seeds=len(passes),
        **fields,
    )


class ProbeRunner:
    """Probes configs on the network and batches fixed by ``settings`` (default :class:`ProbeSettings`)."""

    def __init__(self, settings: ProbeSettings | None = None) -> None:
        self.settings = ProbeSettings() if settings is None else settings
        self.task = probe_task(self.settings)
        self._batches: dict[tuple[int, int | None], tuple[Tensor, Tensor]] = {}

    def batch(self, index: int, context: int | None = None) -> tuple[Tensor, Tensor]:
        """The (cached) inputs and labels of pass ``index`` (byte windows of ``context`` for a language
        model)."""
        key = (index, context)
        if key not in self._batches:
            self._batches[key] = probe_batch(self.settings, index, context)
        return self._batches[key]

    def _pass(self, model: torch.nn.Module, index: int) -> Scores:
        """The scores of pass ``index`` on ``model`` (changed by the step probe), as the data's task reads it."""
        if self.task is not CLASSIFICATION:
            inputs, targets = self.batch(index, model.context)
            lm = probe_transformer(
                model, inputs, targets, lr=self.settings.lr, optimizer=self.task.step_optimizer
            )
            return transformer_scores(lm)
        inputs, targets = self.batch(index)
        trace = trace_network(model, inputs, targets)
        after = loss_after_step(model, inputs, targets, trace.parameter_grads, lr=self.settings.lr)
        return score(trace, (trace.loss, after))

    def network(self, spec: Spec | CandidateConfig, index: int) -> torch.nn.Module:
        """The freshly initialised probe network of pass ``index``, built with the candidate's network options
        (global RNG state left as it was)."""
        s = self.settings
        candidate = as_candidate(spec)
        in_channels, num_classes = data_shape(s)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed(s, index))
            return build_model(
                s.model,
                candidate.layer,
                depth=s.depth,
                width=s.width,
                num_classes=num_classes,
                in_channels=in_channels,
                skipinit=s.skipinit,
                resolution=s.resolution,
                network=candidate.options,
            )

    def run(self, spec: Spec | CandidateConfig) -> ProbeResult:
        """Probe one candidate (a layer spec, or a layer with network options: a
        :class:`~normsearch.models.CandidateConfig` or its string). Raises ``ValueError`` if the spec is
        invalid or does not fit the network; numerical trouble never raises (see :class:`ProbeResult`)."""
        candidate = as_candidate(spec)
        start = time.perf_counter()
        passes = []
        for index in range(self.settings.seeds):
            passes.append(self._pass(self.network(candidate, index), index))
        return summarize(candidate.spec(), passes, time.perf_counter() - start)


def probe(spec: Spec | CandidateConfig, settings: ProbeSettings | None = None) -> ProbeResult:
    """``ProbeRunner(settings).run(spec)``: probe one config with fresh caches."""
    return ProbeRunner(settings).run(spec)


__all__ = ["SCORES", "ProbeResult", "ProbeRunner", "probe", "summarize"]
