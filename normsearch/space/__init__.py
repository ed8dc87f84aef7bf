"""Search-space files: load and validate a YAML space over the normalizer's options, and sample it.

A space file has these top-level sections; only ``space`` is required::

    description: one line, shown by ``normsearch space list``
    space:       per option of NormConfig (or ``preset``): a fixed value or a distribution (see below)
    network:     per option of the network (:func:`normsearch.models.network_options`), the same forms
    probe:       ProbeSettings (network, batch, seeds, inputs) the candidates are scored with; the network,
                 resolution, data and learning rate not given here follow ``confirm`` (:func:`matched_probe`)
    objective:   weights: {similarity, step_loss_ratio, activation_growth, grad_ratio} of the scalar score
    search:      SearchSettings: trial budget, timeout, sampler, seed, baselines
    confirm:     ConfirmSettings: which candidates get short training runs, and how

Each entry of ``space`` is one of, in Optuna's vocabulary:

- a fixed value: ``partition: group``;
- ``{choices: [v, ...]}``: a categorical choice;
- ``{low: a, high: b}`` with optional ``log: true`` or ``step: s``: an int range for ``groups`` /
  ``group_size``, a float range for ``eps`` / ``momentum``;
- ``{value: v}``: a fixed value, for use with ``when``;

and may carry ``when: {option: value or [values]}``: the entry applies only in trials where each named
option (declared above it, in either section, fixed or categorical) took one of those values. An option may also be a list of
such entries, its *variants*: the first whose ``when`` holds applies, and the last may omit ``when`` (the
"otherwise" case). An option no entry applies to keeps NormConfig's default.

Optuna parameter names: an entry without ``when`` is named after its option; a conditional one
``<branch>.<option>`` with branch ``key=value`` (values ``|``-joined, keys ``,``-joined), for example
``partition=group.group_size``. Each name so keeps a single distribution, as Optuna requires.

The objective weights are those of the scalar score (:class:`~normsearch.score.ScoreWeights`; the formula
and why: :mod:`normsearch.score`).

Modules: :mod:`.load` (the file: YAML, sections, every problem found), :mod:`.entries` (the ``space:``
section's entries), :mod:`.checks` (what each option may take: NormConfig's own rules), :mod:`.model` (the
space: :class:`Param`, :class:`SearchSpace`), :mod:`.sections` (``search:`` settings; the probe network
following ``confirm:``), :mod:`.fit` (group values against the probe network's channels), :mod:`.problems`
(:class:`SpaceError`).
"""

from ..score import ScoreWeights
from .checks import OPTION_CHECKS
from .load import load_space, parse_space, resolve, shipped_spaces
from .model import Param, SearchSpace, format_options
from .problems import SpaceError
from .sections import MATCHED, SAMPLERS, SearchSettings, matched_probe, probe_differences

__all__ = [
    "MATCHED",
    "OPTION_CHECKS",
    "SAMPLERS",
    "Param",
    "ScoreWeights",
    "SearchSettings",
    "SearchSpace",
    "SpaceError",
    "format_options",
    "load_space",
    "matched_probe",
    "parse_space",
    "probe_differences",
    "resolve",
    "shipped_spaces",
]
