#!/usr/bin/env bash
# The cost model of docs/scaling.md against a link of known bandwidth: R MPI ranks of
# `cllm run` whose exchange is forced through TCP on the loopback (MPICH over UCX: no
# shared memory, every rank "on another node"), with the loopback's rate limited by a
# token bucket (`tc qdisc ... tbf`). Needs root, tc, mpiexec and a binary built with
# `--features mpi`. Only the loopback is touched, and its queue is removed on exit.
#
#   scripts/shaped_link.sh RATE RANKS [STEPS] [SPEC]    e.g. scripts/shaped_link.sh 1gbit 2
#   (RATE `none`: TCP on the loopback unshaped, the exchange's software cost alone)
#   CLLM_ARGS="--set plan.overlap=false": more arguments for `cllm run`
#
# The loopback is one queue that every rank's bytes cross: R ranks share RATE, so the
# model's per-rank bandwidth is RATE / R (`cllm plan SPEC --ranks R --network
# (RATE/R),LATENCY`). The kernel here has no netem, so latency cannot be added; the
# loopback's own (tens of µs) stays. Prints the measured exchange seconds per step and
# the model's. The run's exchange seconds include the checkpoint's gathering of the AdamW
# moments at the end (two all-gathers of the parameters' size: one step's worth of
# bytes), so they are divided by STEPS + 1.
set -euo pipefail
rate=${1:?rate, e.g. 1gbit}
ranks=${2:?ranks}
steps=${3:-20}
spec=${4:-specs/bench-xs.cllm}
cllm=${CLLM:-target/release/cllm}
"$cllm" --version | grep -q mpi || { echo "$cllm is not built with --features mpi" >&2; exit 1; }
out=$(mktemp -d)
trap 'tc qdisc del dev lo root 2>/dev/null || true; rm -rf "$out"' EXIT
[ "$rate" = none ] || tc qdisc add dev lo root tbf rate "$rate" burst 256kb latency 200ms
log=$(UCX_TLS=tcp,self MPIR_CVAR_NOLOCAL=1 mpiexec -n "$ranks" "$cllm" run "$spec" \
  --steps "$steps" --threads 1 --out "$out/run" --set eval.every=100000 ${CLLM_ARGS:-} 2>&1)
[ "$rate" = none ] || tc qdisc del dev lo root
echo "$log" | grep -E "ranks:|^wall|waiting"
seconds=$(echo "$log" | sed -n 's/.*ranks: \([0-9.]*\) s in the exchange.*/\1/p')
echo "measured: $(awk -v s="$seconds" -v n="$steps" 'BEGIN { printf "%.1f", 1000 * s / (n + 1) }') ms of exchange per step (rank 0, waits included)"
[ "$rate" = none ] && exit 0   # TCP on the loopback unshaped: the software's own cost
bits=$(numfmt --from=si "$(echo "$rate" | sed 's/bit$//I; s/[a-z]$/\U&/')")
share=$(awk -v b="$bits" -v r="$ranks" 'BEGIN { printf "%g", b / r / 1e6 }')
"$cllm" plan "$spec" --ranks "$ranks" --threads 1 --network "${share}Mbit,50us" ${CLLM_ARGS:-} 2>&1 \
  | awk -v r="$ranks" '/ranks +compute/ { go = 1; next } go && $1 == r { print "model:    " $3 " ms of exchange per step at " r " ranks"; exit }'
