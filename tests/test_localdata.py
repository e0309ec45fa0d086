"""The ``local`` dataset: a party's own examples file, its formats and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cyber0.client.trainer import ZOTrainer, build_task
from cyber0.common.localdata import (
    DataFileError,
    LocalDataset,
    LocalTask,
    check_data_path,
    has_labels,
    parse_local_name,
    read_arrays,
    read_sentences,
)
from cyber0.common.plan import TrainingPlan, ZOSettings


def test_local_names() -> None:
    assert parse_local_name("local?classes=2") == LocalDataset(2, 64)
    assert parse_local_name("local?max_length=32&classes=5") == LocalDataset(5, 32)
    for bad, named in [
        ("local", "give classes="),
        ("local?classes=1", "give classes="),
        ("local?classes=two", "classes must be an integer"),
        ("local?classes=2&max_length=4", "max_length must be >= 8"),
        ("local?classes=2&shots=4", r"unknown option\(s\) \['shots'\]"),
        ("local?classes=2&classes=3", "bad or repeated option"),
        ("mine?classes=2", "expected 'local'"),
    ]:
        with pytest.raises(ValueError, match=named):
            parse_local_name(bad)


SENTENCES = [('a film, with "quotes"', 1), ("dull", 0), ("ünïcode", 1)]


def write_sentences(path: Path) -> Path:
    """``SENTENCES`` in the format ``path``'s suffix names (CSV: an extra column first)."""
    if path.suffix == ".jsonl":
        rows = [json.dumps({"label": y, "text": t, "id": i}) for i, (t, y) in enumerate(SENTENCES)]
        path.write_text("\n".join(rows) + "\n\n", encoding="utf-8")
    else:
        import csv

        with path.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writerow(["id", "text", "label"])
            writer.writerows([i, t, y] for i, (t, y) in enumerate(SENTENCES))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_sentences_are_read_from_each_format(tmp_path: Path, suffix: str) -> None:
    texts, labels = read_sentences(str(write_sentences(tmp_path / f"mine{suffix}")), classes=2)
    assert texts == [t for t, _ in SENTENCES]
    assert labels.dtype == torch.int64 and labels.tolist() == [y for _, y in SENTENCES]


@pytest.mark.parametrize(
    ("name", "content", "named"),
    [
        ("a.csv", "text,label\nfine,1\nbad,2\n", r"a.csv: line 3: label '2' is not an integer in"),
        ("a.csv", "text,label\nfine,x\n", r"line 2: label 'x' is not an integer"),
        ("a.csv", "text,label\nfine,\u00b2\n", r"line 2: label '\u00b2' is not an integer"),
        ("a.tsv", "text\tlabel\nfine\t\u0661\n", r"line 2: label '\u0661' is not an integer"),
        ("a.csv", "text,label\nfine\n", "line 2: fewer fields than the header"),
        ("a.csv", "sentence,label\nfine,1\n", "the header row has no text column"),
        ("a.csv", "text,label\n", "a.csv: no examples"),
        ("a.jsonl", '{"text": "ok", "label": 1}\n{"text": "ok"\n', "line 2: not JSON"),
        ("a.jsonl", '{"text": "ok", "label": 1.0}\n', r"line 1: label 1.0 is not an integer"),
        ("a.jsonl", '{"text": "ok", "label": true}\n', r"line 1: label True is not an integer"),
        ("a.jsonl", '{"text": 3, "label": 1}\n', 'line 1: want {"text"'),
        ("a.jsonl", '["ok", 1]\n', 'line 1: want {"text"'),
        ("a.txt", "ok\t1\n", r"a.txt: a text model's examples must be in a .csv/.tsv/.jsonl file"),
        # a stray quote: lenient CSV quoting merged the rows after it into one sentence
        ("a.tsv", 'text\tlabel\n"Wow\t1\ndull\t0\nshe said "so" twice\t1\n', "a.tsv: line 2: "),
        ("a.tsv", 'text\tlabel\nfine\t1\n"Wow\t1\ndull\t0\n', "a.tsv: line 3: unexpected end"),
        ("a.csv", 'text,label\n"Wow,1\ndull,0\n', "a.csv: line 2: unexpected end of data"),
    ],
)
def test_bad_sentence_files_name_the_file_and_line(
    tmp_path: Path, name: str, content: str, named: str
) -> None:
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(DataFileError, match=named):
        read_sentences(str(tmp_path / name), classes=2)


def test_quoted_fields_follow_csv_quoting(tmp_path: Path) -> None:
    """A field that starts with a quote is quoted (tabs, newlines and doubled quotes inside
    it); a quote inside an unquoted field is text."""
    path = tmp_path / "q.tsv"
    path.write_text('text\tlabel\n"a\tb\nc ""d"""\t1\nshe said "so"\t0\n', encoding="utf-8")
    texts, labels = read_sentences(str(path), classes=2)
    assert texts == ['a\tb\nc "d"', 'she said "so"'] and labels.tolist() == [1, 0]
    (tmp_path / "h.tsv").write_text('"text\tlabel\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"h\.tsv"):
        has_labels(str(tmp_path / "h.tsv"))


def test_arrays_are_read_as_float32_examples(tmp_path: Path) -> None:
    x = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)
    np.savez(tmp_path / "mine.npz", x=x, y=np.array([0, 2, 1, 2], dtype=np.uint8))
    features, labels = read_arrays(str(tmp_path / "mine.npz"), classes=3)
    assert features.dtype == torch.float32 and torch.equal(features, torch.from_numpy(x).float())
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 2, 1, 2]


@pytest.mark.parametrize(
    ("arrays", "named"),
    [
        ({"x": np.zeros((2, 4))}, "no array named y"),
        ({"x": np.zeros((2, 4)), "y": np.zeros(2)}, "y must be a 1-D integer array"),
        ({"x": np.zeros((3, 4)), "y": np.zeros(2, int)}, "x must be a numeric array of 2 examples"),
        ({"x": np.zeros(2), "y": np.zeros(2, int)}, "x must be a numeric array"),
        ({"x": np.zeros((0, 4)), "y": np.zeros(0, int)}, "no examples"),
        ({"x": np.zeros((3, 4)), "y": np.array([0, 3, -1])}, r"y\[1\] = 3 is not a label"),
        ({"x": np.array([[0.0, np.nan]]), "y": np.zeros(1, int)}, "NaN or infinite"),
        ({"x": np.array([[object()]]), "y": np.zeros(1, int)}, "not a readable .npz file"),
    ],
)  # fmt: skip
def test_bad_array_files_name_the_file(
    tmp_path: Path, arrays: dict[str, np.ndarray], named: str
) -> None:
    np.savez(tmp_path / "mine.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataFileError, match=named):
        read_arrays(str(tmp_path / "mine.npz"), classes=3)


@pytest.mark.parametrize(
    "content", [b"PK\x03\x04 a truncated zip", b"plain text", bytes(range(256)) * 4]
)
def test_a_file_that_is_not_an_npz_is_a_data_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "mine.npz").write_bytes(content)
    with pytest.raises(DataFileError, match=r"mine.npz: not a readable .npz file"):
        read_arrays(str(tmp_path / "mine.npz"), classes=3)


def test_a_single_array_saved_as_npz_is_a_data_error(tmp_path: Path) -> None:
    with (tmp_path / "mine.npz").open("wb") as stream:
        np.save(stream, np.zeros((2, 784), np.float32))
    with pytest.raises(DataFileError, match=r"mine.npz: holds one array \(.npy\); save x and y"):
        read_arrays(str(tmp_path / "mine.npz"), classes=3)


def test_data_paths_are_checked_before_use(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match=r"mine.npz: no such file"):
        check_data_path(str(tmp_path / "mine.npz"))
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(DataFileError, match=r"folder.csv: not a file"):
        check_data_path(str(tmp_path / "folder.csv"))
    with pytest.raises(DataFileError, match=r"must be in a .npz file"):
        check_data_path(str(tmp_path / "mine.csv"), text=False)
    with pytest.raises(DataFileError, match=r"local examples must be in a .csv/.tsv/.jsonl/.npz"):
        check_data_path(str(tmp_path / "mine.parquet"))


def test_a_file_that_cannot_be_read_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError while reading (here a refused open: the suite runs as root, which reads any
    file) becomes a DataFileError naming the file, which the daemon reports and exits on."""
    path = write_sentences(tmp_path / "mine.csv")

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(DataFileError, match=r"mine.csv: \[Errno 13\] Permission denied"):
        read_sentences(str(path), classes=2)


def test_the_plan_and_the_data_flag_must_agree(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.zeros((2, 784), np.float32), y=np.array([0, 1]))
    local = TrainingPlan(seed=0, dataset="local?classes=2")
    task = build_task(local, str(path))
    assert isinstance(task, LocalTask) and task.num_classes == 2 and task.folder is None
    x, y = task.shard(local, 7)
    assert x.shape == (2, 784) and torch.equal(task.test_set()[1], y)
    with pytest.raises(ValueError, match="every party brings its own examples; give --data FILE"):
        build_task(local)
    with pytest.raises(ValueError, match="--data is for plans whose dataset is local"):
        build_task(TrainingPlan(seed=0), str(path))


def test_a_file_that_does_not_fit_the_model_is_refused_at_setup(tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.zeros((5, 10), np.float32), y=np.zeros(5, int))
    trainer = ZOTrainer(device=torch.device("cpu"), data=str(path))
    with pytest.raises(DataFileError, match=r"mine.npz: examples shaped \(10,\) do not fit"):
        trainer.setup(TrainingPlan(seed=0, dataset="local?classes=3"), 0, "c0")


def test_a_client_trains_on_its_own_file(tmp_path: Path) -> None:
    """Two parties' scalars on one plan and shard index differ when their files differ, and
    equal those of a party whose file holds the same examples (the shard index still keys
    the minibatches)."""
    plan = TrainingPlan(seed=4, dataset="local?classes=3", zo=ZOSettings(nu=4, batch_size=8))
    paths = []
    for name, seed in (("a", 1), ("b", 2), ("c", 1)):
        data = np.random.default_rng(seed)
        x = data.random((20, 784), dtype=np.float32)
        paths.append(tmp_path / f"{name}.npz")
        np.savez(paths[-1], x=x, y=data.integers(0, 3, 20))
    scalars = []
    for path in paths:
        trainer = ZOTrainer(device=torch.device("cpu"), data=str(path))
        trainer.setup(plan, 1, "c1")
        scalars.append(trainer.compute_update(0))
    assert scalars[0] == scalars[2] and scalars[0] != scalars[1]


def test_the_daemon_refuses_a_missing_or_unknown_file_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cyber0.client import cli

    for name, message in [
        ("mine.npz", "mine.npz: no such file"),
        ("mine.xlsx", "mine.xlsx: local examples must be in a .csv/.tsv/.jsonl/.npz file"),
    ]:
        argv = ["--target", "127.0.0.1:9", "--id", "a", "--data", str(tmp_path / name)]
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err


def test_each_identity_of_a_daemon_reads_its_own_file(tmp_path: Path) -> None:
    """``{id}`` in ``data`` is the identity: a daemon holding two identities trains each on its
    own file (the scalars of a single-identity trainer given that file), and a third identity
    whose file is bad is refused at its setup while the others go on."""
    plan = TrainingPlan(seed=2, dataset="local?classes=3", zo=ZOSettings(nu=4, batch_size=8))
    for name, seed in (("byz-a", 1), ("byz-b", 2)):
        data = np.random.default_rng(seed)
        np.savez(
            tmp_path / f"{name}.npz",
            x=data.random((20, 784), np.float32),
            y=data.integers(0, 3, 20),
        )
    np.savez(tmp_path / "byz-c.npz", x=np.zeros((3, 784), np.float32), y=np.array([0, 1, 5]))
    template = str(tmp_path / "{id}.npz")
    daemon = ZOTrainer(device=torch.device("cpu"), data=template)
    daemon.setup(plan, 0, "byz-a")
    daemon.setup(plan, 1, "byz-b")
    with pytest.raises(DataFileError, match=r"byz-c.npz: y\[2\] = 5 is not a label"):
        daemon.setup(plan, 2, "byz-c")
    assert [s.index for s in daemon.shards] == [0, 1]
    for shard, name in zip(daemon.shards, ("byz-a", "byz-b"), strict=True):
        alone = ZOTrainer(device=torch.device("cpu"), data=str(tmp_path / f"{name}.npz"))
        alone.setup(plan, shard.index, name)
        assert torch.equal(shard.x, alone.shards[0].x) and torch.equal(shard.y, alone.shards[0].y)
        assert torch.equal(daemon.honest_update(shard, 0), alone.honest_update(alone.shards[0], 0))


def test_the_daemon_checks_every_identity_s_file_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cyber0.client import cli

    np.savez(tmp_path / "b1.npz", x=np.zeros((2, 784), np.float32), y=np.array([0, 1]))
    argv = ["--target", "127.0.0.1:9", "--role", "byzantine", "--id", "b1", "--id", "b2"]
    assert cli.main([*argv, "--data", str(tmp_path / "{id}.npz")]) == 2
    assert "b2.npz: no such file" in capsys.readouterr().err


def test_a_file_holding_the_built_in_shard_gives_the_built_in_scalars(tmp_path: Path) -> None:
    """The local path generalises the built-in one: a client whose ``.npz`` holds exactly its
    MNIST shard sends, round after round, the scalars the built-in MNIST plan makes it send
    (same shard index, hence the same minibatches; same model, directions and updates)."""
    zo = ZOSettings(nu=4, batch_size=16, local_steps=2)
    built_in = TrainingPlan(seed=6, zo=zo, n_clients=5, f=1)
    local = TrainingPlan(seed=6, zo=zo, n_clients=5, f=1, dataset="local?classes=10")
    reference = ZOTrainer(device=torch.device("cpu"))
    reference.setup(built_in, 3, "c3")
    (shard,) = reference.shards
    path = tmp_path / "shard-3.npz"
    np.savez(path, x=shard.x.numpy(), y=shard.y.numpy())
    mine = ZOTrainer(device=torch.device("cpu"), data=str(path))
    mine.setup(local, 3, "c3")
    for round in range(3):
        scalars = reference.compute_update(round)
        assert mine.compute_update(round) == scalars
        aggregate = [0.5 * v for v in scalars]
        reference.apply_aggregate(round, aggregate)
        mine.apply_aggregate(round, aggregate)
    assert mine.digest() == reference.digest()


def test_cyber0_evaluate_refuses_what_it_cannot_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 with the reason: weights without a plan (not a --save-model file), a device torch
    does not know, a file in a format the model does not read, labels the model does not have,
    a folder, the examples or the weights as the predictions file (never overwritten)."""
    from cyber0.client import evaluate
    from cyber0.common.models import ModelSpec, build_model
    from cyber0.common.weights import save_weights

    plan = TrainingPlan(seed=0, dataset="local?classes=3")
    data = tmp_path / "mine.npz"
    np.savez(data, x=np.zeros((4, 784), np.float32), y=np.array([0, 1, 2, 1]))
    trainer = ZOTrainer(device=torch.device("cpu"), data=str(data))
    trainer.setup(plan, -1, "observer")
    weights = tmp_path / "model.safetensors"
    trainer.save_weights(weights)
    bare = tmp_path / "bare.safetensors"
    save_weights(
        build_model(ModelSpec("logreg", num_classes=3)),
        bare,
        {"model": "logreg", "num_classes": "3"},
    )
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.zeros((2, 784), np.float32), y=np.array([0, 3]))
    (tmp_path / "folder").mkdir()
    for argv, message in [
        (["--weights", str(bare), "--data", str(data)], "no plan in its metadata"),
        (
            ["--weights", str(weights), "--data", str(data), "--device", "foo"],
            "--device foo: not a device",
        ),
        (["--weights", str(weights), "--data", str(tmp_path / "a.csv")], "must be in a .npz file"),
        (["--weights", str(weights), "--data", str(wide)], "y[1] = 3 is not a label in [0, 3)"),
        (
            [
                "--weights",
                str(weights),
                "--data",
                str(data),
                "--predictions",
                str(tmp_path / "folder"),
            ],
            "is a folder; give a file name",
        ),
        (
            ["--weights", str(weights), "--data", str(data), "--predictions", str(data)],
            f"--predictions {data}: is the --data file; give another",
        ),
        (
            ["--weights", str(weights), "--data", str(data), "--predictions", str(weights)],
            f"--predictions {weights}: is the --weights file; give another",
        ),
    ]:
        assert evaluate.main(argv) == 2
        assert message in capsys.readouterr().err
    assert evaluate.main(["--weights", str(weights), "--data", str(data)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["examples"] == 4 and result["accuracy"] == 0.25  # W = 0: every label 0
    assert result["round"] == -1 and result["loss"] == pytest.approx(np.log(3))


def test_files_without_labels_are_read_for_their_inputs(tmp_path: Path) -> None:
    """``classes=None`` reads the inputs alone, from files with or without labels, and
    :func:`has_labels` tells which is which."""
    labelled = write_sentences(tmp_path / "labelled.csv")
    (tmp_path / "bare.csv").write_text('text\nfine\n"a, b"\n')
    (tmp_path / "bare.jsonl").write_text('{"text": "fine"}\n{"text": "a, b", "label": 7}\n')
    np.savez(tmp_path / "bare.npz", x=np.ones((3, 4), np.float32))
    np.savez(tmp_path / "labelled.npz", x=np.ones((3, 4), np.float32), y=np.zeros(3, int))
    assert read_sentences(str(labelled), None) == ([t for t, _ in SENTENCES], None)
    for name in ("bare.csv", "bare.jsonl"):
        assert read_sentences(str(tmp_path / name), None) == (["fine", "a, b"], None)
        assert not has_labels(str(tmp_path / name))
        with pytest.raises(DataFileError, match="label"):
            read_sentences(str(tmp_path / name), classes=2)
    x, y = read_arrays(str(tmp_path / "bare.npz"), None)
    assert y is None and torch.equal(x, torch.ones(3, 4))
    with pytest.raises(DataFileError, match="no array named y"):
        read_arrays(str(tmp_path / "bare.npz"), classes=2)
    assert has_labels(str(labelled)) and has_labels(str(tmp_path / "labelled.npz"))
    assert not has_labels(str(tmp_path / "bare.npz"))


def test_cyber0_evaluate_labels_a_file_without_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without labels the file is only labelled: ``--predictions`` is required, the JSON line
    has no scores, and the predictions are those of the same inputs with labels."""
    from cyber0.client import evaluate

    x = np.random.default_rng(3).standard_normal((50, 784)).astype(np.float32)
    np.savez(tmp_path / "labelled.npz", x=x, y=np.arange(50) % 3)
    np.savez(tmp_path / "bare.npz", x=x)
    trainer = ZOTrainer(device=torch.device("cpu"), data=str(tmp_path / "labelled.npz"))
    plan = TrainingPlan(seed=1, dataset="local?classes=3", zo=ZOSettings(nu=4, batch_size=8))
    trainer.setup(plan, 0, "c0")
    for round in range(3):  # away from W = 0, whose predictions are all 0
        trainer.apply_aggregate(round, trainer.compute_update(round))
    weights = str(tmp_path / "model.safetensors")
    trainer.save_weights(weights)
    bare = ["--weights", weights, "--data", str(tmp_path / "bare.npz")]
    assert evaluate.main(bare) == 2
    assert "no labels to score against; give --predictions FILE" in capsys.readouterr().err
    runs = {}
    for name in ("bare", "labelled"):
        out = tmp_path / f"{name}.txt"
        argv = [
            "--weights",
            weights,
            "--data",
            str(tmp_path / f"{name}.npz"),
            "--predictions",
            str(out),
        ]
        assert evaluate.main(argv) == 0
        runs[name] = (json.loads(capsys.readouterr().out), out.read_text().split())
    assert set(runs["bare"][0]) == {"examples", "round", "digest"}
    assert runs["bare"][0]["examples"] == 50 and runs["bare"][0]["round"] == 2
    assert runs["bare"][1] == runs["labelled"][1] and len(set(runs["bare"][1])) > 1
