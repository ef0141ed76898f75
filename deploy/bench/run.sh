#!/usr/bin/env bash
# THE BENCHMARK: the whole stack on this machine (release builds), then eleven
# measurements with the same load settings, side by side, with the ratios and
# each target printed as met or MISSED. Speed is reported here, never asserted
# in tests. Results: docs/benchmarks.md explains them.
#
#   deploy/bench/run.sh                              # the defaults below
#   BENCH_CONCURRENCY=128 BENCH_PERF=1 deploy/bench/run.sh
#
# Load settings (environment), the same for every HTTP measurement:
#   BENCH_CONCURRENCY   64      requests in flight (one keep-alive connection each)
#   BENCH_RATE          unset   open loop at this many requests/s (default: closed loop)
#   BENCH_THREADS       1       load-client runtime threads
#   BENCH_DURATION      120     upper bound of each run, seconds
#   BENCH_USERS         20000   users in the purchase burst, one request each
#   BENCH_STOCK         10000   stock of that sale: the first half buys, the rest is sold out
#   BENCH_REQUESTS      200000  requests of the HTTP-ceiling and sold-out runs (users repeat)
#   BENCH_PERSIST_ORDERS 50000  users = stock of the persistence run (every one accepted)
#   BENCH_REDIS_REQUESTS 200000 redis-benchmark requests (-c is BENCH_CONCURRENCY)
#   BENCH_OUT           target/bench/<UTC time>
#   BENCH_PERF          unset   1: perf-record the gateway in the purchase and sold-out runs
#   BENCH_RUST_LOG      warn    the services' RUST_LOG (info logs every request)
#   BENCH_TRACES_SAMPLER_ARG 0.05  the services' OTEL_TRACES_SAMPLER_ARG (prod's ratio)
#   BENCH_BIN           unset   use the binaries in this directory; no cargo build
#   BENCH_FLOOR_STEPS   script,produce  what each request of the purchase floor does
#                               (script, produce, both, or none: HTTP alone)
#   BENCH_BROKER_STORAGE memory  the broker's storage: memory, or sqlite (durable, as run.sh;
#                               its SQL engine then dominates the machine: docs/benchmarks.md)
#   BENCH_ONLY          unset   run only these measurements (comma-separated: http-ceiling,
#                               redis, purchase, purchase-floor, sold-out, persist, read, flood,
#                               storefront, purchase-streams, persist-streams); the summary then
#                               is skipped
#
# Its own stack, apart from deploy/local/run.sh's, all on 127.0.0.1: Redis
# 26379, PostgreSQL 25432, broker 29092, gateway 28080, inventory-service
# 28081, order-service 28082, HTTP ceiling 28090, purchase floor 28091. State
# in .seckill/bench,
# wiped at every start and stopped at exit. The data stores run as run.sh
# runs them: Redis with an append-only file (fsync every second), PostgreSQL
# with fsync on; the broker in memory unless BENCH_BROKER_STORAGE=sqlite (the
# stand-in broker's SQLite engine is not what production's Kafka costs).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

CONCURRENCY="${BENCH_CONCURRENCY:-64}"
RATE="${BENCH_RATE:-}"
THREADS="${BENCH_THREADS:-1}"
DURATION="${BENCH_DURATION:-120}"
USERS="${BENCH_USERS:-20000}"
STOCK="${BENCH_STOCK:-10000}"
REQUESTS="${BENCH_REQUESTS:-200000}"
PERSIST_ORDERS="${BENCH_PERSIST_ORDERS:-50000}"
REDIS_REQUESTS="${BENCH_REDIS_REQUESTS:-200000}"
OUT="${BENCH_OUT:-$REPO/target/bench/$(date -u +%Y%m%dT%H%M%SZ)}"
case "$OUT" in /*) ;; *) OUT="$REPO/$OUT" ;; esac
for n in CONCURRENCY THREADS DURATION USERS STOCK REQUESTS PERSIST_ORDERS REDIS_REQUESTS; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || die "BENCH_$n must be a positive integer, not '${!n}'"
done

REDIS_PORT=26379 PG_PORT=25432 BROKER_PORT=29092
GW_PORT=28080 INV_PORT=28081 ORD_PORT=28082 CEILING_PORT=28090 FLOOR_PORT=28091
STATE="$REPO/.seckill/bench"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
BIN="${BENCH_BIN:-$TARGET_DIR/release}"
DB_BASE="postgres://postgres:postgres@127.0.0.1:$PG_PORT"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

ensure_deps
command -v redis-benchmark >/dev/null 2>&1 || apt_install redis-tools
if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    apt_install fonts-dejavu-core || log "no DejaVu font: the plots will have no labels"
fi
if [ -n "${BENCH_PERF:-}" ] && ! command -v perf >/dev/null 2>&1; then
    apt_install linux-perf || die "BENCH_PERF is set but perf cannot be installed"
fi

# ------------------------------------------------------------------ clean state
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all "$STATE"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_all "$STATE"
if [ -L "$STATE/pg" ]; then
    pg_dir="$(readlink -f "$STATE/pg")"
    case "$pg_dir" in /var/tmp/seckill-pg-*) rm -rf "$pg_dir" ;; esac
fi
rm -rf "$STATE"
mkdir -p "$STATE" "$OUT"

random_secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
SECKILL_JWT_SECRET="$(random_secret)"
SECKILL_ADMIN_TOKEN="$(random_secret)"
SECKILL_INTERNAL_TOKEN="$(random_secret)"
export SECKILL_JWT_SECRET SECKILL_ADMIN_TOKEN SECKILL_INTERNAL_TOKEN

# ------------------------------------------------------------------ build + stack
if [ -z "${BENCH_BIN:-}" ]; then
    log "cargo build --workspace --bins --release"
    cargo build --workspace --bins --release
fi
for exe in gateway inventory-service order-service bench bench-ceiling bench-floor; do
    [ -x "$BIN/$exe" ] || die "$BIN/$exe is missing"
done

start_redis "$REDIS_PORT" "$STATE"
start_postgres "$PG_PORT" "$STATE"
create_databases "$PG_PORT"
BROKER_STORAGE="${BENCH_BROKER_STORAGE:-memory}"
case "$BROKER_STORAGE" in sqlite | memory) ;; *) die "BENCH_BROKER_STORAGE must be sqlite or memory" ;; esac
start_broker "$BROKER_PORT" "$STATE" "$BROKER_STORAGE"

export RUST_LOG="${BENCH_RUST_LOG:-warn}"
# Traces as in production (k8s/overlays/prod): spans are made, 5 % sampled.
# Nothing is exported here (no OTEL_EXPORTER_OTLP_ENDPOINT).
export OTEL_TRACES_SAMPLER_ARG="${BENCH_TRACES_SAMPLER_ARG:-0.05}"
export SECKILL_KAFKA__BROKERS="127.0.0.1:$BROKER_PORT"
export SECKILL_REDIS__URL="$REDIS_URL"
timeout 60 "$BIN/gateway" create-topics >>"$STATE/gateway.log" 2>&1 ||
    { tail -n 20 "$STATE/gateway.log" >&2; die "gateway create-topics failed"; }

# start_service NAME PORT READY_URL CMD...: READY_URL `tcp` waits for the port only.
start_service() {
    local name="$1" port="$2" ready="$3"
    shift 3
    if tcp_open 127.0.0.1 "$port"; then
        die "port $port is taken by a process this script did not start"
    fi
    spawn "$STATE/$name.pid" "$STATE/$name.log" "$@"
    if [ "$ready" = tcp ]; then
        wait_ready "$name" 60 "$STATE/$name.pid" "$STATE/$name.log" tcp_open 127.0.0.1 "$port" ||
            die "$name did not start"
    else
        wait_ready "$name" 120 "$STATE/$name.pid" "$STATE/$name.log" http_ok "$ready" ||
            die "$name did not become ready"
    fi
    log "$name ready on 127.0.0.1:$port (pid $(pid_from "$STATE/$name.pid"))"
}

# The three services, on the transport SECKILL_TRANSPORT names (Kafka unless set).
start_services() {
    start_service inventory-service "$INV_PORT" "http://127.0.0.1:$INV_PORT/readyz" \
        env SECKILL_HTTP__PORT="$INV_PORT" SECKILL_DATABASE__URL="$DB_BASE/seckill_inventory" \
        "$BIN/inventory-service" serve
    start_service order-service "$ORD_PORT" "http://127.0.0.1:$ORD_PORT/readyz" \
        env SECKILL_HTTP__PORT="$ORD_PORT" SECKILL_DATABASE__URL="$DB_BASE/seckill_orders" \
        "$BIN/order-service" serve
    # The default admission limits (2000/s per client IP, 20/s per user) are for
    # the internet; the whole load comes from one local client here.
    start_service gateway "$GW_PORT" "http://127.0.0.1:$GW_PORT/readyz" \
        env SECKILL_HTTP__PORT="$GW_PORT" \
        SECKILL_INVENTORY_URL="http://127.0.0.1:$INV_PORT" SECKILL_ORDER_URL="http://127.0.0.1:$ORD_PORT" \
        SECKILL_RATE_LIMIT__GLOBAL_PER_SECOND=10000000 \
        SECKILL_RATE_LIMIT__PER_IP_PER_SECOND=10000000 \
        SECKILL_RATE_LIMIT__PER_USER_PER_SECOND=1000 \
        "$BIN/gateway" serve
}
start_services
# As many workers as the gateway has (its default: one per core).
start_service bench-ceiling "$CEILING_PORT" tcp \
    "$BIN/bench-ceiling" --port "$CEILING_PORT" --workers "$(nproc)"
# The purchase floor (deploy/bench/src/bin/floor.rs): the purchase script and
# one acknowledged produce per request, nothing else; its one sale is warm
# with stock to spare.
FLOOR_SALE=bench-floor
redis-cli -p "$REDIS_PORT" HSET "seckill:{$FLOOR_SALE}:sale" stock 1000000000 total 1000000000 \
    starts_at 0 ends_at 99999999999999 per_user_limit 1 >/dev/null
start_service bench-floor "$FLOOR_PORT" tcp \
    "$BIN/bench-floor" --port "$FLOOR_PORT" --workers "$(nproc)" --redis "$REDIS_URL" \
    --brokers "127.0.0.1:$BROKER_PORT" --sale "$FLOOR_SALE" --steps "${BENCH_FLOOR_STEPS:-script,produce}" \
    --compression "${SECKILL_KAFKA__COMPRESSION:-lz4}"

# ------------------------------------------------------------------ helpers
LOAD=(--concurrency "$CONCURRENCY" --threads "$THREADS" --duration-secs "$DURATION")
if [ -n "$RATE" ]; then LOAD+=(--rate "$RATE"); fi
GATEWAY="http://127.0.0.1:$GW_PORT"
svc_pid() { pid_from "$STATE/$1.pid"; }

# CPU ticks (utime+stime) of a process and its live children (PostgreSQL's
# backends are children of the postmaster).
cpu_ticks() {
    local pid="$1" child
    [ -n "$pid" ] || { echo 0; return; }
    {
        cat "/proc/$pid/stat" 2>/dev/null || true
        for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
            cat "/proc/$child/stat" 2>/dev/null || true
        done
    } | sed 's/^.*) //' | awk '{t += $12 + $13} END {print t + 0}'
}
# cpu_us_of RUN N PROCESS: PROCESS's CPU µs per request over N in RUN (from
# the CPU accounting `measure` appends to RUN's output).
cpu_us_of() {
    grep '^CPU seconds' "$OUT/$1.txt" | tail -n 1 | tr ',' '\n' |
        awk -v n="$2" -v who="$3" '$1 == who { printf "%.1f", $2 * 1e6 / n }'
}
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
CPU_NAMES=(gateway bench-ceiling bench-floor inventory-service order-service redis postgres broker)
cpu_snapshot() {
    local name
    for name in "${CPU_NAMES[@]}"; do
        printf '%s %s\n' "$name" "$(cpu_ticks "$(svc_pid "$name" || true)")"
    done
    printf 'machine %s\n' "$(machine_ticks)"
}
# children_cpu FILE: CPU seconds (user + system) of this shell's waited-for
# children so far, into FILE. `times` runs in this shell (no subshell: it
# would count its own children), and prints the shell's line, then theirs.
children_cpu() {
    times >"$1.times"
    tail -n 1 "$1.times" |
        awk '{ for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } print n + 0 }' >"$1"
}
# cpu_report BEFORE AFTER SECONDS CLIENT: the CPU seconds each process used;
# `other` is whatever else ran on the machine meanwhile (nothing, ideally).
cpu_report() {
    join "$1" "$2" | awk -v hz="$(getconf CLK_TCK)" -v secs="$3" -v client="$4" -v cores="$(nproc)" '
        { used[$1] = ($3 - $2) / hz; name[NR] = $1 }
        END {
            rest = used["machine"] - client
            printf "CPU seconds over %d s wall (%d cores = %d): load client %.1f,", secs, cores, cores * secs, client
            for (i = 1; i <= NR; i++) if (name[i] != "machine") {
                printf " %s %.1f,", name[i], used[name[i]]; rest -= used[name[i]]
            }
            printf " other %.1f\n", rest
        }'
}

# measure NAME CMD...: one measurement, with CPU accounting (and perf).
measure() {
    local name="$1"
    shift
    log "measuring: $name"
    cpu_snapshot | sort >"$OUT/$name.cpu-before"
    local perf_pid="" started=$SECONDS
    # The gateway alone on the HTTP paths; the whole machine (which process,
    # which function) while orders flow through the pipeline.
    local perf_scope=()
    case "${BENCH_PERF:-}:$name" in
        :*) ;;
        *:purchase | *:sold-out | *:read) perf_scope=(-g -p "$(svc_pid gateway)") ;;
        *:persist) perf_scope=(-a) ;;
    esac
    if [ "${#perf_scope[@]}" -gt 0 ]; then
        perf record -e cpu-clock -F 499 "${perf_scope[@]}" -o "$OUT/perf-$name.data" \
            >"$OUT/perf-$name.log" 2>&1 &
        perf_pid=$!
    fi
    children_cpu "$OUT/$name.client-before"
    "$@" | tee "$OUT/$name.txt"
    children_cpu "$OUT/$name.client-after"
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" || true
        perf report -i "$OUT/perf-$name.data" --stdio --no-children --percent-limit 0.5 \
            >"$OUT/perf-$name.txt" 2>/dev/null || true
        perf report -i "$OUT/perf-$name.data" --stdio --no-children --sort dso \
            >"$OUT/perf-$name.by-binary.txt" 2>/dev/null || true
        log "perf profile: $OUT/perf-$name.txt (and .by-binary.txt)"
    fi
    cpu_snapshot | sort >"$OUT/$name.cpu-after"
    cpu_report "$OUT/$name.cpu-before" "$OUT/$name.cpu-after" "$((SECONDS - started))" \
        "$(paste "$OUT/$name.client-before" "$OUT/$name.client-after" | awk '{ print $2 - $1 }')" |
        tee -a "$OUT/$name.txt"
}

# wanted NAME: whether BENCH_ONLY (default: everything) asks for this measurement.
wanted() { [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *",$1,"* ]]; }

# ------------------------------------------------------------------ warm-up
# Connections, the producer's metadata, the script cache: not what we measure.
log "warm-up (load average now: $(cut -d' ' -f1-3 /proc/loadavg); anything else running skews the figures)"
"$BIN/bench" http --url "http://127.0.0.1:$CEILING_PORT/" --requests 5000 "${LOAD[@]}" \
    --no-progress --out "$OUT/warmup-ceiling" >/dev/null
# Waits until its orders are persisted: the pipeline is idle when measuring starts.
"$BIN/bench" purchase --gateway "$GATEWAY" --users 2000 --stock 2000 "${LOAD[@]}" \
    --orders-db "$DB_BASE/seckill_orders" --no-progress --out "$OUT/warmup-purchase" >/dev/null

# ------------------------------------------------------------------ 1. HTTP ceiling
# The same request as a purchase: POST, JSON body, a bearer token of the same size.
token="$("$BIN/gateway" mint-token --user ceiling-user 2>>"$STATE/gateway.log")"
wanted http-ceiling && measure http-ceiling "$BIN/bench" http --name "HTTP ceiling" \
    --url "http://127.0.0.1:$CEILING_PORT/api/v1/sales/ceiling/orders" --method POST --body '{}' \
    --header 'Content-Type: application/json' --header "Authorization: Bearer $token" \
    --requests "$REQUESTS" "${LOAD[@]}" --out "$OUT/http-ceiling"

# ------------------------------------------------------------------ 2. Redis ceiling
# The gateway's own script, loaded byte for byte (-x: from stdin), against a
# sale with stock to spare: every call takes the full write path.
if wanted redis; then
    "$BIN/bench" lua >"$OUT/purchase.lua"
    sha="$(redis-cli -p "$REDIS_PORT" -x SCRIPT LOAD <"$OUT/purchase.lua")"
    [ "$sha" = "$("$BIN/bench" lua --sha)" ] || die "SCRIPT LOAD gave $sha, not the gateway's script hash"
    rkeys=('seckill:{bench-redis-ceiling}:sale' 'seckill:{bench-redis-ceiling}:buyers' 'seckill:{bench-redis-ceiling}:void')
    redis-cli -p "$REDIS_PORT" HSET "${rkeys[0]}" stock 1000000000 total 1000000000 \
        starts_at 0 ends_at 99999999999999 per_user_limit 100 >/dev/null
    log "measuring: redis-benchmark EVALSHA"
    redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -n "$REDIS_REQUESTS" -c "$CONCURRENCY" \
        -r 100000000 --csv EVALSHA "$sha" 3 "${rkeys[@]}" user-__rand_int__ 1 order-__rand_int__ \
        >"$OUT/redis-benchmark.csv"
    redis-cli -p "$REDIS_PORT" DEL "${rkeys[@]}" >/dev/null
    REDIS_RPS="$(tail -n 1 "$OUT/redis-benchmark.csv" | cut -d'"' -f4)"
    [[ "$REDIS_RPS" =~ ^[0-9.]+$ ]] ||
        die "could not read redis-benchmark's result: $(cat "$OUT/redis-benchmark.csv")"
    echo "== Redis ceiling: EVALSHA of the purchase script, -c $CONCURRENCY: $REDIS_RPS req/s ==" |
        tee "$OUT/redis-benchmark.txt"
fi

# ------------------------------------------------------------------ 3. purchase path
wanted purchase && measure purchase "$BIN/bench" purchase --name "purchase path" --gateway "$GATEWAY" \
    --users "$USERS" --stock "$STOCK" "${LOAD[@]}" \
    --orders-db "$DB_BASE/seckill_orders" --redis-url "$REDIS_URL" --out "$OUT/purchase"

# ------------------------------------------------------------------ 3b. purchase floor
# The same request against the floor: what a purchase costs with the
# gateway's parts (actix-web, the redis crate, librdkafka) and nothing else.
# Nothing consumes its orders, so the pipeline stays idle meanwhile.
if wanted purchase-floor; then
    floor_token="$("$BIN/gateway" mint-token --user floor-user 2>>"$STATE/gateway.log")"
    measure purchase-floor "$BIN/bench" http --name "purchase floor" \
        --url "http://127.0.0.1:$FLOOR_PORT/api/v1/sales/$FLOOR_SALE/orders" --method POST --body '{}' \
        --header 'Content-Type: application/json' --header "Authorization: Bearer $floor_token" \
        --requests "$PERSIST_ORDERS" "${LOAD[@]}" --out "$OUT/purchase-floor"
    {
        echo "== purchase floor: CPU µs per purchase =="
        echo "floor process $(cpu_us_of purchase-floor "$PERSIST_ORDERS" bench-floor), broker $(cpu_us_of purchase-floor "$PERSIST_ORDERS" broker), redis $(cpu_us_of purchase-floor "$PERSIST_ORDERS" redis)"
    } | tee -a "$OUT/purchase-floor.txt"
fi

# ------------------------------------------------------------------ 4. sold-out path
# One unit: the first request buys it, every other one meets a sold-out sale.
wanted sold-out && measure sold-out "$BIN/bench" purchase --name "sold-out path" --gateway "$GATEWAY" \
    --users "$USERS" --stock 1 --requests "$REQUESTS" "${LOAD[@]}" \
    --redis-url "$REDIS_URL" --out "$OUT/sold-out"

# ------------------------------------------------------------------ 5. persisted per second
wanted persist && measure persist "$BIN/bench" purchase --name "persistence" --gateway "$GATEWAY" \
    --users "$PERSIST_ORDERS" --stock "$PERSIST_ORDERS" "${LOAD[@]}" \
    --orders-db "$DB_BASE/seckill_orders" --redis-url "$REDIS_URL" --out "$OUT/persist"

# ------------------------------------------------------------------ 6. read path
# The crowd before and during a sale: GETs of one active sale, answered from
# the gateway's read cache (gateway/src/catalog), Redis behind it.
if wanted read; then
    starts="$(date -u -d '-1 min' +%Y-%m-%dT%H:%M:%SZ)"
    ends="$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
    read_sale="$(curl -sf -X POST "$GATEWAY/api/v1/admin/sales" \
        -H "Authorization: Bearer $SECKILL_ADMIN_TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\":\"read path\",\"stock\":1000,\"starts_at\":\"$starts\",\"ends_at\":\"$ends\"}" |
        sed -n 's/.*"sale_id":"\([^"]*\)".*/\1/p')"
    [ -n "$read_sale" ] || die "could not create the read path's sale"
    measure read "$BIN/bench" http --name "read path" --url "$GATEWAY/api/v1/sales/$read_sale" \
        --requests "$REQUESTS" "${LOAD[@]}" --out "$OUT/read"
fi

# ------------------------------------------------------------------ 7. made-up-id flood
# GETs of FLOOD_KEYS well-formed ids no sale has. What reaches PostgreSQL is
# counted from inventory-service's /metrics (its background jobs included).
FLOOD_KEYS=100
inventory_selects() {
    curl -sf "http://127.0.0.1:$INV_PORT/metrics" |
        awk '/^seckill_db_query_duration_seconds_count\{/ && /operation="SELECT"/ { s += $NF } END { print s + 0 }'
}
if wanted flood; then
    selects_before="$(inventory_selects)"
    measure flood "$BIN/bench" http --name "made-up-id flood" --url "$GATEWAY/api/v1/sales/madeup__i__" \
        --keys "$FLOOD_KEYS" --requests "$REQUESTS" "${LOAD[@]}" --out "$OUT/flood"
    FLOOD_QUERIES=$(($(inventory_selects) - selects_before))
    echo "== made-up-id flood: $FLOOD_QUERIES database queries in inventory-service ==" |
        tee -a "$OUT/flood.txt"
fi

# ------------------------------------------------------------------ 7b. storefront
# What the crowd loading the storefront costs the gateway, beside /healthz
# (the cheapest route that runs the whole middleware stack): the page, and
# its largest script by its content-hashed name.
gateway_us() { cpu_us_of "$1" "$REQUESTS" gateway; }
if wanted storefront; then
    asset="$(curl -sf "$GATEWAY/" | grep -o '/assets/storefront\.[0-9a-f]*\.js' | head -n 1)"
    [ -n "$asset" ] || die "the storefront page names no storefront script"
    measure healthz "$BIN/bench" http --name "/healthz" --url "$GATEWAY/healthz" \
        --requests "$REQUESTS" "${LOAD[@]}" --out "$OUT/healthz"
    measure storefront-page "$BIN/bench" http --name "storefront page" --url "$GATEWAY/" \
        --requests "$REQUESTS" "${LOAD[@]}" --out "$OUT/storefront-page"
    measure storefront-asset "$BIN/bench" http --name "storefront script" --url "$GATEWAY$asset" \
        --requests "$REQUESTS" "${LOAD[@]}" --out "$OUT/storefront-asset"
    {
        echo "== storefront beside /healthz: gateway CPU µs per request =="
        h="$(gateway_us healthz)" p="$(gateway_us storefront-page)" a="$(gateway_us storefront-asset)"
        echo "healthz $h, storefront page $p, storefront script $a ($asset)"
        awk -v h="$h" -v p="$p" -v a="$a" 'BEGIN { printf "ratios: page/healthz %.2f, script/healthz %.2f\n", p / h, a / h }'
    } | tee "$OUT/storefront.txt"
fi

# ------------------------------------------------------------------ 8. Redis Streams
# The same purchase and persistence runs with SECKILL_TRANSPORT=redis-streams:
# the services restarted on the same Redis and PostgreSQL, Redis's AOF then
# fsynced before every reply (what README "Transports" prescribes for this
# mode; deploy/local/run.sh does the same).
if wanted purchase-streams || wanted persist-streams; then
    for name in gateway order-service inventory-service; do
        stop_pid "$name" "$STATE/$name.pid" TERM 30
    done
    redis-cli -p "$REDIS_PORT" CONFIG SET appendfsync always >/dev/null
    export SECKILL_TRANSPORT=redis-streams
    start_services
    "$BIN/bench" purchase --gateway "$GATEWAY" --users 2000 --stock 2000 "${LOAD[@]}" \
        --orders-db "$DB_BASE/seckill_orders" --no-progress --out "$OUT/warmup-streams" >/dev/null
    wanted purchase-streams && measure purchase-streams "$BIN/bench" purchase \
        --name "purchase path, Redis Streams" --gateway "$GATEWAY" \
        --users "$USERS" --stock "$STOCK" "${LOAD[@]}" \
        --orders-db "$DB_BASE/seckill_orders" --redis-url "$REDIS_URL" --out "$OUT/purchase-streams"
    wanted persist-streams && measure persist-streams "$BIN/bench" purchase \
        --name "persistence, Redis Streams" --gateway "$GATEWAY" \
        --users "$PERSIST_ORDERS" --stock "$PERSIST_ORDERS" "${LOAD[@]}" \
        --orders-db "$DB_BASE/seckill_orders" --redis-url "$REDIS_URL" --out "$OUT/persist-streams"
fi

# per_order RUN ORDERS: CPU microseconds per order of every process in RUN.
per_order() {
    [ -f "$OUT/$1.txt" ] || return 0
    grep '^CPU seconds' "$OUT/$1.txt" | tail -n 1 | sed 's/^.*load client/load-client/' |
        tr ',' '\n' | awk -v run="$1" -v n="$2" '
            NF == 2 && $1 != "other" && $1 != "bench-ceiling" && $1 != "bench-floor" { printf "%s%s %.0f", sep, $1, $2 * 1e6 / n; sep = ", " }
            END { printf "  (%s)\n", run }'
}
{
    echo "== CPU µs per order, by process (Kafka, then Redis Streams) =="
    per_order purchase "$STOCK"
    per_order purchase-streams "$STOCK"
    per_order persist "$PERSIST_ORDERS"
    per_order persist-streams "$PERSIST_ORDERS"
} | tee "$OUT/transports.txt"

# ------------------------------------------------------------------ 9. peak RSS
if [ -n "${BENCH_ONLY:-}" ]; then
    log "BENCH_ONLY=$BENCH_ONLY: no summary. Results: $OUT"
    exit 0
fi
rss_args=()
for name in gateway inventory-service order-service; do
    kib="$(awk '/^VmHWM:/{print $2}' "/proc/$(svc_pid "$name")/status")"
    rss_args+=(--rss "$name=$((kib * 1024))")
done

# CPU µs per persisted order of each process, and the floor's per purchase.
cpu_args=()
for name in gateway inventory-service order-service broker postgres redis; do
    cpu_args+=(--cpu "$name=$(cpu_us_of persist "$PERSIST_ORDERS" "$name")")
done
cpu_args+=(--floor-us "$(cpu_us_of purchase-floor "$PERSIST_ORDERS" bench-floor)")

"$BIN/bench" compare --http "$OUT/http-ceiling/result.json" --purchase "$OUT/purchase/result.json" \
    --sold-out "$OUT/sold-out/result.json" --persist "$OUT/persist/result.json" \
    --redis-rps "$REDIS_RPS" "${rss_args[@]}" "${cpu_args[@]}" --read "$OUT/read/result.json" \
    --flood "$OUT/flood/result.json" --flood-keys "$FLOOD_KEYS" --flood-db-queries "$FLOOD_QUERIES" \
    --out "$OUT" | tee "$OUT/summary.txt"

cat <<EOF

Load: concurrency $CONCURRENCY, ${RATE:+rate $RATE/s, }$THREADS client thread(s). Purchase burst: $USERS users,
stock $STOCK. HTTP-ceiling and sold-out runs: $REQUESTS requests. Persistence run: $PERSIST_ORDERS orders.
Results, plots, CPU accounting and logs: $OUT
(summary.md is the table for docs/benchmarks.md; each run's directory holds result.json,
latency.png and throughput.png.) Stopping the stack.
EOF
