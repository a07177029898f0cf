#!/usr/bin/env bash
# API conformance: the running `tally` binary against its own /openapi.json.
#
# Starts the binary on a fresh embedded database (a temp dir, a free port, a known admin
# token, tenant rate limits off so the fuzzer is not throttled), seeds a tenant with a
# card and paid credit, an API key and a service token, then runs
#   1. openapi-spec-validator on the served document, and
#   2. schemathesis with every check and the examples, coverage, fuzzing and stateful
#      phases, bounded in time,
# and fails on any error or finding. The server and the temp dir go on every exit.
#
# Needs: python3 with venv (Debian: python3-venv), curl, jq; a built binary
# (TALLY_BIN, default target/debug/tally, built here when missing).
# Tools are pinned and installed into a venv under ~/.cache (kept between runs).
# The Stripe webhook is left out: it is a 404 unless Stripe is the provider (its tests are
# in tests/api/stripe_webhooks.rs).
# Knobs: CONFORMANCE_REPORT_DIR (keep the JUnit report), CONFORMANCE_MAX_TIME (seconds for schemathesis, default 240),
#        CONFORMANCE_MAX_EXAMPLES (per operation, default 40), CONFORMANCE_SEED (default 1,
#        so a CI run can be replayed; set another to explore).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VALIDATOR_VERSION=0.9.0
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/tally-conformance/venv-st${SCHEMATHESIS_VERSION}"
BIN="${TALLY_BIN:-target/debug/tally}"
MAX_TIME="${CONFORMANCE_MAX_TIME:-240}"
MAX_EXAMPLES="${CONFORMANCE_MAX_EXAMPLES:-40}"
SEED="${CONFORMANCE_SEED:-1}"

if [ ! -x "$VENV/bin/schemathesis" ] || [ ! -x "$VENV/bin/openapi-spec-validator" ]; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator $VALIDATOR_VERSION into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$VALIDATOR_VERSION"
fi
[ -x "$BIN" ] || cargo build -q --bin tally

WORK="$(mktemp -d -t tally-conformance.XXXXXX)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
ADMIN="conformance-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

TALLY_DATA_DIR="$WORK/data" TALLY_ADDR="127.0.0.1:$PORT" TALLY_ADMIN_TOKEN="$ADMIN" \
  TALLY_RATE_LIMIT_TENANT_RPS=0 TALLY_RATE_LIMIT_SERVICE_RPS=0 TALLY_LOG_FORMAT=text \
  TALLY_PAYMENT_PROVIDER=mock RUST_LOG="${RUST_LOG:-warn}" \
  "$BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 600); do
  curl -sf "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "tally exited early:"; cat "$WORK/server.log"; exit 1; }
  sleep 0.2
done
curl -sf "$BASE/readyz" >/dev/null || { echo "tally did not become ready:"; cat "$WORK/server.log"; exit 1; }

# call METHOD PATH [BODY] [IDEMPOTENCY-KEY]: the admin's request; fails on a non-2xx.
call() {
  local args=(-sS --fail-with-body -X "$1" -H "Authorization: Bearer $ADMIN")
  [ -n "${3:-}" ] && args+=(-H 'Content-Type: application/json' --data "$3")
  [ -n "${4:-}" ] && args+=(-H "Idempotency-Key: $4")
  curl "${args[@]}" "$BASE$2"
}
TENANT="$(call POST /v1/tenants '{"name":"Conformance"}' | jq -r .id)"
call PUT "/v1/tenants/$TENANT/payment-method" '{"token":"pm_mock_ok"}' >/dev/null
call POST "/v1/tenants/$TENANT/top-ups" '{"amount":"100.00"}' seed-top-up >/dev/null
KEY_JSON="$(call POST "/v1/tenants/$TENANT/api-keys" '{"name":"conformance"}')"
KEY_ID="$(jq -r .id <<<"$KEY_JSON")"
call POST /v1/admin/service-tokens '{"name":"conformance"}' >/dev/null
MODEL="$(call GET /v1/prices | jq -r '.data[0].model')"
call POST /v1/charges "{\"tenant_id\":\"$TENANT\",\"amount\":\"1.25\",\"api_key_id\":\"$KEY_ID\"}" seed-charge >/dev/null
echo "seeded tenant $TENANT (key $KEY_ID), model $MODEL"

curl -sf "$BASE/openapi.json" >"$WORK/openapi.json"
"$VENV/bin/openapi-spec-validator" "$WORK/openapi.json"

# What the service refuses that no schema can say, declared here rather than hidden:
# - 402 and 422 are refusals by the account's state (no funds, no card on file, more than is
#   left to refund, an Idempotency-Key reused with another body: the fuzzer reuses short
#   keys), never by the shape of the request; 400 stays a failure for schema-valid data.
# - Some operations take values only the running service can judge: a model of its price
#   book, a card token its provider knows, a top-up within its configured limits, a webhook
#   host that resolves to a public address, a price rule or deal that prices consistently,
#   an adjustment in the future. For those, positive data may be refused (with 400), and
#   only that check is off; every other check still runs on them.
# - Strings never carry NUL (Postgres cannot store it; the service refuses it with 400).
# - The tenant and model start from the seeded ones so that requests reach real data.
# Every check is on (`[checks] enabled`, schemathesis' default too; given here and not as
# `--checks all` because a CLI option would override the per-operation line below).
cat >"$WORK/schemathesis.toml" <<EOF
[checks]
enabled = true

[generation]
allow-x00 = false

[parameters]
tenant_id = "$TENANT"
model = "$MODEL"

[checks.positive_data_acceptance]
enabled = true
expected-statuses = ["2xx", "3xx", 401, 402, 403, 404, 409, 422, 429, "5xx"]

[[operations]]
include-operation-id = ["estimate", "create_charge", "create_hold", "capture_hold", "put_payment_method",
  "create_top_up", "put_auto_top_up", "put_webhook", "convert", "adjust", "put_price", "put_tenant_pricing",
  "create_key", "update_key", "create_service_token"]
checks.positive_data_acceptance.enabled = false

# DELETE /auto-top-up switches auto top-up off; the settings and their history stay
# readable (GET: enabled false), as the contract has it: not a resource that is gone.
[[operations]]
include-operation-id = ["delete_auto_top_up", "get_auto_top_up"]
checks.use_after_free.enabled = false
EOF

cd "$WORK"
"$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$BASE/openapi.json" \
  --header "Authorization: Bearer $ADMIN" \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME" \
  --seed "$SEED" \
  --workers 2 \
  --request-timeout 20 \
  --exclude-path /v1/providers/stripe/webhook \
  --report junit --report-dir "${CONFORMANCE_REPORT_DIR:-$WORK/report}" \
  && status=0 || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis found problems (seed $SEED); server log tail:"
  tail -n 40 "$WORK/server.log"
  exit "$status"
fi
echo "api conformance: openapi-spec-validator clean, schemathesis clean (seed $SEED)"
