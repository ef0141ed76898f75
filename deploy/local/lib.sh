# shellcheck shell=bash
# shellcheck disable=SC2016 # the single-quoted scripts expand in the child shell
# Helpers shared by run.sh, stop.sh and test.sh: install what is missing, start
# Redis, PostgreSQL and the Kafka-compatible broker (nisshi) as plain local
# processes whose state, logs and pidfiles live in one directory, and stop them.
#
# Sourced by scripts that run with `set -euo pipefail`. Every wait is a poll
# against a deadline, never a blind sleep: a slow machine only makes it slower,
# a broken one fails with the log's tail instead of hanging.

SECKILL_NISSHI_VERSION="${SECKILL_NISSHI_VERSION:-0.8.1}"

log() { printf '[seckill] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Root runs apt-get and chown directly; anyone else goes through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

_apt_updated=""
# apt_install [--with-recommends] PACKAGE...: without recommends unless asked.
apt_install() {
    local recommends=--no-install-recommends
    if [ "${1:-}" = --with-recommends ]; then
        recommends=""
        shift
    fi
    if [ -z "$_apt_updated" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        _apt_updated=1
    fi
    # shellcheck disable=SC2086 # empty when recommends are wanted
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $recommends "$@"
}

# The newest installed server's bin dir. Debian's /usr/bin wrappers need a
# cluster registry we do not use, so we call the versioned binaries.
pg_bin_dir() {
    local postgres
    postgres="$( (ls -1 /usr/lib/postgresql/*/bin/postgres 2>/dev/null || true) | sort -V | tail -n 1)"
    [ -n "$postgres" ] || return 1
    dirname "$postgres"
}

ensure_deps() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    if ! pg_bin_dir >/dev/null; then
        # We run our own data directories: Debian's default cluster would only
        # take port 5432 from run.sh.
        as_root mkdir -p /etc/postgresql-common/createcluster.d
        echo 'create_main_cluster = false' |
            as_root tee /etc/postgresql-common/createcluster.d/50-seckill.conf >/dev/null
        missing+=(postgresql)
    fi
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing: ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    PG_BIN="$(pg_bin_dir)" || die "postgresql server binaries not found under /usr/lib/postgresql"
    export PG_BIN

    case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$PATH:$HOME/.cargo/bin" ;; esac
    # SECKILL_NO_BROKER=1 (the Redis Streams mode of run.sh): no broker needed.
    [ "${SECKILL_NO_BROKER:-0}" = 1 ] && return 0
    if ! command -v nisshi >/dev/null 2>&1; then
        command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup) first"
        log "installing nisshi $SECKILL_NISSHI_VERSION with cargo: this takes about 13 minutes, once"
        cargo install nisshi --version "$SECKILL_NISSHI_VERSION" --locked --ignore-rust-version
    fi
    NISSHI_BIN="$(command -v nisshi)" || die "nisshi not on PATH after install"
    export NISSHI_BIN
}

# schemathesis (PyPI, pinned) in a venv of its own: tests/tests/input_properties/contract.rs
# runs it against the gateway's OpenAPI document. Exports its path as
# SECKILL_SCHEMATHESIS_BIN.
SECKILL_SCHEMATHESIS_VERSION="${SECKILL_SCHEMATHESIS_VERSION:-4.32.5}"
ensure_api_tools() {
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/seckill/api-tools"
    if [ ! -x "$dir/bin/schemathesis" ] || [ "$(cat "$dir/.pins" 2>/dev/null)" != "$SECKILL_SCHEMATHESIS_VERSION" ]; then
        command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
        log "installing schemathesis $SECKILL_SCHEMATHESIS_VERSION into $dir"
        rm -rf "$dir"
        python3 -m venv "$dir" || { apt_install python3-venv && python3 -m venv "$dir"; }
        "$dir/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SECKILL_SCHEMATHESIS_VERSION"
        echo "$SECKILL_SCHEMATHESIS_VERSION" >"$dir/.pins"
    fi
    SECKILL_SCHEMATHESIS_BIN="$dir/bin/schemathesis"
    export SECKILL_SCHEMATHESIS_BIN
}

# Debian's Chromium and the browser tests' npm packages (playwright-core,
# axe-core, uplot; pinned in tests/browser/package-lock.json), for
# tests/tests/browser.rs. npm ci runs again whenever the lock file changes.
ensure_browser() {
    if ! command -v chromium >/dev/null 2>&1; then
        # With its recommends (fonts among them), as the browser tests were run.
        log "installing chromium"
        apt_install --with-recommends chromium fonts-dejavu-core
    fi
    command -v node >/dev/null 2>&1 || { log "installing node.js"; apt_install nodejs npm; }
    local suite="$REPO/tests/browser"
    if ! cmp -s "$suite/package-lock.json" "$suite/node_modules/.package-lock.json.ci" 2>/dev/null; then
        log "npm ci in tests/browser"
        (cd "$suite" && npm ci --no-audit --no-fund --loglevel=error)
        cp "$suite/package-lock.json" "$suite/node_modules/.package-lock.json.ci"
    fi
}

# ---------------------------------------------------------------- processes

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

pid_from() { [ -s "$1" ] && head -n 1 "$1" | tr -dc '0-9'; }

# spawn PIDFILE LOGFILE CMD...: runs CMD in its own session (so a Ctrl-C in the
# terminal that started it does not reach it), appending to LOGFILE. The child
# writes its own pid before exec, so the pidfile is right whatever forks.
spawn() {
    local pidfile="$1" logfile="$2"
    shift 2
    rm -f "$pidfile"
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
    local deadline=$((SECONDS + 5))
    until [ -s "$pidfile" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "no pidfile $pidfile after 5 s"
        sleep 0.05
    done
}

# wait_ready WHAT SECONDS PIDFILE LOGFILE CHECK...: polls CHECK until it
# succeeds; fails at the deadline, or at once if the process died.
wait_ready() {
    local what="$1" limit="$2" pidfile="$3" logfile="$4"
    shift 4
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ! pid_alive "$(pid_from "$pidfile")"; then
            log "$what exited during start-up; last lines of $logfile:"
            tail -n 30 "$logfile" >&2 || true
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$what not ready after ${limit} s; last lines of $logfile:"
            tail -n 30 "$logfile" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

redis_up() { [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

pg_up() { timeout 3 "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -t 2; }

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# stop_pid NAME PIDFILE SIGNAL SECONDS: SIGNAL, then KILL after the deadline.
stop_pid() {
    local name="$1" pidfile="$2" sig="$3" limit="$4" pid
    pid="$(pid_from "$pidfile")" || true
    if ! pid_alive "$pid"; then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill "-$sig" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + limit))
    while pid_alive "$pid"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$name still running after ${limit} s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$pidfile"
}

# ---------------------------------------------------------------- data stores

# start_redis PORT DIR [ephemeral]: append-only persistence in DIR, or none.
start_redis() {
    local port="$1" dir="$2" mode="${3:-persistent}"
    mkdir -p "$dir"
    if redis_up "$port"; then
        log "redis already running on 127.0.0.1:$port"
        return 0
    fi
    # persistent: the AOF fsynced every second (Kafka mode: Redis holds
    # reservations that PostgreSQL and the broker can rebuild). always: fsynced
    # before every reply (Redis Streams mode: Redis is the order log, and a
    # 202 must survive a crash; README "Transports").
    local persist=(--appendonly yes --appendfsync everysec --save "")
    case "$mode" in
        ephemeral) persist=(--appendonly no --save "") ;;
        always) persist=(--appendonly yes --appendfsync always --save "") ;;
    esac
    spawn "$dir/redis.pid" "$dir/redis.log" redis-server --port "$port" --bind 127.0.0.1 \
        --protected-mode yes --dir "$dir" --daemonize no "${persist[@]}"
    wait_ready "redis :$port" 30 "$dir/redis.pid" "$dir/redis.log" redis_up "$port"
    log "redis ready on 127.0.0.1:$port"
}

# Where the cluster lives: DIR/pg, unless the postgres OS user cannot reach
# DIR (e.g. a checkout under /root); then a fixed path per DIR under /var/tmp,
# linked from DIR/pg.
pg_base() {
    local dir="$1"
    if [ -L "$dir/pg" ]; then
        readlink -f "$dir/pg"
    elif [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$dir"; then
        echo "$dir/pg"
    else
        local base
        base="/var/tmp/seckill-pg-$(printf '%s' "$dir" | md5sum | cut -c1-12)"
        ln -sfn "$base" "$dir/pg"
        echo "$base"
    fi
}

# As the postgres OS user when we are root: the server refuses to run as root.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# start_postgres PORT DIR [no-fsync]: listens on 127.0.0.1 only, socket in the
# cluster dir; trust auth from 127.0.0.1 and the socket; superuser postgres has
# the password `postgres` for clients that send one. `no-fsync` is for tests:
# a crash loses the cluster, which a test's throwaway cluster can afford.
start_postgres() {
    local port="$1" dir="$2" mode="${3:-fsync}"
    : "${PG_BIN:=$(pg_bin_dir)}"
    mkdir -p "$dir"
    if pg_up "$port"; then
        log "postgresql already running on 127.0.0.1:$port"
        return 0
    fi
    local base
    if [ "$(id -u)" -eq 0 ]; then chmod a+x "$dir"; fi
    base="$(pg_base "$dir")"
    mkdir -p "$base/sock"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$base"; fi
    chmod 700 "$base"
    if [ ! -s "$base/data/PG_VERSION" ]; then
        log "initdb $base/data"
        local pwfile="$base/pwfile"
        as_pg sh -c 'umask 077; echo postgres >"$0"' "$pwfile"
        as_pg "$PG_BIN/initdb" -D "$base/data" -U postgres --pwfile="$pwfile" \
            -E UTF8 --no-locale --auth-local=trust --auth-host=trust >"$base/initdb.log" 2>&1 ||
            { tail -n 30 "$base/initdb.log" >&2; die "initdb failed"; }
        rm -f "$pwfile"
        as_pg sh -c 'printf "%s\n" "local all all trust" "host all all 127.0.0.1/32 trust" >"$0"' \
            "$base/data/pg_hba.conf"
    fi
    local opts="-p $port -k $base/sock -c listen_addresses=127.0.0.1 -c max_connections=200"
    if [ "$mode" = no-fsync ]; then
        opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    # A postmaster.pid left by a killed server would be read as ours below.
    local stale
    stale="$(pid_from "$base/data/postmaster.pid")" || true
    if [ -n "$stale" ]; then
        if pid_alive "$stale"; then
            die "postgresql (pid $stale) runs on $base/data but does not answer on port $port"
        fi
        rm -f "$base/data/postmaster.pid"
    fi
    # pg_ctl detaches the postmaster into its own session; -W: we poll below.
    as_pg "$PG_BIN/pg_ctl" -D "$base/data" -l "$base/postgres.log" -o "$opts" -W start >/dev/null
    ln -sfn "$base/postgres.log" "$dir/postgres.log"
    local deadline=$((SECONDS + 10))
    until [ -s "$base/data/postmaster.pid" ]; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$base/postgres.log" >&2 || true
            die "postgresql :$port wrote no postmaster.pid"
        fi
        sleep 0.1
    done
    head -n 1 "$base/data/postmaster.pid" >"$dir/postgres.pid"
    wait_ready "postgresql :$port" 60 "$dir/postgres.pid" "$base/postgres.log" pg_up "$port"
    log "postgresql ready on 127.0.0.1:$port"
}

# broker_cmd PORT DIR STORAGE [ENV=VALUE...]: one shell command line that runs
# the broker in the foreground (exec: its pid is the shell's), writes that pid
# to DIR/broker.pid and appends to DIR/broker.log. STORAGE is `sqlite` (file
# DIR/nisshi.db: nisshi resolves sqlite:// paths against its working
# directory), `memory`, or a storage URL.
broker_cmd() {
    local port="$1" dir="$2" storage="$3"
    shift 3
    local url
    case "$storage" in
        sqlite) url="sqlite://nisshi.db" ;;
        memory) url="memory://nisshi/" ;;
        *://*) url="$storage" ;;
        *) die "unknown broker storage '$storage' (sqlite|memory|URL)" ;;
    esac
    : "${NISSHI_BIN:=$(command -v nisshi)}"
    local envs=""
    local kv
    for kv in "$@"; do envs="$envs $(printf '%q' "$kv")"; done
    printf 'cd %q && echo $$ >%q && exec env%s %q broker --listener-url %q --advertised-listener-url %q --storage-engine %q >>%q 2>&1' \
        "$dir" "$dir/broker.pid" "$envs" "$NISSHI_BIN" \
        "tcp://127.0.0.1:$port" "tcp://127.0.0.1:$port" "$url" "$dir/broker.log"
}

# start_broker PORT DIR STORAGE [ENV=VALUE...]
start_broker() {
    local port="$1" dir="$2" storage="$3"
    shift 3
    mkdir -p "$dir"
    if tcp_open 127.0.0.1 "$port"; then
        log "broker already listening on 127.0.0.1:$port"
        return 0
    fi
    local cmd
    cmd="$(broker_cmd "$port" "$dir" "$storage" "$@")"
    rm -f "$dir/broker.pid"
    setsid sh -c "$cmd" </dev/null >/dev/null 2>&1 &
    local deadline=$((SECONDS + 5))
    until [ -s "$dir/broker.pid" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "no pidfile $dir/broker.pid after 5 s"
        sleep 0.05
    done
    wait_ready "broker :$port" 60 "$dir/broker.pid" "$dir/broker.log" tcp_open 127.0.0.1 "$port"
    log "broker ready on 127.0.0.1:$port ($storage)"
}

# create_databases PORT: the two service databases, if missing.
create_databases() {
    local port="$1" db exists
    : "${PG_BIN:=$(pg_bin_dir)}"
    for db in seckill_inventory seckill_orders; do
        exists="$(PGPASSWORD=postgres PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -h 127.0.0.1 -p "$port" \
            -U postgres -d postgres -XtAq -c "SELECT 1 FROM pg_database WHERE datname = '$db'")"
        if [ "$exists" != 1 ]; then
            PGPASSWORD=postgres PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -h 127.0.0.1 -p "$port" \
                -U postgres -d postgres -XqA -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
            log "created database $db"
        fi
    done
}

# stop_all DIR: the services first (they flush to the broker and close their
# pools), then the broker, Redis and PostgreSQL (SIGINT: fast shutdown; SIGTERM
# would wait for every client to disconnect).
stop_all() {
    local dir="$1" name pidfile
    [ -d "$dir" ] || return 0
    for name in gateway order-service inventory-service; do
        stop_pid "$name" "$dir/$name.pid" TERM 30
    done
    for pidfile in "$dir"/*.pid; do
        [ -e "$pidfile" ] || continue
        name="$(basename "$pidfile" .pid)"
        case "$name" in
            broker | redis | postgres) ;;
            *) stop_pid "$name" "$pidfile" TERM 30 ;;
        esac
    done
    stop_pid broker "$dir/broker.pid" TERM 15
    stop_pid redis "$dir/redis.pid" TERM 15
    stop_pid postgresql "$dir/postgres.pid" INT 30
}
