"""The Byzantine daemon's attack: built from the command line, checked before connecting, and
aimed at the training plan's rule (the adaptive attack line-searches the federator's
aggregator, which the daemon learns only from the plan)."""

from __future__ import annotations

import pytest
import torch

from cyber0.client import cli
from cyber0.client.trainer import ColludingTrainer
from cyber0.common.aggregators import get_aggregator
from cyber0.common.attacks import get_attack
from cyber0.common.plan import TrainingPlan, ZOSettings


def test_the_adaptive_attack_searches_against_the_plans_rule() -> None:
    args = cli.build_parser().parse_args(
        [
            "--target", "127.0.0.1:9", "--role", "byzantine", "--id", "m0", "--id", "m1",
            "--attack", "adaptive", "--attack-param", "base=ipm", "--attack-param", "evaluations=8",
        ]
    )  # fmt: skip
    trainer = cli.build_trainer(args)
    assert isinstance(trainer, ColludingTrainer) and not trainer.flip_labels
    plan = TrainingPlan(
        seed=3, zo=ZOSettings(nu=4, batch_size=16), n_clients=6, f=2, aggregator="nnm+cwtm"
    )
    for shard in (0, 1):
        trainer.setup(plan, shard, f"byzantine-{shard}")
    rows = [trainer.compute_update(0) for _ in range(2)]

    own = torch.stack([trainer.honest_update(s, 0) for s in trainer.shards])
    rule = get_aggregator("nnm+cwtm", f=2)
    expected = get_attack("adaptive", aggregator=rule, base="ipm", evaluations=8)(own, 6, 2)
    assert torch.equal(torch.tensor(rows), expected)
    # against another rule the same search lands elsewhere: the rule is really the plan's
    mean = get_attack("adaptive", aggregator=get_aggregator("mean"), base="ipm", evaluations=8)
    assert not torch.equal(mean(own, 6, 2), expected)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["aggregator=cwtm"], "adaptive: the aggregator is the one in use"),
        (["tau_max=-1"], "tau_max"),
        (["beta=2"], "adaptive: unknown parameter 'beta'"),
    ],
)
def test_a_bad_adaptive_attack_is_refused_before_connecting(
    capsys: pytest.CaptureFixture[str], params: list[str], message: str
) -> None:
    argv = ["--target", "127.0.0.1:9", "--role", "byzantine", "--id", "m0", "--attack", "adaptive"]
    for param in params:
        argv += ["--attack-param", param]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
