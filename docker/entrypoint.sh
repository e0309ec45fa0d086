#!/usr/bin/env bash
# Entrypoint of the cyber0 image: the first argument is the role, the knobs come from the
# environment (docker-compose.yml passes .env's). Roles:
#   federator   serve the plan written from the environment; metrics, plan, log, summary -> /results
#   client      an honest training client, id honest-N (N: this container's replica number)
#   byzantine   Byzantine daemon N of BYZANTINE_DAEMONS, holding identities byzantine-J dealt
#               round-robin among the daemons (1 daemon = all identities colluding)
#   observer    evaluates the model every EVAL_EVERY rounds (its reports land in metrics.jsonl)
#   certs       create the CA and the federator's and every client's certificate in /certs;
#               "certs revoke ID..." revokes, "bundle ID" writes ID's files as a tar on stdout
#   health      exit 0 when the federator answers SERVING (the compose healthcheck)
#   any other command: run it as given (e.g. cyber0-client ... for a client outside the stack)
# TLS takes true or false (also 1/0, yes/no, on/off, any case); anything else exits 2.
# Paths (overridable for tests): CYBER0_LIB (this script's helpers), RESULTS_DIR, CERTS_DIR,
# STATE_DIR, CA_DIR.
set -euo pipefail
shopt -s inherit_errexit  # a failing command inside $(...) fails the assignment too
lib=${CYBER0_LIB:-/usr/local/lib/cyber0}
results=${RESULTS_DIR:-/results}
certs=${CERTS_DIR:-/certs}
state=${STATE_DIR:-/state}
target=${FEDERATOR_ADDRESS:-federator:50051}
role=${1:-help}
[ $# -gt 0 ] && shift
# "docker compose run --rm certs revoke ID" / "... -T certs bundle ID": certificate commands.
case "$role" in
  bundle | revoke) set -- "$role" "$@"; role=certs ;;
esac

log() { echo "[$role] $*" >&2; }
# bool_knob NAME DEFAULT: status 0 when the knob NAME (DEFAULT when unset or empty) is true, 1
# when false; anything else exits 2 naming it (a typo must not turn TLS off).
bool_knob() {
  local value
  read -r value <<<"${!1:-$2}" || true
  case "${value,,}" in
    1 | true | yes | on) return 0 ;;
    0 | false | no | off) return 1 ;;
    *) log "$1 must be true or false; got '$value'"; exit 2 ;;
  esac
}
tls=false
case "$role" in
  federator | client | observer | byzantine | health | certs)
    if bool_knob TLS false; then tls=true; fi ;;
esac
tls_on() { [ "$tls" = true ]; }

# Run as the owner of the results folder (files on the host then belong to its owner).
if [ "$(id -u)" = 0 ] && [ -d "$results" ] && [ "$role" != certs ]; then
  owner=$(stat -c %u:%g "$results")
  if [ "$owner" != 0:0 ]; then
    # The federator's durable log lives in a named volume, created root-owned.
    if [ -d "$state" ]; then chown "$owner" "$state"; fi
    exec setpriv --reuid "${owner%:*}" --regid "${owner#*:}" --clear-groups \
      env HOME=/tmp "$0" "$role" "$@"
  fi
fi

# Run "$@" with stdout copied to FILE, forwarding SIGTERM/SIGINT; returns the command's status.
run_teed() {
  local file=$1
  shift
  "$@" > >(tee "$file") &
  local pid=$!
  trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT
  local code=0
  wait "$pid" || code=$?
  # wait returns early (>128) when a trapped signal arrives: wait for the child to end.
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || code=$?; done
  trap - TERM INT
  return "$code"
}

client_tls_args() {  # the client's TLS flags ({id}: each identity's own certificate)
  if tls_on; then
    echo --tls-ca "$certs/ca.pem" --tls-cert "$certs/clients/{id}.pem" \
      --tls-key "$certs/clients/{id}.key" --tls-server-name "${TLS_SERVER_NAME:-federator}"
  fi
}

data_args=()  # the party's own examples file ({id}: each identity's), for a local plan
[ -n "${CLIENT_DATA:-}" ] && data_args=(--data "$CLIENT_DATA")

training_ids() {  # the enrolment, one id a line: honest-1..H, byzantine-1..B, REMOTE_CLIENTS
  python "$lib/stack.py" enrolment
}

# A fresh federation: move whatever an earlier run left in results/ (finished or not) to
# results/previous/<UTC time of its newest file>/.
archive_earlier_run() {
  local name newest=
  for name in metrics.jsonl federator.log summary.json federation.yaml enrolment.txt clients; do
    if [ -e "$results/$name" ] && { [ -z "$newest" ] || [ "$results/$name" -nt "$newest" ]; }; then
      newest=$results/$name
    fi
  done
  [ -n "$newest" ] || return 0
  local stamp old n=1
  stamp=$(date -u -r "$newest" +%Y%m%dT%H%M%SZ)
  old=$results/previous/$stamp
  while [ -e "$old" ]; do n=$((n + 1)); old=$results/previous/$stamp-$n; done
  mkdir -p "$old"
  find "$results" -mindepth 1 -maxdepth 1 ! -name previous -exec mv -t "$old" {} +
  log "the previous run's results moved to $old"
}

start_client() {  # NAME CLIENT-ARGS...: a client daemon whose JSON lines go to results/clients/
  local name=$1
  shift
  mkdir -p "$results/clients"
  log "federator $target; $*"
  local code=0
  run_teed "$results/clients/$name.json" \
    cyber0-client --target "$target" --log-level "${CLIENT_LOG_LEVEL:-WARNING}" "$@" || code=$?
  log "exit $code"
  return "$code"
}

case "$role" in
  federator)
    mkdir -p "$results" "$state"
    fresh=
    if [ ! -e "$state/federator.db" ]; then
      # A fresh federation (empty state volume): move the last run's results aside and forget
      # its replica numbers (the clients start after this, once the federator is healthy).
      fresh=1
      archive_earlier_run
      rm -rf "$results/.replicas"
    fi
    # The plan and enrolment are written to the state volume: a resume the federator refuses
    # (a plan other than its log's) must not overwrite the results of the run it refused. They
    # are copied into results/ for a fresh federation, or once a resumed one has ended with 0.
    plan=$state/federation.yaml
    python "$lib/stack.py" config "$plan"
    # Shards go by enrolment order (honest-1 gets shard 0, ...) so a run is reproducible; an
    # explicit N_CLIENTS that differs from the ids known here leaves enrolment to join order.
    ids=$(training_ids | tr '\n' ' ')
    read -r -a enrolled <<<"$ids"
    extra=()
    published=("$plan")
    if [ -z "${N_CLIENTS:-}" ] || [ "${N_CLIENTS}" -eq "${#enrolled[@]}" ]; then
      printf '%s\n' "${enrolled[@]}" >"$state/enrolment.txt"
      extra+=(--enrolment "$state/enrolment.txt")
      published+=("$state/enrolment.txt")
    fi
    if [ -n "$fresh" ]; then cp "${published[@]}" "$results/"; fi
    if tls_on; then
      extra+=(--tls-cert "$certs/federator.pem" --tls-key "$certs/federator.key"
              --tls-client-ca "$certs/ca.pem" --tls-crl "$certs/crl.pem")
    else
      log "TLS is off: serving plaintext on every interface (--insecure)"
      extra+=(--insecure)
    fi
    code=0
    run_teed /dev/null cyber0-federator --config "$plan" \
      --host 0.0.0.0 --port 50051 --metrics "$results/metrics.jsonl" --wire-metrics \
      --log-db "$state/federator.db" --log-level "${FEDERATOR_LOG_LEVEL:-INFO}" \
      "${extra[@]}" "$@" 2> >(tee -a "$results/federator.log" >&2) || code=$?
    log "federator exit $code"
    if [ -z "$fresh" ] && [ "$code" = 0 ]; then cp "${published[@]}" "$results/"; fi
    python "$lib/stack.py" summary "$results" || true
    exit "$code"
    ;;
  client)
    id="honest-$(python "$lib/stack.py" index honest "${HONEST_CLIENTS:-6}")"
    # shellcheck disable=SC2046
    start_client "$id" --id "$id" "${data_args[@]}" $(client_tls_args) "$@"
    ;;
  observer)
    index=$(python "$lib/stack.py" index observer 100)
    id=observer
    [ "$index" -gt 1 ] && id="observer-$index"
    # shellcheck disable=SC2046
    start_client "$id" --id "$id" --role observer --eval-every "${EVAL_EVERY:-10}" \
      --save-model "$results/$id.safetensors" "${data_args[@]}" $(client_tls_args) "$@"
    ;;
  byzantine)
    python "$lib/stack.py" check  # BYZANTINE_DAEMONS=0 with identities to hold, ...
    daemons=${BYZANTINE_DAEMONS:-1}
    daemon=$(python "$lib/stack.py" index byzantine "$daemons")
    held=$(python "$lib/stack.py" ids byzantine "${BYZANTINE_CLIENTS:-2}" "$daemon" "$daemons")
    read -r -a ids <<<"$held"
    if [ ${#ids[@]} -eq 0 ]; then
      log "daemon $daemon of $daemons holds no identity (BYZANTINE_CLIENTS=${BYZANTINE_CLIENTS:-2})"
      exit 0
    fi
    args=(--role byzantine --attack "${ATTACK:-alie}")
    for param in ${ATTACK_PARAMS:-}; do args+=(--attack-param "$param"); done
    mode="colluding: one daemon crafts the rows of all ${#ids[@]} identities together"
    [ "${#ids[@]}" -eq 1 ] && mode="alone: this daemon sees only its own honest vector"
    log "attack ${ATTACK:-alie}${ATTACK_PARAMS:+ ($ATTACK_PARAMS)} as ${ids[*]} ($mode)"
    # shellcheck disable=SC2046
    start_client "byzantine-daemon-$daemon" "${ids[@]/#/--id=}" "${args[@]}" \
      "${data_args[@]}" $(client_tls_args) "$@"
    ;;
  health)
    if tls_on; then
      export TLS_CA="$certs/ca.pem" TLS_CERT="$certs/clients/healthcheck.pem" \
        TLS_KEY="$certs/clients/healthcheck.key" TLS_SERVER_NAME="${TLS_SERVER_NAME:-federator}"
    fi
    exec python "$lib/stack.py" health "$@"
    ;;
  certs)
    # Idempotent. The CA's key stays in $ca (mounted in this service only); $certs gets the
    # CA certificate, the revocation list, the federator's pair and every client's pair.
    # Arguments run cyber0-certs on the CA first (e.g. "revoke byzantine-1"); "bundle ID"
    # writes a tar of ca.pem, ID.pem and ID.key to stdout, for a remote client.
    ca=${CA_DIR:-/ca}
    if [ "${1:-}" = bundle ]; then
      usage="usage: certs bundle ID (ID: a client id the certs service issued a certificate for)"
      id_pattern='^[A-Za-z0-9._-]{1,128}$'  # the federator's client id pattern: no "/"
      if [ $# -ne 2 ] || ! [[ $2 =~ $id_pattern ]]; then
        log "$usage"
        exit 2
      fi
      if [ ! -f "$ca/clients/$2.pem" ] || [ ! -f "$ca/clients/$2.key" ]; then
        log "no client certificate for '$2' in $ca/clients; $usage"
        exit 2
      fi
      exec tar -c -C "$ca" ca.pem -C "$ca/clients" "$2.pem" "$2.key"
    fi
    if ! tls_on; then
      log "TLS is off: no certificates made"
      exit 0
    fi
    ids=$(training_ids | tr '\n' ' ')  # first: bad counts issue nothing
    mkdir -p "$ca" "$certs"
    [ -e "$ca/ca.pem" ] || cyber0-certs init --out "$ca" >/dev/null
    if [ $# -gt 0 ]; then
      sub=$1
      shift
      cyber0-certs "$sub" --out "$ca" "$@" >&2
    fi
    # Extra names and addresses: separated by commas and/or whitespace.
    hosts=${FEDERATOR_HOSTS:-}
    addresses=${FEDERATOR_IPS:-}
    read -r -a names <<<"federator localhost ${hosts//[,[:space:]]/ }"
    read -r -a ips <<<"127.0.0.1 ${addresses//[,[:space:]]/ }"
    wanted="${names[*]} / ${ips[*]}"
    if [ ! -e "$ca/federator.pem" ] || [ "$(cat "$ca/federator.names" 2>/dev/null)" != "$wanted" ]; then
      cyber0-certs server --out "$ca" --force "${names[@]/#/--host=}" "${ips[@]/#/--ip=}" >/dev/null
      echo "$wanted" >"$ca/federator.names"
      log "federator certificate for $wanted"
    fi
    read -r -a everyone <<<"$ids observer healthcheck"
    missing=()
    for id in "${everyone[@]}"; do [ -e "$ca/clients/$id.pem" ] || missing+=("$id"); done
    if [ ${#missing[@]} -gt 0 ]; then
      cyber0-certs client --out "$ca" "${missing[@]}" >/dev/null
      log "client certificates issued for ${missing[*]}"
    fi
    # Publish everything but the CA's key; the other services run as the owner of the results
    # folder, so they get to read their keys.
    # (each file replaced atomically: a running federator re-reads crl.pem when it changes)
    mkdir -p "$certs/clients"
    for src in "$ca"/{ca.pem,crl.pem,federator.pem,federator.key} "$ca"/clients/*; do
      file=${src#"$ca"/}
      cp -a "$src" "$certs/$file.tmp" && mv -f "$certs/$file.tmp" "$certs/$file"
    done
    if [ -d "$results" ]; then chown -R "$(stat -c %u:%g "$results")" "$certs"; fi
    issued=("$certs"/clients/*.pem)
    log "${#issued[@]} client certificates in $certs"
    ;;
  help)
    sed -n '2,/^set /p' "$0" | grep '^#' | cut -c3-
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
