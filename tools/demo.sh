#!/usr/bin/env bash
# A live demo on the bus `demo`: starts a coordinator (or uses the running one), two
# subscribers, publishes a few messages, shows shm-stat, and leaves the coordinator running.
# SHMCAST_DEMO_BUS and SHMCAST_DEMO_BIN choose another bus and another build's programs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${SHMCAST_DEMO_BIN:-build/bin}
bus=${SHMCAST_DEMO_BUS:-demo}

if ! "$bin/shm-stat" --bus "$bus" >/dev/null 2>&1; then
  # Its own log file, not our stdout: the coordinator outlives this script and its pipe.
  "$bin/shmcastd" --bus "$bus" >>"/tmp/shmcastd-$bus.log" 2>&1 &
  for _ in $(seq 100); do "$bin/shm-stat" --bus "$bus" >/dev/null 2>&1 && break; sleep 0.05; done
fi
coordinator=$("$bin/shm-stat" --bus "$bus" --json | sed -n 's/.*"coordinator": *{ *"pid": *\([0-9]*\).*/\1/p')

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== two subscribers: one on 'news' (until 2 messages), one on the pattern 'user:*:alerts'"
"$bin/shmcast" --bus "$bus" --count 2 --timeout 10 subscribe news >"$out/news" &
sub1=$!
"$bin/shmcast" --bus "$bus" --count 1 --timeout 10 psubscribe 'user:*:alerts' >"$out/alerts" &
sub2=$!
# Publishing starts once both subscriptions are in force, however slow the machine is.
for _ in $(seq 200); do
  news=$("$bin/shmcast" --bus "$bus" pubsub numsub news | sed -n 2p)
  patterns=$("$bin/shmcast" --bus "$bus" pubsub numpat)
  [ "${news:-0}" -ge 1 ] && [ "${patterns:-0}" -ge 1 ] && break
  sleep 0.05
done

publish() {
  printf '  shmcast publish %-15s %-20s -> ' "$1" "\"$2\""
  "$bin/shmcast" --bus "$bus" publish "$1" "$2"
}
echo "== a publisher: each publish prints how many subscribers received it"
publish news "shmcast is up"
publish user:42:alerts "disk almost full"
publish weather "nobody listens"
echo "== shm-stat, with the news subscriber still attached"
"$bin/shm-stat" --bus "$bus"
publish news "second headline"
wait "$sub1" "$sub2" || true
echo "== what the news subscriber printed (as redis-cli prints it)"
sed 's/^/  /' "$out/news"
echo "== what the alerts subscriber printed"
sed 's/^/  /' "$out/alerts"
echo
echo "The coordinator of bus '$bus' keeps running (pid ${coordinator:-?}); stop it with: kill ${coordinator:-PID}"
echo "Try: $bin/shmcast --bus $bus subscribe news   and, in another shell: $bin/shmcast --bus $bus publish news hi"
