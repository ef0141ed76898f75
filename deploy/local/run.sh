#!/usr/bin/env bash
# THE RUN COMMAND: the whole stack on this machine, then a short demo burst.
#
#   deploy/local/run.sh          # release build (SECKILL_PROFILE=debug for a quicker build)
#   SECKILL_TRANSPORT=redis-streams deploy/local/run.sh   # no broker: Redis Streams
#   deploy/local/stop.sh         # stops it all
#
# Redis :6379, PostgreSQL :5432, the Kafka-compatible broker (nisshi, SQLite
# storage) :9092 (Kafka mode only), then inventory-service :8081,
# order-service :8082 and the gateway :8080, all on 127.0.0.1. State, logs
# and pidfiles: .seckill/. In the Redis Streams mode Redis fsyncs its AOF
# before every reply (README "Transports": what a 202 means there).
# SECKILL_JWT_SECRET, SECKILL_ADMIN_TOKEN and SECKILL_INTERNAL_TOKEN are taken
# from the environment, else from .seckill/env, else generated there.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

STATE="$REPO/.seckill"
PROFILE="${SECKILL_PROFILE:-release}"
case "$PROFILE" in
    release) build_flags=(--release) ;;
    debug) build_flags=() ;;
    *) die "SECKILL_PROFILE must be release or debug, not '$PROFILE'" ;;
esac
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/$PROFILE"
PG_PORT=5432
DB_BASE="postgres://postgres:postgres@127.0.0.1:$PG_PORT"
DEMO_USERS=500
DEMO_STOCK=100
DEMO_PARALLEL=50

TRANSPORT="${SECKILL_TRANSPORT:-kafka}"
case "$TRANSPORT" in
    kafka | redis-streams) ;;
    *) die "SECKILL_TRANSPORT must be kafka or redis-streams, not '$TRANSPORT'" ;;
esac
export SECKILL_TRANSPORT="$TRANSPORT"

mkdir -p "$STATE"
if [ "$TRANSPORT" = kafka ]; then ensure_deps; else SECKILL_NO_BROKER=1 ensure_deps; fi

# ------------------------------------------------------------------ secrets
random_secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
# shellcheck disable=SC1091 # created by this script
saved() { [ -f "$STATE/env" ] && (unset "$1"; . "$STATE/env"; printf '%s' "${!1:-}"); }
SECKILL_JWT_SECRET="${SECKILL_JWT_SECRET:-$(saved SECKILL_JWT_SECRET || true)}"
SECKILL_ADMIN_TOKEN="${SECKILL_ADMIN_TOKEN:-$(saved SECKILL_ADMIN_TOKEN || true)}"
SECKILL_INTERNAL_TOKEN="${SECKILL_INTERNAL_TOKEN:-$(saved SECKILL_INTERNAL_TOKEN || true)}"
: "${SECKILL_JWT_SECRET:=$(random_secret)}"
: "${SECKILL_ADMIN_TOKEN:=$(random_secret)}"
: "${SECKILL_INTERNAL_TOKEN:=$(random_secret)}"
export SECKILL_JWT_SECRET SECKILL_ADMIN_TOKEN SECKILL_INTERNAL_TOKEN
(
    umask 077
    printf 'export SECKILL_JWT_SECRET=%q\nexport SECKILL_ADMIN_TOKEN=%q\nexport SECKILL_INTERNAL_TOKEN=%q\n' \
        "$SECKILL_JWT_SECRET" "$SECKILL_ADMIN_TOKEN" "$SECKILL_INTERNAL_TOKEN" >"$STATE/env"
)
log "the secrets in use are stored in $STATE/env (mode 600)"

# ------------------------------------------------------------------ data stores
if [ "$TRANSPORT" = kafka ]; then
    start_redis 6379 "$STATE"
else
    start_redis 6379 "$STATE" always
fi
start_postgres "$PG_PORT" "$STATE"
create_databases "$PG_PORT"
if [ "$TRANSPORT" = kafka ]; then start_broker 9092 "$STATE" sqlite; fi

# ------------------------------------------------------------------ build
log "cargo build --workspace --bins (${PROFILE})"
cargo build --workspace --bins "${build_flags[@]}"

export RUST_LOG="${RUST_LOG:-info}"
export SECKILL_KAFKA__BROKERS=127.0.0.1:9092
export SECKILL_REDIS__URL=redis://127.0.0.1:6379

if [ "$TRANSPORT" = kafka ]; then
    log "creating topics"
    timeout 60 "$BIN/gateway" create-topics >>"$STATE/gateway.log" 2>&1 ||
        { tail -n 20 "$STATE/gateway.log" >&2; die "gateway create-topics failed"; }
fi

# start_service NAME PORT ENV=VALUE...: (re)starts NAME from this build.
start_service() {
    local name="$1" port="$2"
    shift 2
    stop_pid "$name" "$STATE/$name.pid" TERM 30
    if tcp_open 127.0.0.1 "$port"; then
        die "port $port is taken by a process this script did not start"
    fi
    spawn "$STATE/$name.pid" "$STATE/$name.log" env "$@" SECKILL_HTTP__PORT="$port" "$BIN/$name" serve
    log "started $name (pid $(pid_from "$STATE/$name.pid")), log $STATE/$name.log"
}

start_service inventory-service 8081 SECKILL_DATABASE__URL="$DB_BASE/seckill_inventory"
start_service order-service 8082 SECKILL_DATABASE__URL="$DB_BASE/seckill_orders"
# A development machine: the storefront's development sign-in is on (a token
# for any user name; README, "Storefront and console"). SECKILL_DEV_SIGN_IN=false
# turns it off.
start_service gateway 8080 SECKILL_INVENTORY_URL=http://127.0.0.1:8081 SECKILL_ORDER_URL=http://127.0.0.1:8082 \
    SECKILL_DEV_MODE=true SECKILL_DEV_SIGN_IN="${SECKILL_DEV_SIGN_IN:-true}"

for svc in inventory-service:8081 order-service:8082 gateway:8080; do
    name="${svc%%:*}" port="${svc##*:}"
    wait_ready "$name" 120 "$STATE/$name.pid" "$STATE/$name.log" http_ok "http://127.0.0.1:$port/readyz" ||
        die "$name is not ready (stack left running; deploy/local/stop.sh stops it)"
    log "$name ready on 127.0.0.1:$port"
done

# ------------------------------------------------------------------ demo sale
starts_at="$(date -u -d '-1 second' +%Y-%m-%dT%H:%M:%SZ)"
ends_at="$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
sale_json="$(curl -sS --max-time 10 -X POST "http://127.0.0.1:8080/api/v1/admin/sales" \
    -H "Authorization: Bearer $SECKILL_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    --data "{\"name\":\"demo\",\"stock\":$DEMO_STOCK,\"starts_at\":\"$starts_at\",\"ends_at\":\"$ends_at\"}")" ||
    die "creating the demo sale failed"
SALE="$(printf '%s' "$sale_json" | sed -n 's/.*"sale_id"[[:space:]]*:[[:space:]]*"\{0,1\}\([^",}]*\)"\{0,1\}.*/\1/p')"
[ -n "$SALE" ] || die "no sale_id in the answer: $sale_json"
log "demo sale $SALE: stock $DEMO_STOCK, $DEMO_USERS buyers, $DEMO_PARALLEL at a time"

tokens="$STATE/demo-tokens.tsv"
if ! "$BIN/gateway" mint-token --user-prefix demo- --count "$DEMO_USERS" >"$tokens" 2>>"$STATE/gateway.log" ||
    [ "$(grep -c $'\t' "$tokens")" -ne "$DEMO_USERS" ]; then
    log "minting $DEMO_USERS tokens one by one"
    : >"$tokens"
    for i in $(seq 1 "$DEMO_USERS"); do
        printf 'user-%d\t%s\n' "$i" "$("$BIN/gateway" mint-token --user "user-$i")" >>"$tokens"
    done
fi

# One line per request: "<http status> <error code or ->". Each request is
# bounded by curl's --max-time, the whole burst by timeout.
burst="$STATE/demo-burst.txt"
export ORDER_URL="http://127.0.0.1:8080/api/v1/sales/$SALE/orders"
# shellcheck disable=SC2016 # expanded by the inner shell
timeout 120 xargs -P "$DEMO_PARALLEL" -n 2 sh -c '
    out="$(curl -s --max-time 10 -w "\n%{http_code}" -X POST -H "Authorization: Bearer $2" \
        -H "Content-Type: application/json" --data "{}" "$ORDER_URL" 2>/dev/null)"
    status="$(printf "%s" "$out" | tail -n 1)"
    reason="$(printf "%s" "$out" | sed -n "s/.*\"code\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p" | head -n 1)"
    printf "%s %s\n" "${status:-000}" "${reason:--}"
' _ <"$tokens" >"$burst" || log "the burst did not finish cleanly (see $burst)"

log "HTTP status counts:"
cut -d' ' -f1 "$burst" | sort | uniq -c | sed 's/^/    /' >&2
sold="$(grep -c '^202 ' "$burst" || true)"
rejected="$(grep -vc '^202 ' "$burst" || true)"
reasons="$(grep -v '^202 ' "$burst" | sort | uniq -c | awk '{printf "%s%s %s: %s", sep, $2, $3, $1; sep=", "}' || true)"

# Orders are written asynchronously (gateway -> broker or stream -> inventory
# -> broker or stream -> order-service): poll until every accepted one is in
# seckill_orders.
ORDERS_TABLE="${SECKILL_ORDERS_TABLE:-orders}"
persisted=""
deadline=$((SECONDS + 60))
while :; do
    persisted="$(PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" "$DB_BASE/seckill_orders" -XtAq \
        -c "SELECT count(*) FROM $ORDERS_TABLE WHERE sale_id::text = '$SALE'" 2>"$STATE/psql.err")" || persisted=""
    [ "$persisted" = "$sold" ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
        log "after 60 s, $ORDERS_TABLE holds ${persisted:-?} orders of sale $SALE, not $sold"
        cat "$STATE/psql.err" >&2
        break
    fi
    sleep 0.5
done
by_status="$(PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" "$DB_BASE/seckill_orders" -XtAq -F ' ' \
    -c "SELECT status, count(*) FROM $ORDERS_TABLE WHERE sale_id::text = '$SALE' GROUP BY 1 ORDER BY 1" \
    2>/dev/null | paste -sd, - || true)"

echo
echo "sale $SALE: sold $sold, rejected $rejected (${reasons:-none}), persisted ${persisted:-?}${by_status:+ ($by_status)}"
cat <<EOF

The stack is running on 127.0.0.1:
  gateway            http://127.0.0.1:8080   (admin token and JWT secret: .seckill/env)
  inventory-service  http://127.0.0.1:8081
  order-service      http://127.0.0.1:8082
  redis              127.0.0.1:6379
  postgresql         127.0.0.1:5432          (postgres/postgres; seckill_inventory, seckill_orders)
EOF
if [ "$TRANSPORT" = kafka ]; then
    echo "  broker (nisshi)    127.0.0.1:9092"
else
    echo "  transport          Redis Streams in 127.0.0.1:6379 (AOF, appendfsync always)"
fi
cat <<EOF
Logs and pidfiles: .seckill/
Stop it with: deploy/local/stop.sh
EOF
# A sale that opens in two minutes, for the storefront's countdown.
upcoming_start="$(date -u -d '+2 minutes' +%Y-%m-%dT%H:%M:%SZ)"
curl -sS --max-time 10 -o /dev/null -X POST "http://127.0.0.1:8080/api/v1/admin/sales" \
    -H "Authorization: Bearer $SECKILL_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    --data "{\"name\":\"Storefront demo\",\"stock\":10,\"unit_price_cents\":1999,\"starts_at\":\"$upcoming_start\",\"ends_at\":\"$ends_at\"}" ||
    log "the storefront's demo sale was not created"
cat <<EOF

Open in a browser:
  storefront         http://127.0.0.1:8080/          (sign in with any user name: development sign-in)
  console            http://127.0.0.1:8080/console   (admin token: SECKILL_ADMIN_TOKEN in .seckill/env)
EOF
[ "$persisted" = "$sold" ] || exit 1
