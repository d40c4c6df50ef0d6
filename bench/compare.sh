#!/usr/bin/env bash
# Runs the same Pub/Sub scenarios through shmcast (shmcast-bench), a private redis-server on a
# unix socket (redis-bench-pubsub, publisher unpipelined and pipelined) and plain Unix domain
# sockets (uds-bench), and prints one markdown table. Progress goes to stderr, the table to
# stdout. bench/README.md explains every column.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/compare.sh [--seconds S] [--payload BYTES] [--pipeline N] [--build DIR] [--json FILE]

  --seconds S      measured window of every run, after a 0.5 s warm-up (default 2)
  --payload BYTES  payload of every message, at least 8 (default 64)
  --pipeline N     PUBLISH commands the pipelined Redis publisher sends per round trip (default 64)
  --build DIR      the build folder holding bin/ (default: build, next to bench/)
  --json FILE      also append every run's JSON report to FILE
EOF
}

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=2
payload=64
pipeline=64
build=$root/build
json_out=
while (($# > 0)); do
  case $1 in
    --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
    --payload) payload=${2:?--payload needs a value}; shift 2 ;;
    --pipeline) pipeline=${2:?--pipeline needs a value}; shift 2 ;;
    --build) build=${2:?--build needs a folder}; shift 2 ;;
    --json) json_out=${2:?--json needs a file}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

bin=$build/bin
for program in shmcast-bench shmcastd redis-bench-pubsub uds-bench floor-bench; do
  if [[ ! -x $bin/$program ]]; then
    echo "compare.sh: no $bin/$program; build it: cmake --build $build --target shmcast-bench shmcastd redis-bench-pubsub uds-bench floor-bench" >&2
    exit 1
  fi
done
if ! command -v redis-server >/dev/null; then
  echo "compare.sh: redis-server is not installed (tools/deps.sh installs it)" >&2
  exit 1
fi

# A private redis-server: nothing written to disk, reachable only through its socket in our
# temporary folder, and no output-buffer limit for pub/sub clients, so that a subscriber that
# falls behind is not disconnected mid-run (the benchmark bounds the backlog itself).
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmcast-compare.XXXXXX")
redis_pid=
cleanup() {
  if [[ -n $redis_pid ]]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

socket=$tmp/redis.sock
redis-server --port 0 --unixsocket "$socket" --unixsocketperm 700 --save '' --appendonly no \
  --client-output-buffer-limit 'pubsub 0 0 0' --logfile "$tmp/redis.log" &
redis_pid=$!
for _ in $(seq 200); do
  [[ -S $socket ]] && break
  if ! kill -0 "$redis_pid" 2>/dev/null; then
    echo "compare.sh: redis-server exited at start:" >&2
    cat "$tmp/redis.log" >&2
    exit 1
  fi
  sleep 0.05
done
[[ -S $socket ]] || { echo "compare.sh: redis-server did not open $socket within 10 s" >&2; exit 1; }

# Results by "system scenario": each a JSON report, or "failed".
declare -A result

# measure SYSTEM SCENARIO COMMAND...: runs one benchmark and keeps its report.
measure() {
  local system=$1 scenario=$2
  shift 2
  echo "compare.sh: $system $scenario" >&2
  local out
  if out=$("$@" --scenario "$scenario" --seconds "$seconds" --payload "$payload" --json); then
    result[$system $scenario]=$out
    if [[ -n $json_out ]]; then printf '%s\n' "$out" >>"$json_out"; fi
  else
    echo "compare.sh: $system $scenario failed" >&2
    result[$system $scenario]=failed
  fi
}

shmcast_only=(channels-100k)
throughput=(single fanout-10 fanout-100 fanout-1000 no-subscribers)
one_in_flight=(latency-spin latency-block pingpong-spin pingpong-block sparse)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

for scenario in "${throughput[@]}" "${shmcast_only[@]}" "${one_in_flight[@]}"; do
  measure shmcast "$scenario" "$bin/shmcast-bench"
done
for scenario in "${throughput[@]}" "${one_in_flight[@]}"; do
  measure redis "$scenario" "$bin/redis-bench-pubsub" --socket "$socket" --server-pid "$redis_pid"
  measure uds "$scenario" "$bin/uds-bench"
done
# shmcast's publish_batch, 64 messages per call, against the same Unix-socket runs (its server
# writes each subscriber what it routed from one read at once).
for scenario in single fanout-10 fanout-100 fanout-1000; do
  measure shmcast-batch "$scenario" "$bin/shmcast-bench" --publish batch
done
# The bare futex hand-off, for sparse's p50 to be read against in the same run.
measure floor floor-block "$bin/floor-bench"
for scenario in "${throughput[@]}"; do
  measure redis-pipelined "$scenario" "$bin/redis-bench-pubsub" --socket "$socket" \
    --server-pid "$redis_pid" --pipeline "$pipeline"
done

# field JSON NAME: the number after "NAME": in a report (names are unique within one).
field() {
  sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"
}

# value SYSTEM SCENARIO NAME: the number, empty if the run was not made or failed.
value() {
  local json=${result[$1 $2]:-}
  if [[ -z $json || $json == failed ]]; then return; fi
  field "$json" "$3"
}

format() {  # kind (rate|ns), value
  if [[ -z $2 ]]; then
    echo "-"
  elif [[ $1 == rate ]]; then
    awk -v v="$2" 'BEGIN {
      s = sprintf("%.0f", v); out = ""
      while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
      print s out "/s" }'
  else
    awk -v v="$2" 'BEGIN { us = v / 1000; printf(us < 10 ? "%.2f µs\n" : "%.1f µs\n", us) }'
  fi
}

# cell KIND SYSTEM SCENARIO NAME: the figure as the table shows it.
cell() {
  if [[ ${result[$2 $3]:-} == failed ]]; then echo failed; return; fi
  format "$1" "$(value "$2" "$3" "$4")"
}

# How many times better shmcast is: its rate over the other's, or the other's latency over its.
ratio() {  # kind, shmcast value, other value
  if [[ -z $2 || -z $3 ]] || awk -v a="$2" -v b="$3" 'BEGIN { exit !(a == 0 || b == 0) }'; then
    echo "-"
  else
    awk -v a="$2" -v b="$3" -v kind="$1" 'BEGIN {
      r = kind == "rate" ? a / b : b / a
      printf(r >= 10 ? "%.0fx\n" : r >= 1 ? "%.1fx\n" : "%.2gx\n", r) }'
  fi
}

# cpu SCENARIO: cpu_ns_per_delivery of shmcast / Redis / Redis pipelined / UDS.
cpu() {
  local system v out=
  for system in shmcast redis redis-pipelined uds; do
    v=$(value "$system" "$1" cpu_ns_per_delivery)
    if [[ ${result[$system $1]:-} == failed ]]; then v=failed; fi
    out+="${out:+ / }${v:--}"
  done
  echo "$out"
}

row() {  # scenario, what (label), kind, field, "cpu" to fill the CPU column
  local scenario=$1 what=$2 kind=$3 name=$4
  local s r rp u best
  s=$(value shmcast "$scenario" "$name")
  r=$(value redis "$scenario" "$name")
  rp=$(value redis-pipelined "$scenario" "$name")
  u=$(value uds "$scenario" "$name")
  best=${rp:-$r}
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$scenario" "$what" \
    "$(cell "$kind" shmcast "$scenario" "$name")" "$(cell "$kind" redis "$scenario" "$name")" \
    "$(cell "$kind" redis-pipelined "$scenario" "$name")" "$(cell "$kind" uds "$scenario" "$name")" \
    "$(ratio "$kind" "$s" "$best")" "$(ratio "$kind" "$s" "$u")" \
    "$(if [[ ${5:-} == cpu ]]; then cpu "$scenario"; fi)"
}

echo "Payload $payload B, ${seconds} s per run after a 0.5 s warm-up, Redis pipeline $pipeline;" \
  "$(nproc) CPUs, $(uname -sr), load average $load_before before the first run, $(date -u +%F)."
echo
echo "| scenario | figure | shmcast | Redis | Redis pipelined | UDS | shmcast vs Redis | shmcast vs UDS | CPU ns per delivery: shmcast / Redis / pipelined / UDS |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
row single "deliveries/s" rate received_per_s cpu
row fanout-10 "deliveries/s" rate received_per_s cpu
row fanout-100 "deliveries/s" rate received_per_s cpu
row fanout-1000 "deliveries/s" rate received_per_s cpu
row channels-100k "deliveries/s" rate received_per_s cpu
row no-subscribers "publishes/s" rate publishes_per_s
row latency-spin "one-way p50" ns p50 cpu
row latency-spin "one-way p99" ns p99
row latency-block "one-way p50" ns p50 cpu
row latency-block "one-way p99" ns p99
row pingpong-spin "RTT/2 p50" ns p50 cpu
row pingpong-spin "RTT/2 p99" ns p99
row pingpong-block "RTT/2 p50" ns p50 cpu
row pingpong-block "RTT/2 p99" ns p99
row sparse "one-way p50" ns p50 cpu
row sparse "one-way p99" ns p99

echo
echo "shmcast with Bus::publish_batch (64 messages per call) against the same UDS runs:"
echo
echo "| scenario | shmcast batched deliveries/s | vs UDS | CPU ns per delivery: batched / UDS |"
echo "| --- | ---: | ---: | ---: |"
for scenario in single fanout-10 fanout-100 fanout-1000; do
  printf '| %s | %s | %s | %s / %s |\n' "$scenario" \
    "$(cell rate shmcast-batch "$scenario" received_per_s)" \
    "$(ratio rate "$(value shmcast-batch "$scenario" received_per_s)" \
      "$(value uds "$scenario" received_per_s)")" \
    "$(value shmcast-batch "$scenario" cpu_ns_per_delivery)" \
    "$(value uds "$scenario" cpu_ns_per_delivery)"
done

# sparse's p50 over the bare futex hand-off's (floor-block, round trip / 2) of this run.
floor=$(value floor floor-block p50)
if [[ -n $floor ]]; then
  echo
  line="floor-block (bare futex hand-off) p50: $(format ns "$floor"); sparse p50 over it:"
  for system in shmcast redis uds; do
    v=$(value "$system" sparse p50)
    line+=" $system $(if [[ -n $v ]]; then awk -v a="$v" -v b="$floor" 'BEGIN { printf("%.2fx", a / b) }'; else echo -; fi)"
  done
  echo "$line"
fi
