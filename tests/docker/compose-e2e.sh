#!/usr/bin/env bash
# End-to-end test of the Compose stack with a real Docker engine (a CI stage of .ci/run).
#
# Installs Debian's docker.io, docker-compose (v1) and debootstrap when missing, starts dockerd,
# builds a Debian base image with debootstrap (no registry is reachable; reused when it exists),
# the wheelhouse and the project image (no network in the build), then runs the stack with mutual
# TLS: certs, federator, 6 honest clients, one colluding Byzantine daemon holding 2 ALIE
# identities, an observer; MNIST, 150 rounds of nu=64, K=1. From the mounted results folder it
# checks (tests/docker/check_results.py): the observer's final accuracy >= 0.80 (the same plan
# reaches about 0.86), the Byzantine identities took part in every round, every uplink payload
# is exactly K*nu floats per client, all final digests are equal, the observer's saved weights
# (results/observer.safetensors) rebuild the model with that digest; and that the federator
# refuses a plaintext connection. Everything it started (containers, networks, volumes, dockerd) is
# removed on exit, failed or not, and whatever a killed earlier run left is removed before the
# stack starts; the images stay as a build cache.
#
# E2E_STACK=local runs the MNIST plan on the parties' own files: DATASET=local?classes=10 and
# CLIENT_DATA=/data/{id}.npz, the data folder written by tests/docker/write_shards.py (each
# identity's Dirichlet shard, the test set for the observer), with the MNIST checks and bar.
#
# E2E_STACK=text-local is the text stack on the parties' own CSV files (write_shards.py --text:
# each identity's Rotten Tomatoes shard, the test sentences for the observer), with the text
# stack's checks.
#
# E2E_STACK=text runs the text stack instead (docker/text.env: an image with the text extra and
# the offline MiniLM and Rotten Tomatoes packages; MiniLM's last layer and head fine-tuned in
# place, nu=4, the same 6 honest + 2 ALIE + observer) for 8 rounds, with the same checks and an
# accuracy bar of 0 (8 ZO rounds from a random head are a plumbing check, not training).
#
# With E2E_DIGEST_OUT=FILE the final model's digest is written to FILE, and with
# E2E_EXPECT_DIGEST=HEX the run must end on that model: .ci/run runs each own-data stack after
# its built-in one and expects its digest, so files holding the built-in shards train the
# built-in federation's model bit for bit (the shard index still keys the minibatches).
#
# Environment: E2E_STACK (mnist, local, text or text-local), E2E_ROUNDS (150; text: 8),
# E2E_BAR (0.80; text: 0), E2E_KEEP_RESULTS (a folder to copy results to), E2E_DIGEST_OUT,
# E2E_EXPECT_DIGEST.
set -euo pipefail
cd "$(dirname "$0")/../.."

STACK=${E2E_STACK:-mnist}
HONEST=6
BYZANTINE=2
K=1
ATTACK=alie
BASE_IMAGE_TAG=cyber0-base:bookworm
case "$STACK" in
  mnist | local)
    ROUNDS=${E2E_ROUNDS:-150}
    BAR=${E2E_BAR:-0.80}
    NU=64
    IMAGE=cyber0:e2e
    EXTRAS=mnist
    NODEPS=
    env_file=()
    # The whole plan is given here (with compose_env below): nothing is read from .env.
    plan_env=(MU=0.001 LR=0.002 BATCH_SIZE=64 MODEL=logreg PARTITION=dirichlet ALPHA=1.0 SEED=0
      LOSS=cross_entropy EVAL_EVERY=25 ROUND_TIMEOUT=30 LINGER=60)
    if [ "$STACK" = mnist ]; then
      PROJECT=cyber0e2e
      plan_env+=(DATASET=mnist)
    else  # the same plan, but every party reads its own file from the mounted data folder
      PROJECT=cyber0e2elocal
      plan_env+=("DATASET=local?classes=10" "CLIENT_DATA=/data/{id}.npz")
    fi
    ;;
  text | text-local)
    ROUNDS=${E2E_ROUNDS:-8}
    BAR=${E2E_BAR:-0}
    NU=4
    IMAGE=cyber0:e2e-text
    EXTRAS=mnist,text
    NODEPS=$(sed -n 's/^CYBER0_NODEPS=//p' docker/text.env)
    # The model, data set, loss and step come from docker/text.env, as for a user of the switch
    # (which replaces .env: nothing is read from .env).
    env_file=(--env-file docker/text.env)
    # One evaluation, after the last round (each is 2,000 sentences through MiniLM).
    plan_env=("EVAL_EVERY=$ROUNDS")
    if [ "$STACK" = text ]; then
      PROJECT=cyber0e2etext
    else  # the same plan, but every party reads its own CSV from the mounted data folder
      PROJECT=cyber0e2etextlocal
      plan_env+=("DATASET=local?classes=2&max_length=32" "CLIENT_DATA=/data/{id}.csv")
    fi
    ;;
  *) echo "E2E_STACK must be mnist, local, text or text-local; got $STACK" >&2; exit 2 ;;
esac
work=$(mktemp -d /tmp/cyber0-compose-e2e.XXXXXX)
results=$work/results
data=$work/data
mkdir -p "$results" "$data"

stage=setup
stage_started=$SECONDS
timings=()
started_dockerd=
compose_up=

begin() {  # begin NAME: close the previous stage's timer, announce the next one
  if [ "$stage" != setup ]; then timings+=("$(printf '%-22s %4d s' "$stage" $((SECONDS - stage_started)))"); fi
  stage=$1
  stage_started=$SECONDS
  echo "== [compose-e2e] $stage =="
}

compose_env=(
  "COMPOSE_PROJECT_NAME=$PROJECT" "CYBER0_IMAGE=$IMAGE" "RESULTS_PATH=$results" TLS=true
  "DATA_PATH=$data" CLIENT_DATA=
  "HONEST_CLIENTS=$HONEST" "BYZANTINE_CLIENTS=$BYZANTINE" BYZANTINE_DAEMONS=1 REMOTE_CLIENTS=
  N_CLIENTS= "F=$BYZANTINE" "ATTACK=$ATTACK" ATTACK_PARAMS= AGGREGATOR=cwtm "ROUNDS=$ROUNDS"
  "NU=$NU" "LOCAL_STEPS=$K" "${plan_env[@]}"
  FEDERATOR_PUBLISH=127.0.0.1: FEDERATOR_HOSTS= FEDERATOR_IPS= TLS_SERVER_NAME=
  FEDERATOR_LOG_LEVEL=INFO CLIENT_LOG_LEVEL=WARNING
  # the image built below (compose's build section is not used: up --no-build)
  "BASE_IMAGE=$BASE_IMAGE_TAG" "CYBER0_EXTRAS=$EXTRAS" "CYBER0_NODEPS=$NODEPS"
)
compose() { env "${compose_env[@]}" docker-compose "${env_file[@]}" --ansi never "$@"; }
remove_stack() {  # the project's containers, networks and volumes, whoever started them
  compose down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker rm -f >/dev/null 2>&1
  docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" \
    | xargs -r docker volume rm >/dev/null 2>&1
  return 0
}

finish() {
  local code=$?
  set +e
  trap - EXIT INT TERM
  if [ "$code" -ne 0 ]; then
    echo "== [compose-e2e] FAILED in stage: $stage (exit $code) ==" >&2
    [ -s /tmp/dockerd.log ] && [ "$stage" = "start dockerd" ] && tail -20 /tmp/dockerd.log >&2
    if [ -n "$compose_up" ]; then
      compose ps >&2
      compose logs --no-color --tail 30 >&2
    fi
  fi
  if [ -n "$compose_up" ]; then
    echo "== [compose-e2e] teardown: containers, networks, volumes =="
    compose logs --no-color >"$work/compose.log" 2>&1
    remove_stack
  fi
  if [ -n "${E2E_KEEP_RESULTS:-}" ]; then
    mkdir -p "$E2E_KEEP_RESULTS" && cp -a "$results" "$work/compose.log" "$E2E_KEEP_RESULTS/" 2>/dev/null
  fi
  if [ -n "$started_dockerd" ]; then
    echo "== [compose-e2e] teardown: dockerd =="
    kill "$started_dockerd" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$started_dockerd" 2>/dev/null || break; sleep 1; done
    kill -9 "$started_dockerd" 2>/dev/null
  fi
  rm -rf "$work"
  timings+=("$(printf '%-22s %4d s' "$stage" $((SECONDS - stage_started)))")
  echo "== [compose-e2e] timings =="
  printf '  %s\n' "${timings[@]}"
  printf '  %-22s %4d s\n' total "$SECONDS"
  if [ "$code" -eq 0 ]; then
    echo "== [compose-e2e] passed =="
  else
    echo "== [compose-e2e] FAILED in stage: $stage ==" >&2
  fi
  exit "$code"
}
trap finish EXIT
trap 'exit 130' INT TERM

begin "install packages"
if command -v dockerd >/dev/null && command -v docker-compose >/dev/null \
  && command -v debootstrap >/dev/null; then
  echo "docker.io, docker-compose and debootstrap are already installed"
else
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
fi
docker-compose version --short

begin "start dockerd"
if docker info >/dev/null 2>&1; then
  echo "a Docker engine is already running: using it (and leaving it running)"
else
  dockerd >/tmp/dockerd.log 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$started_dockerd" 2>/dev/null || { echo "dockerd exited" >&2; exit 1; }
    sleep 1
  done
  docker info >/dev/null
fi
docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'

begin "base image"
if docker image inspect "$BASE_IMAGE_TAG" >/dev/null 2>&1; then
  echo "reusing $BASE_IMAGE_TAG"
else
  rootfs=$work/rootfs
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$BASE_IMAGE_TAG" >/dev/null
  rm -rf "$rootfs"
fi
docker run --rm --network none "$BASE_IMAGE_TAG" python3 --version

begin "wheelhouse"
EXTRAS=$EXTRAS NODEPS=$NODEPS bash docker/build-wheelhouse.sh \
  2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)

begin "image build"
docker build -q --force-rm -f docker/Dockerfile --build-arg BASE_IMAGE="$BASE_IMAGE_TAG" \
  --build-arg CYBER0_EXTRAS="$EXTRAS" --build-arg CYBER0_NODEPS="$NODEPS" -t "$IMAGE" . \
  2> >(grep -v -e DEPRECATED -e 'Install the buildx' -e 'docs.docker.com/go/buildx' >&2)
docker image ls "$IMAGE" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
if ls dist/wheelhouse/native/*/*.so >/dev/null 2>&1; then
  # The wheelhouse shipped the native direction generator: the image's clients must use it.
  docker run --rm --network none --entrypoint python "$IMAGE" -c \
    "from cyber0.common import native; assert native.kernel(), 'the shipped native generator is not used'"
  echo "the image's clients use the native direction generator"
fi

if [ "$STACK" = local ] || [ "$STACK" = text-local ]; then
  begin "data files"
  # Each party's own file: the shards of the built-in plan and the test set (observer).
  kind=()
  [ "$STACK" = text-local ] && kind=(--text)
  docker run --rm --network none -v "$data:/data" -v "$PWD/tests/docker:/checks:ro" \
    --entrypoint python "$IMAGE" /checks/write_shards.py /data --honest "$HONEST" \
    --byzantine "$BYZANTINE" "${kind[@]}"
fi

begin "stack up"
compose config -q
# A run killed before its teardown (a machine restart, kill -9) leaves its containers and the
# federator's state volume behind; the federator would resume that federation. Start clean.
stale=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT";
  docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
if [ -n "$stale" ]; then
  echo "removing what an earlier run of $PROJECT left behind: $(echo $stale | wc -w) containers/volumes"
  remove_stack
fi
compose_up=1
# Returns once the federator is healthy and every client has been started.
timeout 300 env "${compose_env[@]}" docker-compose "${env_file[@]}" --ansi never up -d --no-build
compose ps

begin "transport is TLS"
network=${PROJECT}_default
# Without certificates the federator does not talk; with the stack's CA and a client
# certificate it answers SERVING.
if docker run --rm --network "$network" -e TLS=false "$IMAGE" health federator:50051; then
  echo "a plaintext health check was answered: the federator is not serving TLS" >&2
  exit 1
fi
docker run --rm --network "$network" -v "${PROJECT}_certs:/certs:ro" -e TLS=true "$IMAGE" \
  health federator:50051

begin "training"
federator=$(compose ps -q federator)
deadline=$((SECONDS + 900))
while [ "$(docker inspect -f '{{.State.Running}}' "$federator")" = true ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then echo "the federator is still running after 900 s" >&2; exit 1; fi
  sleep 15
  done_rounds=$(grep -c '"event": "round"' "$results/metrics.jsonl" 2>/dev/null || true)
  accuracy=$({ grep '"role": "observer"' "$results/metrics.jsonl" 2>/dev/null || true; } \
    | tail -1 | sed -n 's/.*"accuracy": \([0-9.]*\).*"round": \([0-9]*\).*/\1 after round \2/p')
  echo "  $done_rounds/$ROUNDS rounds; observer accuracy ${accuracy:--}"
done
# Every party ends by itself once the rounds are done; wait for the stragglers, then read the
# exit codes of every container of the stack (certs included).
for _ in $(seq 1 60); do
  [ -z "$(compose ps -q | xargs -r docker inspect -f '{{if .State.Running}}x{{end}}' | tr -d '\n')" ] && break
  sleep 2
done
failed=0
for id in $(compose ps -q); do
  read -r name running code < <(docker inspect -f '{{.Name}} {{.State.Running}} {{.State.ExitCode}}' "$id")
  if [ "$running" = true ]; then
    echo "  ${name#/}: still running"
    failed=1
  else
    echo "  ${name#/}: exit $code"
    [ "$code" = 0 ] || failed=1
  fi
done
[ "$failed" = 0 ] || { echo "a container of the stack is still running or did not exit 0" >&2; exit 1; }
compose logs --no-color federator | grep -F 'summary:' || true

begin "checks"
compose logs --no-color >"$work/compose.log" 2>&1
docker run --rm --network none -v "$results:/results:ro" -v "$PWD/tests/docker:/checks:ro" \
  -v "$work/compose.log:/compose.log:ro" --entrypoint python "$IMAGE" /checks/check_results.py \
  /results --rounds "$ROUNDS" --nu "$NU" --local-steps "$K" --honest "$HONEST" \
  --byzantine "$BYZANTINE" --attack "$ATTACK" --bar "$BAR" --compose-log /compose.log \
  --expect-digest "${E2E_EXPECT_DIGEST:-}"
if [ -n "${E2E_DIGEST_OUT:-}" ]; then
  sed -n 's/.*"digest": "\([0-9a-f]*\)".*/\1/p' "$results/clients/observer.json" >"$E2E_DIGEST_OUT"
fi
