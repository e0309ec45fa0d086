"""The dataset names a plan may carry, checked without reading any data.

The federator checks a plan's dataset (and model, :func:`~cyber0.common.models.check_model_name`)
before it serves it, so that a typo stops it with an error naming the field instead of every
client at its join; each client then builds the task itself (``cyber0.client.trainer.TASKS``,
keyed by the same names, after the same check).
"""

from __future__ import annotations

from collections.abc import Callable

from . import localdata, text
from .hf import PROMPT_WORDS, is_hf_name, parse_model_name
from .models import LOGREG_INPUTS, logreg_inputs


def _mnist(name: str) -> object:
    if name != "mnist":
        raise ValueError(f"dataset {name!r}: mnist takes no options")
    return name


#: Dataset base name (before ``?``) → its name's parser (ValueError on a bad option).
DATASETS: dict[str, Callable[[str], object]] = {
    localdata.DATASET: localdata.parse_local_name,
    "mnist": _mnist,
    text.DATASET: text.parse_dataset_name,
}

#: Datasets of sentences: their model must be a Hugging Face text classifier.
TEXT_DATASETS = frozenset({text.DATASET})


def check_dataset_name(name: str, model: str) -> object:
    """The parsed ``name`` (its parser's result, e.g. a
    :class:`~cyber0.common.localdata.LocalDataset`); ValueError unless it is a known dataset
    with valid options that ``model`` can read (sentences need a Hugging Face model, MNIST's
    images logistic regression on 784 inputs, and a ``head=prompt`` model one label word per
    class of the dataset)."""
    base = name.partition("?")[0]
    if base not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    parsed = DATASETS[base](name)
    if base in TEXT_DATASETS and not is_hf_name(model):
        raise ValueError(
            f"dataset {name!r} needs a Hugging Face model (minilm or hf:<id>); got model={model!r}"
        )
    if base == "mnist" and (is_hf_name(model) or logreg_inputs(model) != LOGREG_INPUTS):
        raise ValueError(
            f"dataset 'mnist' has {LOGREG_INPUTS} features an example: it needs model logreg "
            f"(inputs={LOGREG_INPUTS}); got model={model!r}"
        )
    if is_hf_name(model) and parse_model_name(model).head == "prompt":
        words = parse_model_name(model).words or PROMPT_WORDS
        classes = parsed.classes if isinstance(parsed, localdata.LocalDataset) else text.NUM_CLASSES
        if len(words) != classes:
            raise ValueError(
                f"model {model!r} has {len(words)} label words ({','.join(words)}) but dataset "
                f"{name!r} has {classes} classes: give words=w0,w1,... one per class"
            )
    return parsed
