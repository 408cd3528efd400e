#!/bin/bash
# bench-s fp32 on 1 process × 2 threads, 2 pipeline stages × 1 thread and 2
# data-parallel ranks × 1 thread, alternating, ROUNDS times (default 3), each process
# under /usr/bin/time (max RSS). Needs a `--features mpi` release build and mpiexec.
# PERF.md "Issue 29" has what it printed.
set -euo pipefail
cd "$(dirname "$0")/.."
C=target/release/cllm
S=specs/bench-s.cllm
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for round in $(seq "${1:-3}"); do
  echo "== round $round: 1 process × 2 threads"
  /usr/bin/time -f "maxrss %M KB" $C run $S --steps 20 --threads 2 --out "$out/one$round" 2>&1 \
    | grep -E "^wall|maxrss|step +20/"
  echo "== round $round: 2 pipeline stages × 1 thread"
  mpiexec -n 2 /usr/bin/time -f "maxrss %M KB" $C run $S --steps 20 --threads 1 \
    --set plan.stages=2 --out "$out/stages$round" 2>&1 | grep -E "^wall|maxrss|step +20/|pipeline stages:"
  echo "== round $round: 2 data-parallel ranks × 1 thread"
  mpiexec -n 2 /usr/bin/time -f "maxrss %M KB" $C run $S --steps 20 --threads 1 \
    --out "$out/ranks$round" 2>&1 | grep -E "^wall|maxrss|step +20/|ranks:"
done
