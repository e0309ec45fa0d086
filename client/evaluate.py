"""``cyber0-evaluate``: a saved model's accuracy on an examples file, and its predictions.

A daemon's ``--save-model`` file names its model and holds its plan, so any party can run the
trained model on examples of its own, in the formats of the ``local`` dataset
(:mod:`cyber0.common.localdata`; a text model tokenises with the plan's ``max_length``)::

    cyber0-evaluate --weights final.safetensors --data held-out.csv --predictions labels.txt

prints ``{"examples": N, "accuracy": ..., "loss": ..., "round": ..., "digest": ...}`` and, with
``--predictions``, writes each example's predicted label, one a line, in file order. A file
without labels (no ``label`` column or key, no ``y``) is only labelled: ``--predictions`` is
then required, and the line has no accuracy or loss. Exit 2 with the reason when the weights or
the file cannot be used (a text model's included: the plan's ``max_length`` over its positions).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cyber0 import add_version_option
from cyber0.common.datasets import check_dataset_name
from cyber0.common.hf import TextClassifier, check_positions, is_hf_name, tokenizer_folder
from cyber0.common.localdata import (
    LocalDataset,
    LocalTask,
    check_data_path,
    check_fits,
    has_labels,
)
from cyber0.common.models import evaluate, predict
from cyber0.common.text import DEFAULT_MAX_LENGTH
from cyber0.common.weights import load_model

from .tool import run_tool
from .trainer import resolve_device


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cyber0-evaluate",
        description="Accuracy and loss of a model saved by cyber0-client --save-model on an "
        "examples file (.csv/.tsv/.jsonl with text and label for text models, .npz with x and y "
        "otherwise), and its predicted labels",
    )
    add_version_option(p)
    p.add_argument("--weights", required=True, metavar="FILE", help="the --save-model file")
    p.add_argument(
        "--data", required=True, metavar="FILE", help="examples (without labels: --predictions)"
    )
    p.add_argument("--predictions", metavar="FILE", help="write the predicted labels, one a line")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    return p


def _task(model_name: str, dataset: str, classes: int, data: str) -> LocalTask:
    """The file ``data`` read as the saved model reads examples: a text model's tokens at the
    ``max_length`` of the plan's dataset name."""
    text = is_hf_name(model_name)
    check_data_path(data, text)
    parsed = check_dataset_name(dataset, model_name)
    max_length = int(getattr(parsed, "max_length", DEFAULT_MAX_LENGTH))
    folder = tokenizer_folder(model_name) if text else None
    return LocalTask(LocalDataset(classes, max_length), data, folder)


def run(args: argparse.Namespace) -> dict[str, object]:
    """The scores of ``args.weights`` on ``args.data`` (predictions written when asked)."""
    if args.predictions is not None and Path(args.predictions).is_dir():
        raise ValueError(f"--predictions {args.predictions}: is a folder; give a file name")
    for flag, given in (("--data", args.data), ("--weights", args.weights)):
        if (
            args.predictions is not None
            and Path(args.predictions).resolve() == Path(given).resolve()
        ):
            raise ValueError(f"--predictions {args.predictions}: is the {flag} file; give another")
    device = resolve_device(args.device)
    model, meta = load_model(args.weights)
    if "plan" not in meta:
        raise ValueError(f"{args.weights}: no plan in its metadata (not a --save-model file)")
    dataset = json.loads(meta["plan"])["dataset"]
    task = _task(meta["model"], dataset, int(meta["num_classes"]), args.data)
    if isinstance(model, TextClassifier):
        check_positions(model, task.dataset.max_length)
    labelled = has_labels(args.data)
    if not labelled and args.predictions is None:
        raise ValueError(
            f"{args.data}: no labels to score against; give --predictions FILE to label it"
        )
    x, y = task.examples if labelled else (task.inputs(), None)
    check_fits(model, x, args.data)
    model.to(device)
    x = x.to(device)
    scores = {}
    if y is not None:
        accuracy, loss = evaluate(model, x, y.to(device), task.eval_batch_size)
        scores = {"accuracy": accuracy, "loss": loss}
    if args.predictions is not None:
        labels = predict(model, x, task.eval_batch_size).tolist()
        Path(args.predictions).write_text("".join(f"{label}\n" for label in labels))
    return {
        "examples": len(x),
        **scores,
        "round": int(meta.get("round", -1)),
        "digest": meta.get("digest", ""),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    return run_tool("cyber0-evaluate", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
