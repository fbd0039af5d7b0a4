#!/usr/bin/env bash
# Runs each fuzz target for a fixed time (default 60 s each; FUZZ_SECONDS to change),
# one after another, and exits non-zero at the first crash, leaving the input that
# crashed under events/fuzz/artifacts/<target>/. Usage:
#   events/fuzz/run.sh [target ...]        # default: every target
#   FUZZ_SECONDS=600 events/fuzz/run.sh    # the ten-minute runs
# Needs the nightly toolchain (libFuzzer's instrumentation) and cargo-fuzz, which it
# installs from crates.io when missing, and a C++ compiler (libFuzzer is C++).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${CAFE_CACHE_DIR:-$HOME/.cache/cloudcafe}
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope kpl)

say() { printf '==> %s\n' "$*" >&2; }

rustup toolchain list | grep -q '^nightly' || { say "installing the nightly toolchain"; rustup toolchain install nightly --profile minimal; }
command -v c++ >/dev/null || { say "installing g++ (libFuzzer is C++)"; apt-get install -y -qq g++ >/dev/null; }
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

# The seeds are regenerated, not kept: valid records written by the event crate itself.
corpus="$here/corpus"
for t in envelope kpl; do
  if [ ! -d "$corpus/$t" ] || [ -z "$(ls -A "$corpus/$t")" ]; then
    say "writing the seed corpus"
    (cd "$repo" && CARGO_TARGET_DIR="$cache/target" cargo run -q -p cafe-events --example fuzz_seeds -- "$corpus")
    break
  fi
done

cd "$here"
export CARGO_TARGET_DIR="$cache/fuzz-target"
mkdir -p "$here/artifacts"
for t in "${targets[@]}"; do
  say "fuzzing $t for ${seconds}s"
  log="$here/artifacts/$t.log"
  status=0
  cargo +nightly fuzz run "$t" "$corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|Done [0-9]+ runs)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    say "$t crashed (exit $status): the input is under $here/artifacts/$t/, the log in $log"
    exit 1
  fi
done
say "no crash in ${targets[*]} (${seconds}s each)"
