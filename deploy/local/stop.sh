#!/usr/bin/env bash
# Stops what deploy/local/run.sh started: the services first (they drain and
# commit), then the broker, Redis and PostgreSQL. State stays in .seckill/.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/local/lib.sh
source "$REPO/deploy/local/lib.sh"

stop_all "$REPO/.seckill"
log "stopped; state kept in $REPO/.seckill (delete it for a clean start)"
