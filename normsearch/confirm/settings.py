"""Confirmation settings: which candidates get short training runs, and how they are trained.

Multi-fidelity: the rungs train for ⌊``epochs`` / ``eta``^k⌋ epochs, k = K, …, 1, 0, with K the largest
k whose budget is still ≥ ``min_epochs`` (see :func:`rung_epochs`). Each rung trains every admitted candidate at
every learning rate ``lr`` · f, f in ``lr_factors``.

``default`` is the layer a user would pick without a search (a norm spec; the space file's top-level
``default:`` key, BN unless it says otherwise): it is always admitted and always trained at the final
budget, with the winner's seeds, so the leaderboard can say whether the winner beats it. ``max_cost`` caps
what the confirmation may train (:func:`schedule_cost`), the default included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..candidate import CandidateConfig
from ..data import DATA_FORMS, check_data_name
from ..models import MAX_DEPTH, MAX_RESOLUTION, MAX_WIDTH, network_problem
from ..settings import SettingsError, check_fields
from ..sources import FORMS, check_model_name

DEFAULT_LAYER = "bn"
"""The default of :attr:`ConfirmSettings.default`: BatchNorm, what a CNN uses unless told otherwise."""


def check_default(spec: str) -> None:
    """A valid norm spec, or a candidate string with network options (``ValueError`` naming what is wrong
    otherwise)."""
    CandidateConfig.parse(spec)


DATASETS = ("digits", "synthetic", "cifar10", "cifar100", "mnist", "fashionmnist")
AUGMENTS = ("auto", "none", "flip")


@dataclass(frozen=True)
class ConfirmSettings:
    """Settings of the confirmation stage (validated on construction; see :mod:`normsearch.settings`)."""

    top_k: int = field(
        default=3, metadata={"min": 0, "help": "best candidates by score admitted to the first rung"}
    )
    explore: int = field(
        default=3,
        metadata={
            "min": 0,
            "help": "Pareto-front candidates admitted besides the top-k (best on each objective first)",
        },
    )
    baselines: bool = field(
        default=True,
        metadata={
            "help": "also admit the enqueued baseline layers (after the top-k and explorers; max_cost applies)"
        },
    )
    default: str = field(
        default=DEFAULT_LAYER,
        metadata={
            "check": check_default,
            "help": "the layer a user would pick anyway (a norm spec): always trained at the final budget",
        },
    )
    max_cost: float | None = field(
        default=0.3,
        metadata={
            "min": 0.0,
            "help": "most the multi-fidelity schedule may train, as a fraction of confirm --all's runs × epochs "
            "(admissions cut, random first, then baselines, explorers, top-k; the default and the best "
            "candidate always stay); null: no cap",
        },
    )
    random: int = field(
        default=0, metadata={"min": 0, "help": "extra random candidates, for calibration spread"}
    )
    dataset: str = field(
        default="digits", metadata={"check": check_data_name, "help": f"training data: {DATA_FORMS}"}
    )
    resolution: int | None = field(
        default=None,
        metadata={
            "min": 4,
            "max": MAX_RESOLUTION,
            "help": "input height = width; null: the dataset's own (digits 8)",
        },
    )
    data_dir: str = field(default="data", metadata={"help": "where torchvision datasets are stored"})
    download: bool = field(default=False, metadata={"help": "download torchvision datasets if missing"})
    model: str = field(
        default="resnet",
        metadata={"check": check_model_name, "help": f"trained network: {FORMS} (normsearch.sources)"},
    )
    depth: int = field(
        default=14, metadata={"min": 2, "max": MAX_DEPTH, "help": "ResNet depth (6n+2) or CNN conv layers"}
    )
    width: int = field(
        default=32, metadata={"min": 1, "max": MAX_WIDTH, "help": "channels of the first stage"}
    )
    skipinit: bool = field(default=False, metadata={"help": "ResNet residual scale s init 0 (SkipInit)"})
    augment: str = field(
        default="auto",
        metadata={
            "choices": AUGMENTS,
            "help": "flip: random horizontal flips; auto: flip for CIFAR, else none",
        },
    )
    epochs: int = field(
        default=3, metadata={"min": 1, "help": "training epochs of the last rung (the final budget)"}
    )
    min_epochs: int = field(default=1, metadata={"min": 1, "help": "training epochs of the first rung"})
    eta: int = field(
        default=3,
        metadata={
            "min": 2,
            "help": "successive halving: the best 1/eta advance; budgets grow by eta per rung",
        },
    )
    steps: int | None = field(
        default=None, metadata={"min": 1, "help": "cap on optimizer steps (overrides epochs)"}
    )
    batch_size: int = field(default=64, metadata={"min": 1, "help": "training batch size"})
    optimizer: str = field(default="sgd", metadata={"choices": ("sgd", "adam", "adamw"), "help": "optimizer"})
    lr: float = field(default=0.1, metadata={"min": 0.0, "help": "peak learning rate"})
    lr_factors: tuple[float, ...] = field(
        default=(1.0, 0.25),
        metadata={"min": 0.0, "help": "each candidate trains at lr × each factor; its best counts"},
    )
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0, "help": "SGD momentum"})
    weight_decay: float = field(
        default=1e-4, metadata={"min": 0.0, "help": "L2 weight decay, all parameters"}
    )
    schedule: str = field(
        default="cosine",
        metadata={"choices": ("constant", "cosine", "step"), "help": "learning-rate schedule"},
    )
    warmup_epochs: float = field(default=0.0, metadata={"min": 0.0, "help": "linear warmup length"})
    seeds: int = field(default=1, metadata={"min": 1, "help": "training seeds per candidate"})
    seed: int = field(
        default=0, metadata={"min": 0, "help": "base seed: runs use seed, seed+1, ...; fixes the random pick"}
    )
    device: str = field(
        default="auto", metadata={"choices": ("auto", "cpu", "cuda"), "help": "auto: CUDA when available"}
    )
    threads: int | None = field(
        default=1,
        metadata={"min": 1, "help": "torch CPU threads while training; null: torch's default (all cores)"},
    )
    amp: bool = field(default=False, metadata={"help": "bf16 autocast on CUDA"})
    channels_last: bool = field(default=False, metadata={"help": "channels_last memory format on CUDA"})
    compile: bool = field(
        default=False,
        metadata={
            "help": "torch.compile the network for the training steps (evaluation stays eager); costs "
            "seconds of compiling per run, so it pays only on long runs"
        },
    )
    small_batch: int | None = field(default=None, metadata={"min": 1, "help": "retrain at this batch size"})

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "default", CandidateConfig.parse(self.default).spec())  # one spelling
        if self.min_epochs > self.epochs:
            raise SettingsError("min_epochs", f"must be <= epochs ({self.epochs}), got {self.min_epochs}")
        problem = network_problem(
            self.model,
            depth=self.depth,
            width=self.width,
            resolution=self.resolution,
            batch_size=max(self.batch_size, self.small_batch or 0),
        )
        if problem is not None:
            raise SettingsError(*problem)

    def learning_rates(self) -> list[float]:
        """The learning rates each candidate is trained at: lr · f for f in ``lr_factors`` (repeats dropped)."""
        return list(dict.fromkeys(self.lr * f for f in self.lr_factors))


def rung_steps(settings: ConfirmSettings, epochs: int) -> int | None:
    """The step cap of a rung of ``epochs`` epochs: None without ``steps``; else ``steps`` scaled as the
    rung's epochs are, max(1, round(steps · epochs / settings.epochs)) (steps 300, rungs [1, 3] of 3 epochs:
    100 and 300 steps), so rungs differ in budget even when one epoch is longer than the cap (text)."""
    if settings.steps is None:
        return None
    return max(1, round(settings.steps * epochs / settings.epochs))


def rung_epochs(settings: ConfirmSettings) -> list[int]:
    """Epochs of each rung, from the first: ⌊epochs / eta^k⌋ for k = K … 0, with K the largest k such that
    epochs / eta^k ≥ min_epochs (epochs 3, eta 3: [1, 3]; epochs 10: [1, 3, 10]; min_epochs = epochs: one rung)."""
    k = 0
    while settings.epochs / settings.eta ** (k + 1) >= settings.min_epochs:
        k += 1
    return list(dict.fromkeys(settings.epochs // settings.eta**j for j in range(k, -1, -1)))


def schedule_cost(admitted: int, configs: int, settings: ConfirmSettings) -> float:
    """The most the multi-fidelity schedule trains for ``admitted`` candidates, as a fraction of what
    ``confirm --all`` trains for ``configs`` configs, counted in runs × epochs (seeds and batch cancel):

        cost = Σ_r a_r · e_r / (configs · L · e_K),   a_0 = admitted · L,   a_{r+1} = ⌊a_r / eta⌋ + 1,

    with L learning rates, e_r the :func:`rung_epochs`, and ⌊a_r / eta⌋ ≥ 1 the promoted arms plus the
    default's arm, which always advances besides them (:func:`~normsearch.confirm.schedule.promote`; an
    upper bound by at most one arm per rung); a_{r+1} ≤ a_r."""
    budgets = rung_epochs(settings)
    lrs = len(settings.learning_rates())
    arms, spent = admitted * lrs, 0
    for r, epochs in enumerate(budgets):
        spent += arms * epochs
        if r < len(budgets) - 1:
            arms = min(arms, max(1, arms // settings.eta) + 1)
    return spent / (max(configs, 1) * lrs * budgets[-1])
