#!/usr/bin/env bash
# Runs shmcast-bench's publish paths side by side over payload sizes and subscriber counts and
# prints markdown tables: deliveries/s of copied and loaned messages (and, with --loan-copy,
# copies into a loan), their ratios and the CPU per delivery; then the one-way latency of a
# loaned 4 MiB message next to 64 B ones. Every run fills its payloads (--fill). Progress goes to
# stderr, the tables to stdout. bench/README.md ("Loans") explains them.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bench/loan_sweep.sh [--seconds S] [--sizes "B ..."] [--subscribers "N ..."] [--loan-copy]
                           [--no-latency] [--build DIR] [--json FILE]

  --seconds S          measured window of every run, after a 0.5 s warm-up (default 1)
  --sizes "B ..."      payload sizes in bytes (default "64 4096 65536 1048576 4194304")
  --subscribers "N ..." subscriber counts; 1 runs single (spinning), more fanout-10 with
                       --subscribers N (blocking) (default "1 10")
  --loan-copy          also publish each payload written in the publisher's buffer, then copied
                       into a loan: what the ordinary publish would cost through the pool
  --no-latency         leave out the latency table
  --build DIR          the build folder holding bin/ (default: build, next to bench/)
  --json FILE          also append every run's JSON report to FILE
EOF
}

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=1
sizes="64 4096 65536 1048576 4194304"
subscribers="1 10"
modes=(copy loan)
latency=1
build=$root/build
json_out=
while (($# > 0)); do
  case $1 in
    --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
    --sizes) sizes=${2:?--sizes needs a list}; shift 2 ;;
    --subscribers) subscribers=${2:?--subscribers needs a list}; shift 2 ;;
    --loan-copy) modes+=(loan-copy); shift ;;
    --no-latency) latency=0; shift ;;
    --build) build=${2:?--build needs a folder}; shift 2 ;;
    --json) json_out=${2:?--json needs a file}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "loan_sweep.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

bench=$build/bin/shmcast-bench
if [[ ! -x $bench || ! -x $build/bin/shmcastd ]]; then
  echo "loan_sweep.sh: no $bench or shmcastd; build them: cmake --build $build --target shmcast-bench" >&2
  exit 1
fi

# Results by "mode size subscribers" (latency: "latency mode size"): a JSON report, or "failed".
declare -A result

# measure KEY ARGS...: runs shmcast-bench once with ARGS and keeps its report under KEY.
measure() {
  local key=$1
  shift
  echo "loan_sweep.sh: $key" >&2
  local out
  if out=$("$bench" --fill --seconds "$seconds" --json "$@"); then
    result[$key]=$out
    if [[ -n $json_out ]]; then printf '%s\n' "$out" >>"$json_out"; fi
  else
    echo "loan_sweep.sh: $key failed" >&2
    result[$key]=failed
  fi
}

# value KEY NAME: the number after "NAME": in KEY's report, empty if it failed.
value() {
  local json=${result[$1]:-}
  if [[ -z $json || $json == failed ]]; then return; fi
  sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$json"
}

rate() {  # 1234567 -> 1,234,567/s; empty -> -
  if [[ -z $1 ]]; then echo "-"; return; fi
  awk -v v="$1" 'BEGIN {
    s = sprintf("%.0f", v); out = ""
    while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    print s out "/s" }'
}

ratio() {  # a over b, or - if either is missing or zero
  if [[ -z $1 || -z $2 ]] || awk -v a="$1" -v b="$2" 'BEGIN { exit !(a == 0 || b == 0) }'; then
    echo "-"
  else
    awk -v a="$1" -v b="$2" 'BEGIN { r = a / b; printf(r >= 10 ? "%.0fx\n" : "%.2fx\n", r) }'
  fi
}

size_name() {  # bytes -> 64 B, 4 KiB, 1 MiB
  awk -v b="$1" 'BEGIN {
    if (b >= 1048576 && b % 1048576 == 0) printf("%d MiB\n", b / 1048576)
    else if (b >= 1024 && b % 1024 == 0) printf("%d KiB\n", b / 1024)
    else printf("%d B\n", b) }'
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for size in $sizes; do
  for n in $subscribers; do
    for mode in "${modes[@]}"; do
      if ((n == 1)); then
        measure "$mode $size $n" --scenario single --payload "$size" --publish "$mode"
      else
        measure "$mode $size $n" --scenario fanout-10 --subscribers "$n" --payload "$size" \
          --publish "$mode"
      fi
    done
  done
done
if ((latency)); then
  for run in "copy 64" "loan 64" "loan 4194304" "copy 4194304"; do
    read -r mode size <<<"$run"
    measure "latency $run" --scenario latency-spin --payload "$size" --publish "$mode"
  done
fi

echo "Every payload filled by the publisher and its first and last byte read by each subscriber;" \
  "${seconds} s per run after a 0.5 s warm-up; $(nproc) CPUs, $(uname -sr), load average" \
  "$load_before before the first run, $(date -u +%F)."
echo
header="| payload | subscribers | copied | loaned | loaned / copied"
rule="| ---: | ---: | ---: | ---: | ---:"
cpu_header="copied / loaned"
if [[ " ${modes[*]} " == *" loan-copy "* ]]; then
  header+=" | copied into a loan | into a loan / copied"
  rule+=" | ---: | ---:"
  cpu_header+=" / into a loan"
fi
echo "$header | CPU ns per delivery: $cpu_header |"
echo "$rule | ---: |"
for size in $sizes; do
  for n in $subscribers; do
    copy=$(value "copy $size $n" received_per_s)
    loan=$(value "loan $size $n" received_per_s)
    cpu="$(value "copy $size $n" cpu_ns_per_delivery) / $(value "loan $size $n" cpu_ns_per_delivery)"
    line="| $(size_name "$size") | $n | $(rate "$copy") | $(rate "$loan") | $(ratio "$loan" "$copy")"
    if [[ " ${modes[*]} " == *" loan-copy "* ]]; then
      into=$(value "loan-copy $size $n" received_per_s)
      line+=" | $(rate "$into") | $(ratio "$into" "$copy")"
      cpu+=" / $(value "loan-copy $size $n" cpu_ns_per_delivery)"
    fi
    echo "$line | $cpu |"
  done
done

if ((latency)); then
  base=$(value "latency copy 64" p50)
  echo
  echo "One-way latency, latency-spin (one message in flight, the subscriber spinning), stamped" \
    "once the payload is written:"
  echo
  echo "| payload | published | p50 ns | p99 ns | p50 over 64 B copied's |"
  echo "| ---: | --- | ---: | ---: | ---: |"
  for run in "copy 64" "loan 64" "loan 4194304" "copy 4194304"; do
    read -r mode size <<<"$run"
    p50=$(value "latency $run" p50)
    p99=$(value "latency $run" p99)
    echo "| $(size_name "$size") | $mode | ${p50:--} | ${p99:--} | $(ratio "$p50" "$base") |"
  done
fi
