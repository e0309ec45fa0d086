"""``cyber0-export``: a trained text model written as a Hugging Face folder gives, loaded by
``transformers`` alone, the federation's logits; bad inputs exit 2 with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_text import save_tiny_bert_with_tokenizer, save_tiny_roberta_masked_lm
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from cyber0.client import export
from cyber0.common import hf, text
from cyber0.common.estimator import apply_aggregate_
from cyber0.common.models import ModelSpec, build_model, model_digest
from cyber0.common.perturbation import DirectionGenerator
from cyber0.common.plan import TrainingPlan, ZOSettings, plan_json
from cyber0.common.weights import save_weights

CLASSES = 2
MAX_LENGTH = 24


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-models")
    return {
        "bert": save_tiny_bert_with_tokenizer(root / "bert"),
        "roberta": save_tiny_roberta_masked_lm(root / "roberta"),
    }


def trained(folder: Path, head: str, path: Path, max_length: int = MAX_LENGTH) -> hf.TextClassifier:
    """The model ``hf:folder?head=...`` after 3 rounds of made-up aggregates, saved to ``path``
    as a daemon's ``--save-model`` would."""
    name = f"hf:{folder}?head={head}"
    plan = TrainingPlan(
        seed=5,
        model=name,
        dataset=f"local?classes={CLASSES}&max_length={max_length}",
        zo=ZOSettings(nu=2, lr=0.05),
    )
    model = build_model(ModelSpec(name, num_classes=CLASSES))
    generator = DirectionGenerator(plan.seed)
    for round in range(3):
        apply_aggregate_(model, generator, plan.zo, round, [1.0, -0.5])
    metadata = {
        "model": name,
        "num_classes": str(CLASSES),
        "round": "2",
        "plan": plan_json(plan),
    }
    save_weights(model, path, metadata)
    assert isinstance(model, hf.TextClassifier)
    return model


def sentences() -> list[str]:
    return [t for t in text.load_corpus().texts if len(t) < 80][:6]


def run_export(weights: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert export.main(["--weights", str(weights), "--out", str(out)]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("head", ["auto", "mean"])
def test_an_exported_classifier_gives_the_federation_s_logits(
    folders: dict[str, Path], head: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = trained(folders["bert"], head, tmp_path / "final.safetensors")
    out = tmp_path / "export"
    printed = run_export(tmp_path / "final.safetensors", out, capsys)
    info = json.loads((out / "cyber0.json").read_text())
    assert printed["digest"] == info["digest"] == model_digest(model)
    assert info["head"] == head and info["max_length"] == MAX_LENGTH and info["round"] == 2
    batch = text.tokenize(sentences(), folders["bert"], MAX_LENGTH)
    assert torch.equal(text.tokenize(sentences(), out, MAX_LENGTH), batch)  # its tokenizer
    ids, mask = batch[:, 0], batch[:, 1]
    with torch.inference_mode():
        expected = model(batch)
        if head == "auto":
            assert printed["load"] == "AutoModelForSequenceClassification"
            loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
            logits = loaded(input_ids=ids, attention_mask=mask).logits
        else:
            assert printed["load"] == "AutoModel"
            encoder = AutoModel.from_pretrained(out).eval()
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1)
            linear = load_file(out / info["head_file"])
            logits = pooled @ linear["weight"].T + linear["bias"]
        untrained = build_model(
            ModelSpec(f"hf:{folders['bert']}?head={head}", num_classes=CLASSES)
        )(batch)
    # the same arithmetic on the same weights (HF pads to the batch's full width: attention
    # masking leaves float noise); the untrained model is ~1e-2 away
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert (untrained - expected).abs().max() > 1e-3
    if head == "auto":  # the export names a model a federation can start from
        again = build_model(ModelSpec(f"hf:{out}", num_classes=CLASSES))
        assert model_digest(again) == model_digest(model)


@pytest.mark.parametrize(("kind", "head"), [("bert", "mean"), ("bert", "cls"),
                                            ("bert", "auto"), ("roberta", "prompt")])  # fmt: skip
def test_an_export_starts_another_federation_from_the_exported_model(
    folders: dict[str, Path],
    kind: str,
    head: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``hf:<export>?head=<its head>`` builds the trained model bit for bit (a linear head is
    read from ``head.safetensors``, not drawn again); a head file of other shapes is refused
    naming it."""
    model = trained(folders[kind], head, tmp_path / "final.safetensors")
    out = tmp_path / "export"
    run_export(tmp_path / "final.safetensors", out, capsys)
    again = build_model(ModelSpec(f"hf:{out}?head={head}", num_classes=CLASSES))
    assert model_digest(again) == model_digest(model)
    batch = text.tokenize(sentences(), out, MAX_LENGTH)
    with torch.inference_mode():
        assert torch.equal(again(batch), model(batch))
    if head in hf.LINEAR_HEADS:
        with pytest.raises(ValueError, match=r"head\.safetensors: holds .* needs"):
            build_model(ModelSpec(f"hf:{out}?head={head}", num_classes=CLASSES + 1))


def test_an_exported_prompt_model_scores_the_label_words(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = trained(folders["roberta"], "prompt", tmp_path / "final.safetensors")
    out = tmp_path / "export"
    printed = run_export(tmp_path / "final.safetensors", out, capsys)
    assert printed["load"] == "AutoModelForMaskedLM"
    prompt = json.loads((out / "cyber0.json").read_text())["prompt"]
    assert prompt["words"] == list(hf.PROMPT_WORDS) and len(prompt["label_ids"]) == CLASSES
    loaded = AutoModelForMaskedLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    with torch.inference_mode():
        # long enough that no sentence is truncated, as the string below is not
        expected = model(text.tokenize(sentences(), folders["roberta"], 64))
        for row, sentence in zip(expected, sentences(), strict=True):
            ids = tok(f"{sentence} It was{tok.mask_token}.", return_tensors="pt")["input_ids"]
            at = int((ids[0] == prompt["mask_id"]).nonzero())
            logits = loaded(input_ids=ids).logits[0, at, prompt["label_ids"]]
            torch.testing.assert_close(logits, row, atol=1e-5, rtol=1e-5)


def test_export_refuses_what_it_cannot_write(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 with the reason: a plan whose max_length is over the model's positions, a model
    that is not a text model, a folder that holds files, a weights file without a plan."""
    logreg = tmp_path / "logreg.safetensors"
    save_weights(
        build_model(ModelSpec("logreg")),
        logreg,
        {"model": "logreg", "num_classes": "10", "round": "0", "plan": "{}"},
    )
    trained(folders["bert"], "auto", tmp_path / "final.safetensors")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    bare = tmp_path / "bare.safetensors"
    save_weights(
        build_model(ModelSpec(f"hf:{folders['bert']}", num_classes=CLASSES)),
        bare,
        {"model": f"hf:{folders['bert']}", "num_classes": str(CLASSES), "round": "0"},
    )
    trained(folders["bert"], "mean", tmp_path / "long.safetensors", max_length=81)
    cases = [
        (tmp_path / "long.safetensors", tmp_path / "c", "max_length=81 is over the 80 tokens"),
        (logreg, tmp_path / "a", "model 'logreg' is not a Hugging Face text model"),
        (tmp_path / "final.safetensors", busy, "exists and is not an empty folder"),
        (bare, tmp_path / "b", "no plan in its metadata"),
    ]
    for weights, out, message in cases:
        assert export.main(["--weights", str(weights), "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert (busy / "notes.txt").read_text() == "mine" and sorted(busy.iterdir()) == [
        busy / "notes.txt"
    ]
    assert not any((tmp_path / name).exists() for name in "abc")
