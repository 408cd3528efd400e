#!/usr/bin/env bash
# Seeds and runs the three fuzz targets on the stable toolchain, one after another or
# side by side, and prints libFuzzer's final statistics (executions, coverage).
#   usage: tests/fuzz/run.sh TARGET RUNS          TARGET: parse_spec | render_diagnostics | load_checkpoint
#   e.g.   tests/fuzz/run.sh parse_spec 4000000 & tests/fuzz/run.sh load_checkpoint 3000000
# Crashes land in tests/fuzz/artifacts/TARGET/; each one becomes a regression test.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: run.sh TARGET RUNS}; runs=${2:-1000000}
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir . -O "$target" >/dev/null
seeds=seeds/$target; mkdir -p "corpus/$target" "$seeds"
case $target in
  parse_spec | render_diagnostics)
    cp ../../specs/*.cllm "$seeds/"
    # Near the two crashes the first campaign had to find: deep nesting, long lines.
    python3 -c "open('$seeds/deep.cllm','w').write('cllm 0.1\nmodel gpt { layers = ' + '['*200 + ']'*200 + ' }\n')"
    python3 -c "open('$seeds/wide.cllm','w').write('cllm 0.1\nmodel gpt {' + ' '*70000 + 'head = 6 }\n')"
    ;;
  load_checkpoint)
    # A real checkpoint of a tiny model (42 KB), written by the release binary.
    if [ ! -s "$seeds/tiny.safetensors" ]; then
      out=$(mktemp -d)
      cargo run -q --release --manifest-path ../../Cargo.toml -- run ../../specs/add.cllm --steps 1 \
        --out "$out" --set model.layers=1 --set model.width=8 --set model.heads=1 \
        --set model.context=8 --set 'data.source=addition(digits = 1, held_out = 10)' >/dev/null 2>&1
      cp "$out/checkpoint.safetensors" "$seeds/tiny.safetensors"; rm -rf "$out"
    fi
    ;;
esac
exec cargo fuzz run --fuzz-dir . -O "$target" "corpus/$target" "$seeds" -- \
  -runs="$runs" -max_len=131072 -print_final_stats=1 -timeout=10 -rss_limit_mb=4096
