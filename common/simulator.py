"""In-process simulator: n clients, f of them Byzantine, CYBER-0 next to the first-order baseline.

``cyber0-sim --config FILE.yaml --out DIR`` writes ``DIR/results.json``, ``DIR/accuracy.png`` and
each method's final model (``DIR/zo.safetensors``, ``DIR/first_order.safetensors``).
Byzantine clients are clients ``0 .. f-1``; their shards exist (colluding attackers and label
flipping compute on them). The declared f of the robust rule is the same f. The clients train
logistic regression on MNIST shards, or on their own files (``data.dataset: local?classes=C``,
see :class:`DataConfig`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from cyber0 import add_version_option

from .aggregators import Aggregator, get_aggregator
from .allocator import keep_freed_memory
from .attacks import Attack, get_attack_against
from .baseline import apply_update_, flat_gradient
from .config import ConfigError, for_identity, from_mapping, load_yaml
from .data import (
    MNIST_TRAIN_SIZE,
    ShardSpec,
    batch_indices,
    check_partition_size,
    load_mnist,
    load_shard,
    validation_split,
)
from .datasets import check_dataset_name
from .estimator import ZOEstimator, apply_aggregate_
from .localdata import DATASET as LOCAL
from .localdata import (
    DataFileError,
    LocalDataset,
    check_data_path,
    check_fits,
    parse_local_name,
    read_arrays,
)
from .models import (
    ModelSpec,
    build_model,
    check_model_name,
    evaluate,
    loss_function,
    model_digest,
    registry_key,
)
from .perturbation import DirectionGenerator, canonical_parameters
from .plan import Loss, TrainingPlan, ZOSettings, plan_json
from .weights import save_weights

Method = Literal["zo", "first_order"]
EvalSplit = Literal["validation", "test"]


@dataclass(frozen=True)
class DataConfig:
    """Dataset and how it is split across the n clients.

    ``mnist``: MNIST split by ``partition`` (and ``alpha``). ``validation > 0`` holds out that
    many training examples (a fixed seeded permutation, see
    :func:`cyber0.common.data.validation_split`): no client trains on them and every evaluation
    runs on them instead of the test set (for tuning; results.json then says
    ``"eval_split": "validation"`` while the history keys keep their ``test_`` names).

    ``local?classes=C``: every client's examples are its own ``.npz`` file, ``files`` with
    ``{id}`` standing for the client's index 0 … n−1 (clients 0 … f−1 are the Byzantine ones),
    and evaluations run on the file ``test`` (formats: :mod:`cyber0.common.localdata`; paths
    relative to the working directory); ``partition``, ``alpha`` and ``validation`` do not
    apply.
    """

    dataset: str = "mnist"
    partition: Literal["iid", "dirichlet"] = "dirichlet"
    alpha: float = 1.0
    validation: int = 0
    files: str = ""
    test: str = ""

    @property
    def eval_split(self) -> EvalSplit:
        """Where evaluations run: ``"validation"`` or ``"test"``."""
        return "validation" if self.validation > 0 else "test"

    @property
    def local(self) -> LocalDataset | None:
        """The parsed ``local`` dataset name (None for MNIST)."""
        return parse_local_name(self.dataset) if self.dataset.partition("?")[0] == LOCAL else None

    def client_file(self, index: int) -> str:
        """Client ``index``'s examples file (``local`` only)."""
        return for_identity(self.files, str(index))


@dataclass(frozen=True)
class RuleConfig:
    """A registry name plus its keyword parameters (aggregator or attack)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackConfig:
    """The Byzantine behaviour: an attack name, its parameters and what the attackers see."""

    name: str = "none"
    mode: Literal["omniscient", "colluding"] = "omniscient"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FirstOrderConfig:
    """The robust FedSGD baseline: one d-dimensional gradient per client per round."""

    lr: float = 0.1
    batch_size: int = 32


@dataclass(frozen=True)
class SimConfig:
    """A whole simulated experiment (see ``configs/*.yaml``). ``loss``: the objective every
    client trains, zero-order and first-order alike (the plan's ``loss``)."""

    seed: int = 0
    rounds: int = 300
    eval_every: int = 10
    n_clients: int = 10
    f: int = 2
    model: str = "logreg"
    loss: Loss = "cross_entropy"
    data: DataConfig = field(default_factory=DataConfig)
    zo: ZOSettings = field(default_factory=ZOSettings)
    aggregator: RuleConfig = field(default_factory=lambda: RuleConfig("cwtm"))
    attack: AttackConfig = field(default_factory=AttackConfig)
    methods: tuple[Method, ...] = ("zo",)
    first_order: FirstOrderConfig = field(default_factory=FirstOrderConfig)

    def __post_init__(self) -> None:
        checks = [
            ("seed", 0 <= self.seed < 2**63, f"must be in [0, 2**63); got {self.seed}"),
            ("rounds", self.rounds >= 1, f"must be >= 1; got {self.rounds}"),
            ("eval_every", self.eval_every >= 1, f"must be >= 1; got {self.eval_every}"),
            ("n_clients", self.n_clients >= 1, f"must be >= 1; got {self.n_clients}"),
            ("f", self.f >= 0, f"must be >= 0; got {self.f}"),
            (
                "f",
                self.n_clients > 2 * self.f,
                f"needs n_clients > 2f; got n_clients={self.n_clients}, f={self.f}",
            ),
            ("data.alpha", self.data.alpha > 0, f"must be > 0; got {self.data.alpha}"),
            (
                "data.validation",
                0 <= self.data.validation < MNIST_TRAIN_SIZE,
                f"must be in [0, {MNIST_TRAIN_SIZE}); got {self.data.validation}",
            ),
            ("methods", len(self.methods) >= 1, "needs at least one of 'zo', 'first_order'"),
            ("first_order.lr", self.first_order.lr > 0, f"must be > 0; got {self.first_order.lr}"),
            (
                "first_order.batch_size",
                self.first_order.batch_size >= 1,
                f"must be >= 1; got {self.first_order.batch_size}",
            ),
            *(
                (f"aggregator.params.{key}", False, f"is the config's {field}; do not repeat it")
                for key, field in (("f", "f"), ("n", "n_clients"))
                if key in self.aggregator.params
            ),
        ]
        for name, ok, message in checks:
            if not ok:
                raise ConfigError(f"{name}: {message}")
        self._check_names()

    def _check_names(self) -> None:
        """The model (logistic regression: the simulator's batched path) and the dataset."""
        try:
            check_model_name(self.model)
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from exc
        if registry_key(self.model) != "logreg":
            raise ConfigError(f"model: the simulator trains logreg[?inputs=D]; got {self.model!r}")
        data = self.data
        if data.dataset.partition("?")[0] not in ("mnist", LOCAL):
            raise ConfigError(
                f"data.dataset: the simulator reads mnist or local?classes=C; got {data.dataset!r}"
            )
        try:
            check_dataset_name(data.dataset, self.model)
        except ValueError as exc:
            raise ConfigError(f"data.dataset: {exc}") from exc
        if data.local is None:
            for name, value in (("data.files", data.files), ("data.test", data.test)):
                if value:
                    raise ConfigError(f"{name}: only a local dataset reads files; got {value!r}")
            pool = MNIST_TRAIN_SIZE - data.validation
            try:
                check_partition_size(data.partition, pool, self.n_clients)
            except ValueError as exc:
                raise ConfigError(f"n_clients: {exc}") from exc
            return
        if "{id}" not in data.files:
            raise ConfigError(
                f"data.files: a local dataset needs each client's file, with {{id}} for its "
                f"index (e.g. data/client-{{id}}.npz); got {data.files!r}"
            )
        if not data.test:
            raise ConfigError("data.test: a local dataset needs a file to evaluate on")
        if data.validation:
            raise ConfigError("data.validation: a local dataset's validation is its test file")

    @property
    def num_classes(self) -> int:
        """The labels of the dataset: 10 for MNIST, C for ``local?classes=C``."""
        local = self.data.local
        return 10 if local is None else local.classes

    @property
    def model_spec(self) -> ModelSpec:
        """The model every run starts from."""
        return ModelSpec(name=self.model, num_classes=self.num_classes)


def build_config(data: Any) -> SimConfig:
    """Validate a parsed YAML mapping; also builds the named rules, runs the attack once on
    zeros shaped as what it will see (its (n, f, h)-dependent checks), and checks that a local
    dataset's files exist (their contents are read by the run)."""
    config = from_mapping(SimConfig, data)
    aggregator = make_aggregator(config)
    attack = make_attack(config, aggregator)
    if attack is not None and attack.kind == "model":
        seen = config.f if config.attack.mode == "colluding" else config.n_clients - config.f
        try:
            attack(torch.zeros(seen, config.zo.scalars_per_round), config.n_clients, config.f)
        except ValueError as exc:
            raise ConfigError(f"attack: {exc}") from exc
    if config.data.local is not None:
        paths = [("data.files", config.data.client_file(i)) for i in range(config.n_clients)]
        for name, path in [*paths, ("data.test", config.data.test)]:
            try:
                check_data_path(path, text=False)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from exc
    return config


def make_aggregator(config: SimConfig) -> Aggregator:
    """The robust rule named by the config, with the declared f and n = ``n_clients``."""
    try:
        return get_aggregator(
            config.aggregator.name, f=config.f, n=config.n_clients, **config.aggregator.params
        )
    except ValueError as exc:
        raise ConfigError(f"aggregator: {exc}") from exc


def make_attack(config: SimConfig, aggregator: Aggregator) -> Attack | None:
    """The attack named by the config (None for ``none``); adaptive attacks get the rule."""
    if config.attack.name == "none" or config.f == 0:
        return None
    try:
        return get_attack_against(config.attack.name, aggregator, **config.attack.params)
    except ValueError as exc:
        raise ConfigError(f"attack: {exc}") from exc


@dataclass
class Client:
    """One simulated client's data (labels already flipped for a label-flipping attacker)."""

    index: int
    x: Tensor
    y: Tensor
    byzantine: bool

    def batch(
        self, config: SimConfig, batch_size: int, round: int, step: int
    ) -> tuple[Tensor, Tensor]:
        idx = batch_indices(self.y.numel(), batch_size, config.seed, self.index, round, step)
        return self.x.index_select(0, idx), self.y.index_select(0, idx)


@dataclass(frozen=True)
class Examples:
    """What a run reads: each client's training examples (index order) and the evaluation
    set. Read once by :func:`simulate` for all its methods; treat the tensors as read-only."""

    clients: tuple[tuple[Tensor, Tensor], ...]
    evaluation: tuple[Tensor, Tensor]


def load_examples(config: SimConfig) -> Examples:
    """The n clients' MNIST shards, or each one's own file (checked against the model:
    :class:`~cyber0.common.localdata.DataFileError` naming the file), and :func:`eval_set`."""
    clients = []
    model = build_model(config.model_spec)
    for i in range(config.n_clients):
        if config.data.local is None:
            spec = ShardSpec(
                dataset=config.data.dataset,
                partition=config.data.partition,
                alpha=config.data.alpha,
                n_clients=config.n_clients,
                client_index=i,
                seed=config.seed,
                validation=config.data.validation,
            )
            clients.append(load_shard(spec))
        else:
            path = config.data.client_file(i)
            x, y = read_arrays(path, config.num_classes)
            check_fits(model, x, path)
            clients.append((x, y))
    return Examples(tuple(clients), eval_set(config))


def make_clients(config: SimConfig, attack: Attack | None, examples: Examples) -> list[Client]:
    """The n clients on their examples, clients 0 … f−1 Byzantine (their labels flipped by a
    data attack)."""
    clients = []
    for i, (x, y) in enumerate(examples.clients):
        byzantine = i < config.f
        if byzantine and attack is not None and attack.kind == "data":
            y = attack.flip_labels(y, config.num_classes)  # type: ignore[attr-defined]
        clients.append(Client(i, x, y, byzantine))
    return clients


def byzantine_vectors(
    config: SimConfig,
    attack: Attack | None,
    honest: Tensor,
    own: Callable[[], Tensor],
) -> Tensor:
    """The f Byzantine rows: attack output, or honest computations (no attack / data attack).

    ``own()`` computes the Byzantine clients' honest vectors on their own (possibly flipped)
    data; colluding attackers see only those, omniscient ones see ``honest``."""
    if config.f == 0:
        return honest[:0]
    if attack is None or attack.kind == "data":
        return own()
    seen = honest if config.attack.mode == "omniscient" else own()
    return attack(seen, config.n_clients, config.f)


@dataclass
class RunResult:
    """What one method's run produced (``model``: the final model, not in :meth:`as_dict`)."""

    method: Method
    history: list[dict[str, float]]
    final_test_accuracy: float
    final_test_loss: float
    uplink_scalars_per_client_round: int
    uplink_bytes_per_client_round: int
    model_digest: str
    wall_seconds: float
    model: nn.Module | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The figures, for results.json."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"
        }


def eval_set(config: SimConfig) -> tuple[Tensor, Tensor]:
    """The examples evaluations run on: the held-out validation examples, the test set, or a
    local dataset's test file."""
    if config.data.local is not None:
        x, y = read_arrays(config.data.test, config.num_classes)
        check_fits(build_model(config.model_spec), x, config.data.test)
        return x, y
    data = load_mnist()
    if config.data.validation == 0:
        return data.test_x, data.test_y
    _, held_out = validation_split(data.train_y.numel(), config.data.validation)
    return data.train_x[held_out], data.train_y[held_out]


def _evaluate_into(
    history: list[dict[str, float]],
    model: nn.Module,
    round: int,
    bytes_cum: int,
    examples: tuple[Tensor, Tensor],
) -> None:
    accuracy, loss = evaluate(model, *examples)
    history.append(
        {
            "round": round,
            "test_accuracy": accuracy,
            "test_loss": loss,
            "uplink_bytes_cum": bytes_cum,
        }
    )


def _run(
    config: SimConfig,
    method: Method,
    model: nn.Module,
    round_update: Callable[[int], None],
    scalars: int,
    progress: bool,
    evaluation: tuple[Tensor, Tensor],
) -> RunResult:
    history: list[dict[str, float]] = []
    per_round = 4 * scalars * config.n_clients
    start = time.perf_counter()
    bar = tqdm(range(config.rounds), desc=method, disable=not progress, file=sys.stderr)
    for t in bar:
        round_update(t)
        done = t + 1
        if done % config.eval_every == 0 or done == config.rounds:
            bytes_cum = per_round * done // config.n_clients
            _evaluate_into(history, model, done, bytes_cum, evaluation)
            bar.set_postfix(acc=f"{history[-1]['test_accuracy']:.4f}")
    last = history[-1]
    return RunResult(
        method=method,
        history=history,
        final_test_accuracy=last["test_accuracy"],
        final_test_loss=last["test_loss"],
        uplink_scalars_per_client_round=scalars,
        uplink_bytes_per_client_round=4 * scalars,
        model_digest=model_digest(model),
        wall_seconds=time.perf_counter() - start,
        model=model,
    )


#: Called once per round with (round, the n client vectors, Byzantine rows first, the aggregate):
#: a read-only view of the aggregation for diagnostics (``bench/probe_mnist.py``).
Probe = Callable[[int, Tensor, Tensor], None]


#: A method's client vectors at the current weights: ``vectors(clients)`` → (len(clients), m).
Vectors = Callable[[Sequence[Client]], Tensor]


def _robust_rounds(
    config: SimConfig, examples: Examples, probe: Probe | None
) -> Callable[[int, Vectors], Tensor]:
    """The run's clients on ``examples``, its attack and rule, as ``aggregate(t, vectors)``:
    round ``t``'s honest vectors, the Byzantine rows (:func:`byzantine_vectors`), and the
    robust rule on the n rows (Byzantine first), shown to ``probe``. One for both methods."""
    aggregator = make_aggregator(config)
    attack = make_attack(config, aggregator)
    clients = make_clients(config, attack, examples)
    honest_clients = [c for c in clients if not c.byzantine]
    byzantine_clients = [c for c in clients if c.byzantine]

    def aggregate(t: int, vectors: Vectors) -> Tensor:
        honest = vectors(honest_clients)
        byz = byzantine_vectors(config, attack, honest, lambda: vectors(byzantine_clients))
        rows = torch.cat([byz, honest])
        out = aggregator(rows)
        if probe is not None:
            probe(t, rows, out)
        return out

    return aggregate


def run_zo(
    config: SimConfig,
    progress: bool = False,
    probe: Probe | None = None,
    examples: Examples | None = None,
) -> RunResult:
    """CYBER-0: scalars in R^m, robust rule in R^m, update by regenerated directions (on
    ``examples``, read from the config when not given)."""
    examples = load_examples(config) if examples is None else examples
    aggregate = _robust_rounds(config, examples, probe)
    zo = config.zo
    generator = DirectionGenerator(config.seed, zo.distribution)
    model = build_model(config.model_spec)
    estimator = ZOEstimator(model, loss_function(config.loss), generator, zo, "batched")

    def round_update(t: int) -> None:
        def vectors(group: Sequence[Client]) -> Tensor:
            batches = [
                [c.batch(config, zo.batch_size, t, k) for k in range(zo.local_steps)] for c in group
            ]
            return estimator.local_rounds(t, batches)

        apply_aggregate_(model, generator, zo, t, aggregate(t, vectors), estimator.cache)

    return _run(
        config, "zo", model, round_update, zo.scalars_per_round, progress, examples.evaluation
    )


def run_first_order(
    config: SimConfig,
    progress: bool = False,
    probe: Probe | None = None,
    examples: Examples | None = None,
) -> RunResult:
    """The baseline: robust FedSGD on d-dimensional autograd gradients (on ``examples``, read
    from the config when not given)."""
    examples = load_examples(config) if examples is None else examples
    aggregate = _robust_rounds(config, examples, probe)
    lr, batch_size = config.first_order.lr, config.first_order.batch_size
    model = build_model(config.model_spec)
    dims = sum(p.numel() for _, p in canonical_parameters(model))
    loss_fn = loss_function(config.loss)

    def round_update(t: int) -> None:
        def vectors(group: Sequence[Client]) -> Tensor:
            rows = [
                flat_gradient(model, *c.batch(config, batch_size, t, 0), loss_fn) for c in group
            ]
            return torch.stack(rows) if rows else torch.empty(0, dims)

        apply_update_(model, aggregate(t, vectors), lr)

    return _run(config, "first_order", model, round_update, dims, progress, examples.evaluation)


RUNNERS: dict[Method, Callable[[SimConfig, bool, Probe | None, Examples | None], RunResult]] = {
    "zo": run_zo,
    "first_order": run_first_order,
}


def as_plan(config: SimConfig) -> TrainingPlan:
    """The federation plan the simulated run stands for (the rule by name)."""
    return TrainingPlan(
        seed=config.seed,
        zo=config.zo,
        model=config.model,
        dataset=config.data.dataset,
        partition=config.data.partition,
        alpha=config.data.alpha,
        n_clients=config.n_clients,
        f=config.f,
        aggregator=config.aggregator.name,
        rounds=config.rounds,
        loss=config.loss,
    )


def save_models(config: SimConfig, runs: Mapping[Method, RunResult], folder: Path) -> None:
    """``folder/<method>.safetensors``: each run's final model in a daemon's ``--save-model``
    format (:func:`~cyber0.common.weights.load_model` rebuilds it; ``cyber0-evaluate`` scores
    it on an examples file), with the metadata ``method`` besides."""
    plan = plan_json(as_plan(config))
    for method, run in runs.items():
        assert run.model is not None
        metadata = {
            "model": config.model,
            "num_classes": str(config.num_classes),
            "round": str(config.rounds - 1),
            "plan": plan,
            "method": method,
        }
        save_weights(run.model, folder / f"{method}.safetensors", metadata)


def simulate(
    config: SimConfig, progress: bool = False, weights: Path | None = None
) -> dict[str, Any]:
    """Run every method of the config; the first one's figures are the top-level fields, and
    with ``weights`` (a folder) each method's final model is saved there (:func:`save_models`).

    ``eval_split`` says which examples the ``test_*`` figures were measured on."""
    examples = load_examples(config)
    runs = {method: RUNNERS[method](config, progress, None, examples) for method in config.methods}
    if weights is not None:
        save_models(config, runs, weights)
    main = runs[config.methods[0]]
    result: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "rounds": config.rounds,
        "eval_split": config.data.eval_split,
    }
    result.update(main.as_dict())
    result["runs"] = {method: run.as_dict() for method, run in runs.items()}
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy against rounds and against cumulative uplink bytes, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = {"zo": "CYBER-0 (zero-order)", "first_order": "first-order FedSGD"}
    for method, run in result["runs"].items():
        rounds = [h["round"] for h in run["history"]]
        acc = [h["test_accuracy"] for h in run["history"]]
        sent = [h["uplink_bytes_cum"] for h in run["history"]]
        left.plot(rounds, acc, label=labels[method])
        right.plot(sent, acc, label=labels[method])
    ylabel = f"{result.get('eval_split', 'test')} accuracy"
    left.set(xlabel="round", ylabel=ylabel)
    right.set(xlabel="uplink bytes per client (cumulative)", ylabel=ylabel, xscale="log")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``cyber0-sim``."""
    parser = argparse.ArgumentParser(prog="cyber0-sim", description=__doc__.splitlines()[0])
    add_version_option(parser)
    parser.add_argument("--config", required=True, help="YAML experiment file")
    parser.add_argument("--out", required=True, help="output folder (results.json, accuracy.png)")
    parser.add_argument("--no-plot", action="store_true", help="skip accuracy.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = build_config(load_yaml(args.config))
    except ConfigError as exc:
        print(f"cyber0-sim: invalid config {args.config}: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keep_freed_memory()
    try:
        result = simulate(config, progress=not args.quiet, weights=out)
    except DataFileError as exc:
        print(f"cyber0-sim: {exc}", file=sys.stderr)
        return 2
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    if not args.no_plot:
        plot(result, out / "accuracy.png")
    print(
        f"final {result['eval_split']} accuracy {result['final_test_accuracy']:.4f}, "
        f"{result['uplink_bytes_per_client_round']} uplink bytes per client per round, "
        f"digest {result['model_digest'][:16]}, {result['wall_seconds']:.1f} s"
    )
    return 0
