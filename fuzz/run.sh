#!/usr/bin/env bash
# Coverage-guided fuzzing of the SIP parser, the WebSocket client frames and the config loader
# with libFuzzer, for SECONDS each (default 60). The targets are a cargo-fuzz project
# (`cargo fuzz run sip_message` works too); this script builds them with plain cargo and the
# same instrumentation flags, so CI needs nothing beyond the Rust toolchain and a C++ compiler.
# Prints the executions and the corpus size per target; exits non-zero on a crash, whose input
# is left in fuzz/artifacts/TARGET/.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]      (hours: fuzz/run.sh 3600)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(sip_message client_frame config)

triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --release --target "$triple" --bins
mkdir -p seeds/config
cp ../config.toml seeds/config/shipped.toml

status=0
for t in "${targets[@]}"; do
  corpus="corpus/$t"
  mkdir -p "$corpus" "artifacts/$t"
  log=$(mktemp)
  if "target/$triple/release/$t" "$corpus" "seeds/$t" -seed=1 -max_total_time="$seconds" \
      -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz $t: ${runs:-?} executions in ${seconds}s, corpus $(ls "$corpus" | wc -l) inputs, no crash"
  else
    status=1
    echo "fuzz $t: FAILED" >&2
    tail -n 40 "$log" >&2
  fi
  rm -f "$log"
done
exit $status
