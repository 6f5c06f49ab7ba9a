#!/usr/bin/env bash
# The nightly job, for cron: runs `salesdwh sync` with the settings of an
# env file, appends everything it prints to a timestamped log, keeps the
# newest N logs and exits with sync's own exit code (0 done, 1 run failed,
# 2 usage/configuration), so cron mail and monitors see failures.
#
#   SALESDWH_ENV_FILE   settings file (MYSQL_URL, POSTGRES_URL, ...)  [<repo>/.env]
#   SALESDWH_LOG_DIR    where the logs go                             [<repo>/logs]
#   SALESDWH_KEEP_LOGS  how many logs to keep                         [30]
#   SALESDWH_BIN        the binary   [salesdwh on PATH, else the release build]
#
# Extra arguments go to `salesdwh sync` (e.g. --no-refresh-marts).
# Crontab line (02:15 every night):
#   15 2 * * * /path/to/salesdwh/scripts/nightly.sh
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="${SALESDWH_ENV_FILE:-$ROOT/.env}"
LOG_DIR="${SALESDWH_LOG_DIR:-$ROOT/logs}"
KEEP="${SALESDWH_KEEP_LOGS:-30}"

if [[ ! "$KEEP" =~ ^[1-9][0-9]*$ ]]; then
  echo "nightly: SALESDWH_KEEP_LOGS must be a positive number, not '$KEEP'" >&2
  exit 2
fi
if [[ -n "${SALESDWH_BIN:-}" ]]; then
  BIN="$SALESDWH_BIN"
elif command -v salesdwh >/dev/null 2>&1; then
  BIN="$(command -v salesdwh)"
else
  BIN="${CARGO_TARGET_DIR:-${SALESDWH_CACHE:-$HOME/.cache/salesdwh}/target}/release/salesdwh"
fi
if [[ ! -x "$BIN" ]]; then
  echo "nightly: no salesdwh binary at '$BIN': build it (cargo build --release) or set SALESDWH_BIN" >&2
  exit 2
fi
if [[ ! -r "$ENV_FILE" ]]; then
  echo "nightly: cannot read the settings file '$ENV_FILE': create it from .env.example or set SALESDWH_ENV_FILE" >&2
  exit 2
fi
if ! mkdir -p "$LOG_DIR"; then
  echo "nightly: cannot create the log directory '$LOG_DIR': set SALESDWH_LOG_DIR" >&2
  exit 2
fi

# Sortable, unique per second, in UTC like everything salesdwh writes.
LOG="$LOG_DIR/sync-$(date -u +%Y%m%dT%H%M%SZ).log"
# A subshell, so its `exit` ends only the logged part.
(
  echo "nightly: $(date -u '+%Y-%m-%d %H:%M:%S') UTC: salesdwh sync $*"
  "$BIN" --env-file "$ENV_FILE" sync "$@"
  code=$?
  echo "nightly: $(date -u '+%Y-%m-%d %H:%M:%S') UTC: exit code $code"
  exit "$code"
) >>"$LOG" 2>&1
code=$?

# Keep the newest $KEEP logs (names sort by time).
mapfile -t logs < <(find "$LOG_DIR" -maxdepth 1 -name 'sync-*.log' -type f | sort)
excess=$(( ${#logs[@]} - KEEP ))
for (( i = 0; i < excess; i++ )); do
  rm -f -- "${logs[$i]}"
done

if [[ $code -ne 0 ]]; then
  echo "nightly: salesdwh sync failed with exit code $code; see $LOG" >&2
fi
exit "$code"
