#!/usr/bin/env bash
# THE TEST COMMAND: throwaway Redis, PostgreSQL and broker on test ports, then
# the whole workspace's tests against them. Extra arguments go to cargo test;
# those after `--` go to the test binaries:
#
#   deploy/local/test.sh                       # everything
#   deploy/local/test.sh -p seckill-tests -- --nocapture
#
# The tests read (all on 127.0.0.1):
#   SECKILL_TEST_REDIS_URL       redis://127.0.0.1:16379
#   SECKILL_TEST_DATABASE_URL    postgres://postgres:postgres@127.0.0.1:15432/postgres (fsync off)
#   SECKILL_TEST_KAFKA_BROKERS   127.0.0.1:19092; SECKILL_TEST_BROKER_PORT 19092
#   SECKILL_TEST_STATE_DIR       this run's temporary directory (deleted at exit)
#   SECKILL_TEST_BROKER_CMD      one shell command line (run it with `sh -c`) that
#                                runs the broker in the FOREGROUND: it writes its
#                                own pid to SECKILL_TEST_BROKER_PIDFILE and execs,
#                                so the spawned child is the broker. A test stops
#                                the broker by killing that pid (SIGTERM) and
#                                starts it again with this command.
#   SECKILL_TEST_BIN_DIR         where `cargo build` put the service binaries
#   SECKILL_SCHEMATHESIS_BIN     schemathesis, for tests/tests/input_properties/contract.rs
#   SECKILL_TEST_TRANSPORT       kafka (default) or redis-streams: what the stacks run on
# Storage is memory:// (SECKILL_TEST_BROKER_STORAGE=sqlite keeps topics across
# a broker restart). SECKILL_TEST_THREADS (default 2) sets --test-threads;
# SECKILL_KEEP_STATE=1 keeps the temporary directory.
#
# Without arguments, the whole suite runs on Kafka, then the tests that
# depend on the transport (STREAMS_TESTS below: purchase path, redelivery,
# lifecycle, faults) run again on Redis Streams. With arguments, only the
# selected tests run, on SECKILL_TEST_TRANSPORT.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh

cargo_args=()
test_args=()
after_dashes=""
for arg in "$@"; do
    if [ -z "$after_dashes" ] && [ "$arg" = -- ]; then
        after_dashes=1
    elif [ -n "$after_dashes" ]; then
        test_args+=("$arg")
    else
        cargo_args+=("$arg")
    fi
done

ensure_deps
ensure_api_tools
ensure_browser

# Manifests and Dockerfiles first: seconds, and independent of the servers.
# SECKILL_SKIP_MANIFESTS=1 skips them for a quick local loop (never in CI).
if [ "${SECKILL_SKIP_MANIFESTS:-0}" != 1 ]; then
    log "checking k8s manifests and Dockerfiles"
    bash deploy/check-manifests.sh
fi

STATE="$(mktemp -d "${TMPDIR:-/tmp}/seckill-test.XXXXXX")"
CHILD_PID=""

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # cargo runs in its own process group (see run_child): take it down whole.
    if pid_alive "$CHILD_PID"; then
        kill -TERM -- "-$CHILD_PID" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while pid_alive "$CHILD_PID" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        kill -KILL -- "-$CHILD_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ]; then
        local f
        # The services' own logs (one per process the tests started): the last
        # errors of each, briefly, so a CI failure can be read afterwards.
        # (Tests that stop a dependency on purpose leave errors too.)
        if [ -d "$STATE/logs" ]; then
            for f in "$STATE"/logs/*.log; do
                [ -e "$f" ] || continue
                local problems
                problems=$(grep '"level":"ERROR"' "$f" | grep -v librdkafka | tail -n 2 || true)
                [ -n "$problems" ] || continue
                log "last errors in $(basename "$f"):"
                printf '%s\n' "$problems" | cut -c1-300 >&2
            done
        fi
        for f in broker.log redis.log postgres.log; do
            [ -e "$STATE/$f" ] || continue
            log "last lines of $f:"
            tail -n 15 "$STATE/$f" >&2 || true
        done
    fi
    stop_all "$STATE" || true
    if [ "${SECKILL_KEEP_STATE:-0}" = 1 ]; then
        log "state kept in $STATE"
    else
        rm -rf "$STATE" "$(readlink "$STATE/pg" 2>/dev/null || true)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_child CMD...: in its own process group and in the background, so that a
# SIGTERM to this script runs cleanup at once (bash defers traps while a
# foreground child runs) and cleanup can stop everything CMD started.
run_child() {
    setsid "$@" &
    CHILD_PID=$!
    local status=0
    wait "$CHILD_PID" || status=$?
    CHILD_PID=""
    return "$status"
}

log "state in $STATE"
BROKER_PORT=19092
BROKER_STORAGE="${SECKILL_TEST_BROKER_STORAGE:-memory}"
start_redis 16379 "$STATE" ephemeral
start_postgres 15432 "$STATE" no-fsync
start_broker "$BROKER_PORT" "$STATE" "$BROKER_STORAGE" GROUP_INITIAL_REBALANCE_DELAY=0s

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac

export SECKILL_TEST_REDIS_URL=redis://127.0.0.1:16379
export SECKILL_TEST_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:15432/postgres
export SECKILL_TEST_KAFKA_BROKERS="127.0.0.1:$BROKER_PORT"
export SECKILL_TEST_BROKER_PORT="$BROKER_PORT"
export SECKILL_TEST_STATE_DIR="$STATE"
export SECKILL_TEST_BROKER_PIDFILE="$STATE/broker.pid"
SECKILL_TEST_BROKER_CMD="$(broker_cmd "$BROKER_PORT" "$STATE" "$BROKER_STORAGE" GROUP_INITIAL_REBALANCE_DELAY=0s)"
export SECKILL_TEST_BROKER_CMD
export SECKILL_TEST_BIN_DIR="$TARGET_DIR/debug"

log "cargo build --workspace --bins"
run_child cargo build --workspace --bins

status=0
log "cargo test --workspace --no-fail-fast ${cargo_args[*]} -- --test-threads=${SECKILL_TEST_THREADS:-2} ${test_args[*]}"
run_child cargo test --workspace --no-fail-fast "${cargo_args[@]}" \
    -- --test-threads="${SECKILL_TEST_THREADS:-2}" "${test_args[@]}" || status=$?

# The second transport: the tests whose outcome depends on how events travel,
# with --workspace as above (another package selection would resolve other
# features and rebuild the dependencies),
# by name (libtest filters; a test whose name contains one of these runs).
# Not here: tests of one transport's own machinery (the broker stopped or
# stalled, Kafka's produce windows, the orphan window Streams closes) and
# tests that do not touch the transport (HTTP input, the read path, traces,
# metrics). The Streams-only tests (tests/tests/faults/streams.rs, among
# them the Streams version of the lost script answer) ran above.
STREAMS_BINARIES=(--test purchase_path --test redelivery_and_input --test lifecycle --test faults --test every_202_kept)
STREAMS_TESTS=(
    no_oversell_under_a_burst one_purchase_per_user order_status_moves_from_queued
    sale_window_is_enforced every_accepted_order_is_persisted_once_across
    redelivered_events_change_nothing
    paying_marks_the_order_paid a_decline_then_a_success a_charge_whose_answer_was_lost
    pay_and_expire_race an_expired_order_returns_its_stock cancelling_returns_the_stock
    two_order_services_expire expiry_survives_an_order_service_restart
    inventory_service_killed_mid_burst order_service_killed_mid_burst
    redis_stopped_and_started_with_its_data postgres_restarted_mid_burst
    sigterm_to_the_gateway_mid_burst sigterm_to_the_consumers_mid_burst
    malformed_events_are_dead_lettered every_service_waits_for_all_its_tasks
    an_oversized_request_does_not_close_the_sale
    a_rejected_duplicate_leaves_the_holder_blocked a_read_only_database_pauses_the_consumer
    the_sweeper_waits_for_an_order_service_that_is_down
)
if [ "${#cargo_args[@]}" -eq 0 ] && [ "${#test_args[@]}" -eq 0 ] &&
    [ "${SECKILL_TEST_TRANSPORT:-kafka}" = kafka ]; then
    log "again on Redis Streams: ${#STREAMS_TESTS[@]} transport-bound tests"
    SECKILL_TEST_TRANSPORT=redis-streams run_child cargo test --workspace --no-fail-fast \
        "${STREAMS_BINARIES[@]}" -- --test-threads="${SECKILL_TEST_THREADS:-2}" \
        "${STREAMS_TESTS[@]}" || status=$?
fi
exit "$status"
