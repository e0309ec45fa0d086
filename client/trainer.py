"""The model half of a client daemon: the engine's ZO steps behind the session's Trainer protocol.

The plan's ``dataset`` picks the task (:data:`TASKS`): ``mnist`` (the plan's model, e.g.
``logreg``), ``rotten_tomatoes[?shots=S&max_length=L]`` (a Hugging Face model named
``minilm`` or ``hf:<id>``, resolved to a local folder by :mod:`cyber0.common.hf`; its weight
dtype is the model name's ``dtype`` option, so it is part of the plan), or
``local?classes=C[&max_length=L]``: each party's own examples file (``data``,
:mod:`cyber0.common.localdata`). Small models use the batched ZO path, transformers the in-place
one under ``torch.inference_mode``: no gradients, no optimizer state, no second copy of the
weights (with K = 1 local step), and at most ``cache_bytes`` of a round's directions kept for
reuse. Directions are generated on the model's device.

:class:`ZOTrainer` is an honest client (or, with ``flip_labels``, a label-flipping one) and an
observer; :class:`ColludingTrainer` holds several Byzantine identities that craft their vectors
together from their own honest computations. All of them keep the global model: they apply every
aggregate with the regenerated directions, so their digests match every other party's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from cyber0.common.aggregators import get_aggregator
from cyber0.common.attacks import Attack, get_attack_against
from cyber0.common.config import for_identity
from cyber0.common.data import ShardSpec, batch_indices, load_mnist, load_shard
from cyber0.common.datasets import check_dataset_name
from cyber0.common.estimator import Path, ZOEstimator, apply_aggregate_
from cyber0.common.localdata import DATASET as LOCAL
from cyber0.common.localdata import LocalTask, check_data_path, check_fits, parse_local_name
from cyber0.common.models import (
    ModelSpec,
    build_model,
    evaluate,
    loss_function,
    model_digest,
)
from cyber0.common.perturbation import (
    DEFAULT_CACHE_BYTES,
    DirectionGenerator,
    canonical_parameters,
)
from cyber0.common.plan import TrainingPlan, plan_fields, plan_json
from cyber0.common.weights import (
    CHAIN_KEY,
    CHAIN_START,
    chain_aggregate,
    load_weights,
    read_metadata,
    save_weights,
)

from .session import UpdateError

_log = logging.getLogger("cyber0.client")

#: Models with at most this many parameters use the batched (vectorised) ZO path.
BATCHED_MAX_PARAMETERS = 1_000_000


class Task(Protocol):
    """What a trainer needs from a dataset: shards, a test set and the label count."""

    @property
    def num_classes(self) -> int: ...

    @property
    def eval_batch_size(self) -> int: ...

    def shard(self, plan: TrainingPlan, index: int) -> tuple[Tensor, Tensor]:
        """Shard ``index`` of the plan's partition: ``(x, y)`` on the CPU."""
        ...

    def test_set(self) -> tuple[Tensor, Tensor]:
        """The evaluation examples ``(x, y)`` on the CPU."""
        ...


@dataclass(frozen=True)
class MnistTask:
    """MNIST 60k/10k, shards by :class:`~cyber0.common.data.ShardSpec`."""

    num_classes: int = 10
    eval_batch_size: int = 4096

    def shard(self, plan: TrainingPlan, index: int) -> tuple[Tensor, Tensor]:
        return load_shard(
            ShardSpec(
                dataset=plan.dataset,
                partition=plan.partition,
                alpha=plan.alpha,
                n_clients=plan.n_clients,
                client_index=index,
                seed=plan.seed,
            )
        )

    def test_set(self) -> tuple[Tensor, Tensor]:
        data = load_mnist()
        return data.test_x, data.test_y


def _mnist_task(plan: TrainingPlan, data: str | None) -> Task:
    return MnistTask()


def _text_task(plan: TrainingPlan, data: str | None) -> Task:
    from cyber0.common.hf import tokenizer_folder
    from cyber0.common.text import TextTask, parse_dataset_name

    return TextTask(parse_dataset_name(plan.dataset), tokenizer_folder(plan.model))


def _local_task(plan: TrainingPlan, data: str | None) -> Task:
    from cyber0.common.hf import is_hf_name, tokenizer_folder

    dataset = parse_local_name(plan.dataset)
    if data is None:
        raise ValueError(
            f"the plan's dataset is {plan.dataset!r}: every party brings its own examples; "
            "give --data FILE"
        )
    text = is_hf_name(plan.model)
    check_data_path(data, text)
    return LocalTask(dataset, data, tokenizer_folder(plan.model) if text else None)


#: Dataset base name (before ``?``) → task builder (the names of
#: :data:`cyber0.common.datasets.DATASETS`); ``data``: the party's own examples file (``local``
#: only).
TASKS: dict[str, Callable[[TrainingPlan, str | None], Task]] = {
    LOCAL: _local_task,
    "mnist": _mnist_task,
    "rotten_tomatoes": _text_task,
}


def build_task(plan: TrainingPlan, data: str | None = None) -> Task:
    """The task of ``plan.dataset``, reading the party's own examples from ``data`` (a
    ``local`` plan); ValueError for a dataset name
    :func:`~cyber0.common.datasets.check_dataset_name` refuses, or when ``data`` is given for a
    plan that brings no data."""
    check_dataset_name(plan.dataset, plan.model)
    base = plan.dataset.partition("?")[0]
    if data is not None and base != LOCAL:
        raise ValueError(
            f"--data is for plans whose dataset is local; this plan's is {plan.dataset!r}"
        )
    return TASKS[base](plan, data)


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto``: the first CUDA device when one is available, else the CPU; ValueError naming
    ``--device`` for a name torch does not know or CUDA on a machine without it."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ValueError(f"--device {requested}: not a device ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: CUDA is not available on this machine")
    return device


def is_text_model(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face text classifier (in-place ZO path only)."""
    from cyber0.common.hf import TextClassifier

    return isinstance(model, TextClassifier)


@dataclass
class Shard:
    """One identity's training data, on the trainer's device."""

    index: int
    x: Tensor
    y: Tensor
    source: str | None = None  # the examples file it was read from (a local plan)


@dataclass
class ZOTrainer:
    """Follows the global model; as a training client computes its ZO scalars each round.

    ``checkpoint``: the weights file (:mod:`cyber0.common.weights`) written after every
    ``save_every``-th applied round (0: never) and by :meth:`save_checkpoint` (the daemon calls
    it at the end); with ``resume``, a checkpoint that exists is loaded at setup, so only the
    rounds after it are replayed. A checkpoint of another plan, or one that records no aggregate
    chain (:data:`~cyber0.common.weights.CHAIN_KEY`, written by an older version), is refused
    (ValueError), never trained on; one of the plan is trusted only once :meth:`check_history`
    has matched its chain with the federator's aggregates (the session does it before
    training). ``data``: this party's examples file, for a plan whose dataset is ``local``
    (an identity's shard, or an observer's evaluation set); ``{id}`` in it stands for the
    identity, so the identities of one daemon can each read their own. ``cache_bytes``: how
    much of a round's directions the estimator keeps for the local and global updates (and the
    in-place path's second forward) (:class:`~cyber0.common.perturbation.DirectionCache`;
    memory for speed, the same bits at any value).
    """

    device: torch.device = field(default_factory=resolve_device)
    data: str | None = None
    flip_labels: bool = False
    checkpoint: str | None = None
    save_every: int = 0
    resume: bool = False
    cache_bytes: int = DEFAULT_CACHE_BYTES
    plan: TrainingPlan | None = None
    shards: list[Shard] = field(default_factory=list)
    _tasks: dict[str | None, Task] = field(default_factory=dict)
    _model: nn.Module | None = None
    _estimator: ZOEstimator | None = None
    _applied: int = -1
    _resumed: int = -1
    _checkpointed: int | None = None  # the round the checkpoint file holds, if this run knows
    _chain: bytes = CHAIN_START  # the aggregate chain of the applied rounds
    _resumed_chain: bytes = CHAIN_START  # the resumed checkpoint's
    _unverified: int = -1  # the resumed checkpoint's round until check_history accepts it

    def setup(self, plan: TrainingPlan, shard_index: int, client_id: str) -> None:
        """Build the model (first call) and load the shard of ``shard_index`` (−1: observer)
        for identity ``client_id``, from its own data file on a ``local`` plan."""
        data = for_identity(self.data, client_id)
        task = self._tasks.get(data)
        if self.plan is None:
            task = build_task(plan, data)
            spec = ModelSpec(name=plan.model, num_classes=task.num_classes)
            model = build_model(spec).to(self.device)
            self._add_task(model, data, task)
            size = sum(p.numel() for _, p in canonical_parameters(model))
            small = size <= BATCHED_MAX_PARAMETERS and not is_text_model(model)
            path: Path = "batched" if small else "inplace"
            generator = DirectionGenerator(plan.seed, plan.zo.distribution)
            if self.resume and self.checkpoint and os.path.exists(self.checkpoint):
                self._applied, self._chain = self._restore(model, plan, self.checkpoint)
                self._checkpointed = self._resumed = self._unverified = self._applied
                self._resumed_chain = self._chain
            self.plan, self._model = plan, model
            self._estimator = ZOEstimator(
                model, loss_function(plan.loss), generator, plan.zo, path, self.cache_bytes
            )
        elif plan != self.plan:
            raise ValueError("one trainer cannot follow two different plans")
        if task is None:
            task = self._add_task(self._ready()[1], data, build_task(plan, data))
        if shard_index >= 0 and all(s.index != shard_index for s in self.shards):
            x, y = task.shard(plan, shard_index)
            if self.flip_labels:
                y = task.num_classes - 1 - y
            self.shards.append(Shard(shard_index, x.to(self.device), y.to(self.device), data))

    def _add_task(self, model: nn.Module, data: str | None, task: Task) -> Task:
        """Keep ``task``, the one reading ``data``, once its examples fit ``model`` (a text
        model: sentences of the dataset's ``max_length``, prompt included, fit its positions)."""
        if isinstance(task, LocalTask):
            check_fits(model, task.examples[0], task.path)
        else:
            from cyber0.common.hf import TextClassifier, check_positions
            from cyber0.common.text import TextTask

            if isinstance(task, TextTask) and isinstance(model, TextClassifier):
                check_positions(model, task.dataset.max_length)
        self._tasks[data] = task
        return task

    @property
    def _task(self) -> Task:
        """The task the model was built for (the first identity's)."""
        if not self._tasks:
            raise RuntimeError("setup() has not been called")
        return next(iter(self._tasks.values()))

    @staticmethod
    def _restore(model: nn.Module, plan: TrainingPlan, checkpoint: str) -> tuple[int, bytes]:
        """Load ``checkpoint`` into ``model`` if it was saved for ``plan`` (a field the saved
        plan lacks at its default: :func:`~cyber0.common.plan.plan_fields`) and records its
        aggregate chain; its round and chain. The header is checked first, so the weights of
        another plan, or of a file that cannot be verified, are never read."""
        saved = read_metadata(checkpoint)
        logged = saved.get("plan")
        if logged is None or plan_fields(logged) != json.loads(plan_json(plan)):
            raise ValueError(
                f"checkpoint {checkpoint} holds a model of another plan than the federator's; "
                "move it away (or drop --resume) to start from the beginning"
            )
        try:
            chain = bytes.fromhex(saved[CHAIN_KEY])
        except (KeyError, ValueError):
            chain = b""
        if len(chain) != len(CHAIN_START):
            raise ValueError(
                f"checkpoint {checkpoint} does not record the aggregates it was trained on "
                "(written by an older version), so it cannot be checked against the federator's "
                "run; remove it or start without --resume"
            )
        load_weights(model, checkpoint)
        _log.info("resumed from %s after round %s", checkpoint, saved["round"])
        return int(saved["round"]), chain

    @property
    def applied_round(self) -> int:
        """Last round whose aggregate was applied (−1: none)."""
        return self._applied

    @property
    def unverified_round(self) -> int:
        """The round of the checkpoint loaded at setup until :meth:`check_history` accepts it
        (−1: nothing to check)."""
        return self._unverified

    def check_history(self, chain: bytes) -> None:
        """Accept the checkpoint loaded at setup when ``chain`` is the chain
        (:func:`~cyber0.common.weights.chain_aggregate`) of the federator's aggregates of its
        rounds; ValueError naming the file when it is not."""
        if self._unverified < 0:
            return
        if chain != self._resumed_chain:
            raise ValueError(
                f"{self.checkpoint} holds round {self._unverified} of another run of this plan "
                "(its aggregates differ from the federator's); remove it or start without "
                "--resume"
            )
        _log.info("checkpoint %s: its aggregates are the federator's", self.checkpoint)
        self._unverified = -1

    @property
    def rounds_applied(self) -> int:
        """Aggregates this run applied (a resumed checkpoint's rounds not counted)."""
        return self._applied - self._resumed

    def _ready(self) -> tuple[TrainingPlan, nn.Module, ZOEstimator]:
        if self.plan is None or self._model is None or self._estimator is None:
            raise RuntimeError("setup() has not been called")
        return self.plan, self._model, self._estimator

    def honest_update(self, shard: Shard, round: int) -> Tensor:
        """The shard's K local ZO steps of ``round`` (batches keyed by seed, shard, round, step)."""
        plan, _, estimator = self._ready()
        batches = []
        for step in range(plan.zo.local_steps):
            idx = batch_indices(
                shard.y.numel(), plan.zo.batch_size, plan.seed, shard.index, round, step
            ).to(self.device)
            batches.append((shard.x[idx], shard.y[idx]))
        return estimator.local_round(round, batches).cpu()

    def compute_update(self, round: int) -> Sequence[float]:
        """This identity's m scalars (the first shard: a plain client holds exactly one).
        :class:`~cyber0.client.session.UpdateError` when one is not finite: an honest party
        never sends an update the federator must refuse."""
        if not self.shards:
            raise RuntimeError("an observer has no shard to compute on")
        shard = self.shards[0]
        update = self.honest_update(shard, round)
        if not bool(torch.isfinite(update).all()):
            examples = f" (--data {shard.source})" if shard.source else ""
            raise UpdateError(
                f"round {round}: the loss is not finite (the update holds NaN or infinite "
                f"values): this party's examples{examples} are out of range, or the model "
                "diverged"
            )
        return update.tolist()

    def apply_aggregate(self, round: int, values: Sequence[float]) -> None:
        """``w ← w − η Σ R z`` for the aggregate of ``round`` (must be ``applied_round + 1``)."""
        plan, model, estimator = self._ready()
        if round != self._applied + 1:
            raise ValueError(f"aggregate {round} cannot follow applied round {self._applied}")
        apply_aggregate_(model, estimator.generator, plan.zo, round, values, estimator.cache)
        self._applied, self._chain = round, chain_aggregate(self._chain, round, values)
        if self.save_every and (round + 1) % self.save_every == 0:
            try:
                self.save_checkpoint()
            except OSError as exc:  # training goes on; the next checkpoint tries again
                _log.warning("checkpoint %s not written: %s", self.checkpoint, exc)

    def digest(self) -> str:
        """SHA-256 of the current global model."""
        return model_digest(self._ready()[1])

    def save_checkpoint(self) -> bool:
        """Write ``checkpoint`` unless it already holds the applied round (saved or resumed
        from by this trainer); whether it wrote. OSError when the file cannot be written."""
        if not self.checkpoint or self._checkpointed == self._applied:
            return False
        self.save_weights(self.checkpoint)
        self._checkpointed = self._applied
        return True

    def save_weights(self, path: str | os.PathLike[str]) -> str:
        """Write the current global model to ``path`` (:func:`cyber0.common.weights.save_weights`;
        metadata: the model name and class count that :func:`~cyber0.common.weights.load_model`
        rebuilds it from, the last applied round, the plan and the aggregate chain of the
        applied rounds); return its digest."""
        plan, model, _ = self._ready()
        metadata = {
            "model": plan.model,
            "num_classes": str(self._task.num_classes),
            "round": str(self._applied),
            "plan": plan_json(plan),
            CHAIN_KEY: self._chain.hex(),
        }
        return save_weights(model, path, metadata)

    def evaluate(self) -> tuple[float, float]:
        """(accuracy, loss) of the current model on the task's test set (observers)."""
        _, model, _ = self._ready()
        x, y = self._task.test_set()
        return evaluate(
            model, x.to(self.device), y.to(self.device), batch_size=self._task.eval_batch_size
        )


@dataclass
class ColludingTrainer(ZOTrainer):
    """Several Byzantine identities in one daemon, sharing one model and crafting together.

    At the first ``compute_update(t)`` of a round it computes every identity's honest vector on
    its own shard, feeds them to the attack (``attack(own, n, f)``, the colluding mode: no honest
    client's vector is ever seen) and hands out one row per call. ``setup`` is called once per
    identity, so identities are served in the order they joined. The attack (``attack``,
    ``attack_params``: a registry name and its parameters) is built at the first ``setup``,
    against the plan's rule (what the adaptive attack line-searches).
    """

    attack: str = "alie"
    attack_params: dict[str, Any] = field(default_factory=dict)
    _attack: Attack | None = None
    _round: int = -1
    _rows: list[list[float]] = field(default_factory=list)
    _served: int = 0

    def setup(self, plan: TrainingPlan, shard_index: int, client_id: str) -> None:
        super().setup(plan, shard_index, client_id)
        if self._attack is None:
            rule = get_aggregator(plan.aggregator, f=plan.f)
            self._attack = get_attack_against(self.attack, rule, **self.attack_params)

    def compute_update(self, round: int) -> Sequence[float]:
        """Row i of the round's colluding vectors for the i-th request of the round (cycling, so
        an identity that asks again after a reconnect still gets a row).
        :class:`~cyber0.client.session.UpdateError` when the attack cannot craft them from
        these identities' vectors (e.g. ``mimic``'s ``target`` beyond them, or a non-finite
        vector)."""
        plan, _, _ = self._ready()
        if round != self._round:
            own = torch.stack([self.honest_update(s, round) for s in self.shards])
            attack = self._attack
            if attack is None or attack.kind == "data":
                rows = own
            else:
                try:
                    rows = attack(own, plan.n_clients, len(self.shards))
                except ValueError as exc:
                    raise UpdateError(
                        f"round {round}: attack {attack.name} cannot craft the rows of "
                        f"{len(self.shards)} identities: {exc}"
                    ) from exc
            self._round, self._rows, self._served = round, rows.tolist(), 0
        row = self._rows[self._served % len(self._rows)]
        self._served += 1
        return row
