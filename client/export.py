"""``cyber0-export``: a fine-tuned text model as a Hugging Face folder, for use without cyber0.

A daemon's ``--save-model`` file holds the trainable weights and names the model; this writes
the whole model where ``transformers`` loads it with ``local_files_only``::

    cyber0-export --weights final.safetensors --out fine-tuned/

- ``head=auto``: ``AutoModelForSequenceClassification.from_pretrained(out)`` gives the same
  logits as the federation's model;
- ``head=mean`` / ``head=cls``: ``AutoModel.from_pretrained(out)`` is the encoder, and
  ``head.safetensors`` (``weight`` (C, hidden), ``bias`` (C,)) the linear layer on its masked
  mean / first-token hidden state: ``logits = pooled · weightᵀ + bias`` (the encoder has no
  pooler: ``add_pooling_layer=False`` where the architecture takes it, else transformers reports
  the pooler's weights missing and draws them, unused);
- ``head=prompt``: ``AutoModelForMaskedLM.from_pretrained(out)``; class c's logit is the
  masked-LM logit of label token ``label_ids[c]`` at the mask of ``<sentence> It was<mask>.``.

Beside them: the tokenizer, and ``cyber0.json`` (model name, head, classes, round, digest, the
plan, the tokens per sentence it trained with, the prompt's token ids). The folder is also a
starting point for another federation: ``hf:<folder>?head=<the same head>`` names it and
starts from the exported model (a linear head from ``head.safetensors``). Prints one JSON line
(``out``, ``head``, ``round``, ``digest``, ``load``: the class to load it with); exit 2 with
the reason when the weights are not a text model's ``--save-model`` file, their plan's
``max_length`` is over the model's positions, or ``out`` holds files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from cyber0 import add_version_option
from cyber0.common.datasets import check_dataset_name
from cyber0.common.hf import (
    EXPORT_HEAD_FILE,
    EXPORT_INFO_FILE,
    PROMPT_AFTER,
    PROMPT_BEFORE,
    PROMPT_WORDS,
    TextClassifier,
    check_positions,
    parse_model_name,
    quiet_transformers,
    tokenizer_folder,
)
from cyber0.common.text import DEFAULT_MAX_LENGTH, held_tokenizer
from cyber0.common.weights import load_model

from .tool import run_tool

#: The ``transformers`` class that loads an export, per head kind.
LOADERS = {
    "auto": "AutoModelForSequenceClassification",
    "mean": "AutoModel",
    "cls": "AutoModel",
    "prompt": "AutoModelForMaskedLM",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cyber0-export",
        description="Write a text model saved by cyber0-client --save-model as a Hugging Face "
        "folder (model, tokenizer, cyber0.json)",
    )
    add_version_option(p)
    p.add_argument("--weights", required=True, metavar="FILE", help="the --save-model file")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to create (or empty)")
    return p


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not an empty folder")


def export(weights: str, out: Path) -> dict[str, Any]:
    """Write the model of ``weights`` into ``out``; what :func:`main` prints."""
    _check_out(out)
    model, meta = load_model(weights)
    if not isinstance(model, TextClassifier):
        raise ValueError(
            f"{weights}: model {meta['model']!r} is not a Hugging Face text model; its weights "
            "file is already the whole model (cyber0.common.weights.load_model)"
        )
    if "plan" not in meta:
        raise ValueError(f"{weights}: no plan in its metadata (not a --save-model file)")
    plan = json.loads(meta["plan"])
    parsed = check_dataset_name(plan["dataset"], meta["model"])
    check_positions(model, int(getattr(parsed, "max_length", DEFAULT_MAX_LENGTH)))
    info: dict[str, Any] = {
        "model": meta["model"],
        "head": model.head_kind,
        "num_classes": int(meta["num_classes"]),
        "round": int(meta["round"]),
        "digest": meta["digest"],
        "max_length": int(getattr(parsed, "max_length", DEFAULT_MAX_LENGTH)),
        "loader": LOADERS[model.head_kind],
        "plan": plan,
    }
    out.mkdir(parents=True, exist_ok=True)
    pretrained: Any = model.hf  # a transformers PreTrainedModel
    with quiet_transformers():
        pretrained.save_pretrained(out)
        with held_tokenizer(tokenizer_folder(meta["model"])) as tokenizer:
            tokenizer.save_pretrained(out)
    if model.head is not None:
        head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, out / EXPORT_HEAD_FILE)
        info["head_file"] = EXPORT_HEAD_FILE
    if model.prompt is not None:
        words = parse_model_name(meta["model"]).words or PROMPT_WORDS
        info["prompt"] = {
            "template": f"<sentence>{PROMPT_BEFORE}<mask>{PROMPT_AFTER}",
            "words": list(words),
            "label_ids": list(model.prompt.label_ids),
            "before_ids": list(model.prompt.before),
            "after_ids": list(model.prompt.after),
            "mask_id": model.prompt.mask_id,
        }
    (out / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return {
        "out": str(out),
        "head": model.head_kind,
        "round": info["round"],
        "digest": info["digest"],
        "load": info["loader"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    return run_tool("cyber0-export", lambda: export(args.weights, Path(args.out)))


if __name__ == "__main__":
    sys.exit(main())
