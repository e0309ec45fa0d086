"""docker/entrypoint.sh and docker/stack.py run for real (bash, python) outside Docker: temp
results/certs/ca/state folders, and a stub ``cyber0-federator`` on PATH that accepts the plan of
a fresh log and refuses another one on a kept log, as the real federator's durable log does, and
a stub ``cyber0-client``. The real ``cyber0-certs`` issues the certificates."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
LIB = ROOT / "docker"

#: Records its arguments; refuses a kept log written for another plan (exit 2), else stores the
#: plan in the log and appends one round to the metrics. STUB_FAIL: a start refused before the
#: log is opened (a bad plan).
STUB_FEDERATOR = """#!/usr/bin/env bash
set -euo pipefail
printf '%s\\n' "$*" >>"$STUB_CALLS"
if [ -n "${STUB_FAIL:-}" ]; then
  echo "cyber0-federator: error: aggregator: cwtm needs n > 2f" >&2
  exit 2
fi
while [ $# -gt 0 ]; do
  case $1 in
    --metrics) metrics=$2; shift ;;
    --log-db) db=$2; shift ;;
    --config) config=$2; shift ;;
  esac
  shift
done
if [ -e "$db" ] && ! cmp -s "$db" "$config"; then
  echo "cyber0-federator: error: log $db was written for another plan" >&2
  exit 2
fi
cp "$config" "$db"
echo "serving" >&2
echo '{"event": "round", "round": 0, "participants": [], "uplink_payload_bytes": 0}' >>"$metrics"
"""

#: A client that never dials: records its arguments.
STUB_CLIENT = """#!/usr/bin/env bash
printf 'client %s\\n' "$*" >>"$STUB_CALLS"
"""


@dataclass
class Stack:
    """The folders and environment of one entrypoint's world."""

    results: Path
    certs: Path
    ca: Path
    state: Path
    calls: Path
    env: dict[str, str]

    def run(self, *args: str, **knobs: str) -> subprocess.CompletedProcess[bytes]:
        """Run the entrypoint with ``args`` and the knobs added to the environment."""
        return subprocess.run(
            ["bash", str(ENTRYPOINT), *args],
            env={**self.env, **knobs},
            capture_output=True,
            timeout=120,
            check=False,
        )

    def federator_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "cyber0-federator").write_text(STUB_FEDERATOR)
    (stub / "cyber0-client").write_text(STUB_CLIENT)
    for name in ("cyber0-federator", "cyber0-client"):
        (stub / name).chmod(0o755)
    folders = {name: tmp_path / name for name in ("results", "certs", "ca", "state")}
    calls = tmp_path / "federator-calls"
    env = {
        # python and cyber0-certs: the test's own interpreter and its venv
        "PATH": f"{stub}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "CYBER0_LIB": str(LIB),
        "RESULTS_DIR": str(folders["results"]),
        "CERTS_DIR": str(folders["certs"]),
        "CA_DIR": str(folders["ca"]),
        "STATE_DIR": str(folders["state"]),
        "STUB_CALLS": str(calls),
        "TLS": "false",
        "HONEST_CLIENTS": "2",
        "BYZANTINE_CLIENTS": "1",
        "BYZANTINE_DAEMONS": "1",
        "F": "0",
        "ROUNDS": "5",
    }
    return Stack(calls=calls, env=env, **folders)


def stderr(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode()


# --- booleans ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["federator", "certs", "client", "health"])
def test_a_tls_typo_exits_2_naming_tls(stack: Stack, role: str) -> None:
    result = stack.run(role, TLS="ture")
    assert result.returncode == 2, stderr(result)
    assert "TLS must be true or false; got 'ture'" in stderr(result)
    assert stack.federator_calls() == []


@pytest.mark.parametrize(
    ("value", "tls"), [("Off", False), ("0", False), ("NO", False), ("YES", True), ("on", True)]
)
def test_tls_takes_each_spelling_of_true_and_false(stack: Stack, value: str, tls: bool) -> None:
    result = stack.run("federator", TLS=value)
    assert result.returncode == 0, stderr(result)
    (call,) = stack.federator_calls()
    assert ("--tls-cert" in call, "--insecure" in call) == (tls, not tls)


# --- integer knobs and the Byzantine daemons ------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"ROUNDS": "1e3"}, "ROUNDS must be an integer; got '1e3'"),
        ({"NU": "0"}, "NU must be >= 1; got '0'"),
        ({"HONEST_CLIENTS": "six"}, "HONEST_CLIENTS must be an integer; got 'six'"),
        ({"MU": "small"}, "MU must be a number; got 'small'"),
    ],
)
def test_a_bad_number_exits_2_naming_its_knob(
    stack: Stack, knobs: dict[str, str], message: str
) -> None:
    result = stack.run("federator", **knobs)
    assert result.returncode == 2, stderr(result)
    assert message in stderr(result)
    assert "Traceback" not in stderr(result)
    assert stack.federator_calls() == []
    checked = subprocess.run(
        [sys.executable, str(LIB / "stack.py"), "check"],
        env={**stack.env, **knobs},
        capture_output=True,
        check=False,
    )
    assert (checked.returncode, message in stderr(checked)) == (2, True)


@pytest.mark.parametrize("role", ["federator", "certs", "byzantine"])
def test_byzantine_identities_without_a_daemon_are_refused(stack: Stack, role: str) -> None:
    result = stack.run(role, TLS="true", BYZANTINE_CLIENTS="2", BYZANTINE_DAEMONS="0")
    assert result.returncode == 2, stderr(result)
    assert "BYZANTINE_DAEMONS=0" in stderr(result)
    assert "BYZANTINE_CLIENTS=2" in stderr(result)
    assert "Traceback" not in stderr(result)
    assert stack.federator_calls() == []
    assert not stack.ca.exists()


def test_more_daemons_than_identities_leave_the_surplus_idle(stack: Stack) -> None:
    knobs = {"BYZANTINE_CLIENTS": "2", "BYZANTINE_DAEMONS": "3"}
    assert stack.run("federator", **knobs).returncode == 0
    idle = stack.run("byzantine", REPLICA_INDEX="3", **knobs)
    assert idle.returncode == 0, stderr(idle)
    assert "daemon 3 of 3 holds no identity" in stderr(idle)


def test_remote_clients_split_on_commas_and_whitespace(stack: Stack) -> None:
    result = stack.run("federator", REMOTE_CLIENTS="alice,bob  carol")
    assert result.returncode == 0, stderr(result)
    enrolment = (stack.results / "enrolment.txt").read_text().split()
    assert enrolment == ["honest-1", "honest-2", "byzantine-1", "alice", "bob", "carol"]
    assert "n_clients: 6" in (stack.results / "federation.yaml").read_text()


# --- results of earlier runs --------------------------------------------------------------------


def test_a_refused_resume_leaves_the_runs_plan_in_results(stack: Stack) -> None:
    assert stack.run("federator").returncode == 0
    plan = (stack.results / "federation.yaml").read_bytes()
    enrolment = (stack.results / "enrolment.txt").read_bytes()
    assert b"rounds: 5" in plan
    refused = stack.run("federator", ROUNDS="7", HONEST_CLIENTS="3")  # the state volume kept
    assert refused.returncode == 2, stderr(refused)
    assert "another plan" in stderr(refused)
    assert (stack.results / "federation.yaml").read_bytes() == plan
    assert (stack.results / "enrolment.txt").read_bytes() == enrolment
    assert not (stack.results / "previous").exists()
    resumed = stack.run("federator")  # the same plan: accepted
    assert resumed.returncode == 0, stderr(resumed)
    assert (stack.results / "federation.yaml").read_bytes() == plan


def test_a_fresh_start_after_a_failed_one_archives_the_failed_attempt(stack: Stack) -> None:
    failed = stack.run("federator", STUB_FAIL="1")
    assert failed.returncode == 2
    assert not (stack.results / "metrics.jsonl").exists()
    assert not (stack.state / "federator.db").exists()
    assert "cwtm needs n > 2f" in (stack.results / "federator.log").read_text()
    (stack.results / "clients").mkdir()  # a client that wrote its line meanwhile
    (stack.results / "clients" / "honest-1.json").write_text("{}\n")
    started = stack.run("federator")
    assert started.returncode == 0, stderr(started)
    (attempt,) = (stack.results / "previous").iterdir()
    assert "cwtm needs n > 2f" in (attempt / "federator.log").read_text()
    assert {p.name for p in attempt.iterdir()} >= {
        "federator.log",
        "federation.yaml",
        "enrolment.txt",
        "summary.json",
        "clients",
    }
    assert "cwtm needs n > 2f" not in (stack.results / "federator.log").read_text()
    assert not (stack.results / "clients").exists()
    assert (stack.results / "metrics.jsonl").exists()
    # docker compose down -v, up: the completed run goes aside too (its own folder, even when
    # both carry the same second)
    (stack.state / "federator.db").unlink()
    assert stack.run("federator").returncode == 0
    archived = sorted((stack.results / "previous").iterdir())
    assert len(archived) == 2
    assert sum((folder / "metrics.jsonl").exists() for folder in archived) == 1


# --- certificates -------------------------------------------------------------------------------


def test_federator_hosts_and_ips_split_on_commas_and_whitespace(stack: Stack) -> None:
    result = stack.run(
        "certs",
        TLS="true",
        FEDERATOR_HOSTS="a.example.org,b.example.org",
        FEDERATOR_IPS="10.0.0.1, 10.0.0.2",
        REMOTE_CLIENTS="alice,bob",
    )
    assert result.returncode == 0, stderr(result)
    cert = x509.load_pem_x509_certificate((stack.certs / "federator.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(names.get_values_for_type(x509.DNSName)) == [
        "a.example.org",
        "b.example.org",
        "federator",
        "localhost",
    ]
    ips = sorted(str(ip) for ip in names.get_values_for_type(x509.IPAddress))
    assert ips == ["10.0.0.1", "10.0.0.2", "127.0.0.1"]
    issued = sorted(p.stem for p in (stack.certs / "clients").glob("*.pem"))
    assert issued == [
        "alice",
        "bob",
        "byzantine-1",
        "healthcheck",
        "honest-1",
        "honest-2",
        "observer",
    ]


def test_a_failing_enrolment_stops_the_certs_service(stack: Stack) -> None:
    result = stack.run("certs", TLS="true", HONEST_CLIENTS="x")
    assert result.returncode == 2, stderr(result)
    assert "HONEST_CLIENTS must be an integer; got 'x'" in stderr(result)
    assert not stack.ca.exists()


@pytest.fixture
def ca(stack: Stack) -> Path:
    """A CA folder as the certs service leaves it (files' contents do not matter to bundle)."""
    (stack.ca / "clients").mkdir(parents=True)
    for name in ("ca.pem", "ca.key", "crl.pem", "clients/alice.pem", "clients/alice.key"):
        (stack.ca / name).write_text(f"{name}\n")
    return stack.ca


@pytest.mark.parametrize(
    "args", [["bundle"], ["bundle", "../ca"], ["bundle", "alice", "bob"], ["bundle", "bob"]]
)
def test_bundle_refuses_anything_but_one_issued_client(
    stack: Stack, ca: Path, args: list[str]
) -> None:
    result = stack.run(*args, TLS="true")
    assert result.returncode == 2, stderr(result)
    assert "usage: certs bundle ID" in stderr(result)
    assert result.stdout == b""


def test_bundle_writes_the_clients_files(stack: Stack, ca: Path) -> None:
    result = stack.run("bundle", "alice", TLS="true")
    assert result.returncode == 0, stderr(result)
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        assert sorted(tar.getnames()) == ["alice.key", "alice.pem", "ca.pem"]
