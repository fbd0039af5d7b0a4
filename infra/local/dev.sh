#!/usr/bin/env bash
# CloudCafe developer entry point. The README's two commands are:
#   infra/local/dev.sh run [--for 60s]   install what is missing, start the local stack, run the pipeline
#   infra/local/dev.sh test              fmt + clippy + every test, against a stack it starts itself
# Also: up [--fresh] | down | status | env  (thin wrappers over `cafe stack ...`).
#
# Installs only what is missing: Debian packages (redis-server, postgresql-15) with apt-get,
# the Python stand-ins (moto, nx-27017, cargo-lambda's emulator) into a venv. Build output and the venv live in a cache
# outside the clone (CAFE_CACHE_DIR, default ~/.cache/cloudcafe) so a fresh clone builds warm.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

cache=${CAFE_CACHE_DIR:-$HOME/.cache/cloudcafe}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
export CAFE__STACK__VENV=${CAFE__STACK__VENV:-$cache/venv}
export CAFE__STACK__STATE_DIR=${CAFE__STACK__STATE_DIR:-$repo/.state}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cafe_bin="$CARGO_TARGET_DIR/debug/cafe"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root for: $* (install it yourself, or run as root)"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  say "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_system_packages() {
  local missing=()
  command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
  [ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  command -v protoc >/dev/null || true # not needed: protox compiles .proto files in Rust
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

ensure_venv() {
  local req="$repo/infra/local/requirements.txt" nodeps="$repo/infra/local/requirements-nodeps.txt"
  local venv=$CAFE__STACK__VENV stamp="$CAFE__STACK__VENV/.cafe-requirements"
  if [ -f "$stamp" ] && cat "$req" "$nodeps" | cmp -s - "$stamp"; then return; fi
  say "preparing Python venv for moto, nx-27017 and cargo-lambda in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$nodeps"
  cat "$req" "$nodeps" > "$stamp"
}

build() {
  say "building (target dir $CARGO_TARGET_DIR)"
  cargo build --quiet -p cafe -p cafe-lambda-payment
}

ensure_all() { ensure_system_packages; ensure_venv; build; }

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  run)
    ensure_all
    exec "$cafe_bin" run "$@"
    ;;
  up)     ensure_all; exec "$cafe_bin" stack up "$@" ;;
  down)   [ -x "$cafe_bin" ] || build; exec "$cafe_bin" stack down "$@" ;;
  status) [ -x "$cafe_bin" ] || build; exec "$cafe_bin" stack status "$@" ;;
  env)    [ -x "$cafe_bin" ] || build; exec "$cafe_bin" stack env "$@" ;;
  test)
    [ $# -eq 0 ] || die "test takes no arguments"
    ensure_system_packages
    ensure_venv
    started=$(date +%s)
    say "cargo fmt --check"
    cargo fmt --all -- --check
    say "cargo clippy -D warnings"
    cargo clippy --quiet --workspace --all-targets -- -D warnings
    say "building every target (the same set the test runner uses, so nothing builds twice)"
    cargo build --quiet --workspace --all-targets
    # Reuse a stack that is already up; otherwise start one and stop it afterwards.
    stack_was_up=0
    "$cafe_bin" stack status >/dev/null 2>&1 && stack_was_up=1
    if [ "$stack_was_up" = 0 ]; then
      trap '"$cafe_bin" stack down >/dev/null 2>&1 || true' EXIT
    fi
    "$cafe_bin" stack up
    if cargo nextest --version >/dev/null 2>&1; then
      cargo nextest run --workspace --no-fail-fast --failure-output final
    else
      cargo test --workspace --no-fail-fast
    fi
    say "all checks passed in $(( $(date +%s) - started )) s"
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] && exit 2
    die "unknown command: $cmd"
    ;;
esac
