#!/usr/bin/env bash
# Local MySQL/MariaDB + PostgreSQL for salesdwh.
#
#   scripts/local-stack.sh up       start both servers, create the app users and databases
#   scripts/local-stack.sh down     stop both servers (data is kept)
#   scripts/local-stack.sh status   one line per service; exit 0 only if both are usable
#
# Configuration: MYSQL_URL and POSTGRES_URL from the environment, else from .env at the
# repository root, else from .env.example.
# With a Docker engine it runs compose/docker-compose.yml (MySQL 8.0 + PostgreSQL 15).
# Without one it uses the Debian packages (MariaDB + PostgreSQL), started without systemd.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly COMPOSE_FILE="$ROOT/compose/docker-compose.yml"
readonly WAIT_SECS=60
readonly MARIADBD=/usr/sbin/mariadbd

say() { printf 'local-stack: %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }
usage() { say "usage: scripts/local-stack.sh up|down|status" >&2; exit 2; }

# ---------------------------------------------------------------- configuration

ENV_FILE=""
# Reads KEY=VALUE lines (no shell evaluation); variables already set win.
load_env() {
  local line key val
  if [[ -f $ROOT/.env ]]; then
    ENV_FILE=$ROOT/.env
  elif [[ -f $ROOT/.env.example ]]; then
    ENV_FILE=$ROOT/.env.example
  else
    return 0
  fi
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=[[:space:]]*(.*)$ ]] || continue
    key=${BASH_REMATCH[2]}
    val=${BASH_REMATCH[3]}
    case $key in
      MYSQL_URL | POSTGRES_URL | MYSQL_ROOT_PASSWORD) ;;
      *) continue ;;
    esac
    if [[ $val =~ ^\"(.*)\"[[:space:]]*$ || $val =~ ^\'(.*)\'[[:space:]]*$ ]]; then
      val=${BASH_REMATCH[1]}
    else
      val=$(sed -E 's/[[:space:]]+#.*$//; s/[[:space:]]+$//' <<<"$val")
    fi
    if [[ -z ${!key+x} ]]; then
      printf -v "$key" '%s' "$val"
    fi
  done <"$ENV_FILE"
}

urldecode() {
  local s=${1//\\/\\\\}
  printf '%b' "${s//%/\\x}"
}

# parse_url PREFIX URL DEFAULT_PORT -> PREFIX_SCHEME PREFIX_USER PREFIX_PASS PREFIX_HOST PREFIX_PORT PREFIX_DB
parse_url() {
  local prefix=$1 url=$2 default_port=$3 rest userinfo after hostport host port path user pass=""
  [[ $url == *://* ]] || die "$prefix URL is not scheme://user:password@host:port/database"
  printf -v "${prefix}_SCHEME" '%s' "${url%%://*}"
  rest=${url#*://}
  userinfo=""
  after=$rest
  if [[ $rest == *@* ]]; then # user info ends at the last "@"
    userinfo=${rest%@*}
    after=${rest##*@}
  fi
  user=${userinfo%%:*}
  [[ $userinfo == *:* ]] && pass=${userinfo#*:}
  hostport=${after%%[/?#]*}
  path=${after#"$hostport"}
  if [[ $hostport == \[*\]* ]]; then # [ipv6]:port
    host=${hostport%%]*}
    host=${host#\[}
    port=${hostport#*]}
    port=${port#:}
  elif [[ $hostport == *:* ]]; then
    host=${hostport%:*}
    port=${hostport##*:}
  else
    host=$hostport
    port=""
  fi
  path=${path#/}
  path=${path%%[?#]*}
  [[ -n $port ]] || port=$default_port
  [[ $port =~ ^[0-9]+$ ]] || die "$prefix URL has a bad port"
  [[ -n $host ]] || host=127.0.0.1
  printf -v "${prefix}_USER" '%s' "$(urldecode "$user")"
  printf -v "${prefix}_PASS" '%s' "$(urldecode "$pass")"
  printf -v "${prefix}_HOST" '%s' "$host"
  printf -v "${prefix}_PORT" '%s' "$port"
  printf -v "${prefix}_DB" '%s' "$(urldecode "$path")"
}

load_config() {
  load_env
  [[ -n ${MYSQL_URL:-} ]] || die "MYSQL_URL is not set (environment, .env or .env.example)"
  [[ -n ${POSTGRES_URL:-} ]] || die "POSTGRES_URL is not set (environment, .env or .env.example)"
  parse_url MY "$MYSQL_URL" 3306
  parse_url PG "$POSTGRES_URL" 5432
  case $MY_SCHEME in mysql | mariadb) ;; *) die "MYSQL_URL must start with mysql://" ;; esac
  case $PG_SCHEME in postgres | postgresql) ;; *) die "POSTGRES_URL must start with postgres://" ;; esac
  [[ -n $MY_USER && -n $MY_DB ]] || die "MYSQL_URL needs a user and a database"
  [[ -n $PG_USER && -n $PG_DB ]] || die "POSTGRES_URL needs a user and a database"
  # TCP address used for checks (clients treat "localhost" as "use the socket").
  MY_TCP_HOST=$MY_HOST
  [[ $MY_TCP_HOST == localhost ]] && MY_TCP_HOST=127.0.0.1
  PG_TCP_HOST=$PG_HOST
  [[ $PG_TCP_HOST == localhost ]] && PG_TCP_HOST=127.0.0.1
  # Never let the caller's client settings leak into root/admin connections.
  unset MYSQL_PWD PGPASSWORD PGUSER PGDATABASE PGHOST PGPORT PGSERVICE
}

my_target() { printf '%s@%s:%s/%s' "$MY_USER" "$MY_HOST" "$MY_PORT" "$MY_DB"; }
pg_target() { printf '%s@%s:%s/%s' "$PG_USER" "$PG_HOST" "$PG_PORT" "$PG_DB"; }

# Replace the passwords in a message before it is printed.
mask() {
  local s=$1 p
  for p in "${MY_PASS:-}" "${PG_PASS:-}" "${MYSQL_ROOT_PASSWORD:-}"; do
    [[ -n $p ]] && s=${s//"$p"/***}
  done
  printf '%s' "$s"
}

# run_quiet LABEL CMD... : runs CMD (stdin passed through); on failure prints its output, masked.
run_quiet() {
  local label=$1 out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  if ((rc != 0)); then
    say "$label failed (exit $rc):"
    mask "$out" | sed 's/^/local-stack:   /' >&2
    return "$rc"
  fi
}

sql_my_str() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\'\'}"; }
# shellcheck disable=SC2016 # literal backticks
sql_my_ident() { printf '`%s`' "${1//\`/\`\`}"; }
sql_pg_str() { printf "'%s'" "${1//\'/\'\'}"; }
sql_pg_ident() { printf '"%s"' "${1//\"/\"\"}"; }

is_local_host() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]; }

# ---------------------------------------------------------------- docker mode

docker_available() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

compose() {
  docker compose version >/dev/null 2>&1 || die "a Docker engine answers but 'docker compose' (v2 plugin) is missing"
  local env_args=()
  [[ -n $ENV_FILE ]] && env_args=(--env-file "$ENV_FILE")
  MYSQL_USER=$MY_USER MYSQL_PASSWORD=$MY_PASS MYSQL_DATABASE=$MY_DB MYSQL_PORT=$MY_PORT \
    POSTGRES_USER=$PG_USER POSTGRES_PASSWORD=$PG_PASS POSTGRES_DB=$PG_DB POSTGRES_PORT=$PG_PORT \
    docker compose -f "$COMPOSE_FILE" "${env_args[@]}" "$@"
}

docker_health() { # service -> healthy|starting|unhealthy|running|exited|absent
  local id
  id=$(compose ps -q "$1" 2>/dev/null | head -n1) || true
  if [[ -z $id ]]; then
    echo absent
    return
  fi
  docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id" 2>/dev/null || echo absent
}

docker_status() {
  local ok=0 h
  h=$(docker_health mysql)
  if [[ $h == healthy ]]; then say "mysql     up    $(my_target) (docker mysql:8.0)"; else say "mysql     down  (container: $h)"; ok=1; fi
  h=$(docker_health postgres)
  if [[ $h == healthy ]]; then say "postgres  up    $(pg_target) (docker postgres:15)"; else say "postgres  down  (container: $h)"; ok=1; fi
  return "$ok"
}

docker_up() {
  say "docker engine found: docker compose up (compose/docker-compose.yml)"
  run_quiet "docker compose up" compose up -d --wait
  docker_status
}

docker_down() {
  run_quiet "docker compose down" compose down
  say "docker compose down done (volumes kept)"
}

# ---------------------------------------------------------------- native mode: tools

MYSQL_CLI=""
MYSQL_ADMIN=""
pick_clients() {
  MYSQL_CLI=$(command -v mariadb || command -v mysql || true)
  MYSQL_ADMIN=$(command -v mariadb-admin || command -v mysqladmin || true)
}

pg_server_bin() { compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }

ensure_packages() {
  pick_clients
  if [[ -x $MARIADBD && -n $MYSQL_CLI && -n $MYSQL_ADMIN ]] && command -v pg_ctlcluster >/dev/null &&
    command -v psql >/dev/null && command -v pg_isready >/dev/null && pg_server_bin; then
    return 0
  fi
  local pkgs=(mariadb-server mariadb-client postgresql postgresql-client)
  if ((EUID != 0)); then
    die "MariaDB/PostgreSQL missing: run 'sudo apt-get install -y ${pkgs[*]}' (or run this script as root)"
  fi
  local log=/tmp/local-stack-apt.log
  say "installing ${pkgs[*]} (log: $log)"
  if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}"; } >"$log" 2>&1; then
    tail -n 5 "$log" | sed 's/^/local-stack:   /' >&2
    die "apt-get install failed (see $log)"
  fi
  pick_clients
  [[ -x $MARIADBD && -n $MYSQL_CLI && -n $MYSQL_ADMIN ]] || die "mariadb-server installed but $MARIADBD or its clients are missing"
  if ! pg_server_bin || ! command -v pg_ctlcluster >/dev/null; then
    die "postgresql installed but no server binary or pg_ctlcluster found"
  fi
}

# ---------------------------------------------------------------- native mode: MariaDB

my_answers() { # TCP ping; exits 0 even on "access denied", which is what we want
  [[ -n $MYSQL_ADMIN ]] || return 1
  # (with the app password, so a provisioned server logs no "access denied" warnings)
  MYSQL_PWD=$MY_PASS "$MYSQL_ADMIN" --no-defaults --protocol=TCP -h "$MY_TCP_HOST" -P "$MY_PORT" \
    -u "$MY_USER" --connect-timeout=2 ping >/dev/null 2>&1
}

my_root() { # SQL on stdin; root over the local socket, else over TCP
  if "$MYSQL_CLI" --protocol=socket -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    "$MYSQL_CLI" --protocol=socket -uroot "$@"
  else
    MYSQL_PWD=${MYSQL_ROOT_PASSWORD:-} "$MYSQL_CLI" --protocol=TCP -h "$MY_TCP_HOST" -P "$MY_PORT" -uroot "$@"
  fi
}

my_datadir() {
  local d
  d=$(my_print_defaults --mysqld 2>/dev/null | sed -n 's/^--datadir=//p' | tail -n1) || true
  printf '%s' "${d:-/var/lib/mysql}"
}

my_start() {
  if my_answers; then
    return 0
  fi
  ((EUID == 0)) || die "MariaDB is not running on $MY_TCP_HOST:$MY_PORT; run this script as root to start it"
  local datadir args=() log=/var/log/mysql/local-stack-mariadbd.log
  datadir=$(my_datadir)
  install -d -o mysql -g mysql /run/mysqld
  [[ -d /var/log/mysql ]] || install -d -o mysql -g adm -m 2750 /var/log/mysql
  if [[ ! -d $datadir/mysql ]]; then
    say "initialising MariaDB data directory $datadir"
    run_quiet "mariadb-install-db" mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db
  fi
  [[ $MY_PORT != 3306 ]] && args+=("--port=$MY_PORT")
  say "starting MariaDB on $MY_TCP_HOST:$MY_PORT"
  start-stop-daemon --start --oknodo --quiet --background --output "$log" \
    --exec "$MARIADBD" -- "${args[@]}"
  local i
  for ((i = 0; i < WAIT_SECS; i++)); do
    my_answers && return 0
    sleep 1
  done
  die "MariaDB did not answer on $MY_TCP_HOST:$MY_PORT within ${WAIT_SECS}s (see /var/log/mysql/)"
}

my_provision() {
  local u p h sql=""
  if [[ $MY_USER == root ]]; then
    say "MYSQL_URL uses root: not touching root accounts, only creating the database"
  else
    u=$(sql_my_str "$MY_USER")
    p=$(sql_my_str "$MY_PASS")
    for h in localhost % 127.0.0.1; do
      h=$(sql_my_str "$h")
      sql+="CREATE USER IF NOT EXISTS $u@$h IDENTIFIED BY $p;"$'\n'
      sql+="ALTER USER $u@$h IDENTIFIED BY $p;"$'\n'
      sql+="GRANT ALL PRIVILEGES ON *.* TO $u@$h WITH GRANT OPTION;"$'\n'
    done
  fi
  sql+="CREATE DATABASE IF NOT EXISTS $(sql_my_ident "$MY_DB") CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"$'\n'
  sql+="SET GLOBAL local_infile = 1;"$'\n'
  run_quiet "MariaDB provisioning (as root)" my_root <<<"$sql"
}

my_stop() {
  if ! my_answers && ! pgrep -x mariadbd >/dev/null 2>&1; then
    say "mysql     already down"
    return 0
  fi
  if ! "$MYSQL_ADMIN" --protocol=socket -uroot shutdown >/dev/null 2>&1; then
    ((EUID == 0)) || die "cannot stop MariaDB: run this script as root"
    start-stop-daemon --stop --oknodo --quiet --retry 30 --exec "$MARIADBD"
  fi
  local i
  for ((i = 0; i < WAIT_SECS; i++)); do
    if ! my_answers && ! pgrep -x mariadbd >/dev/null 2>&1; then
      say "mysql     stopped"
      return 0
    fi
    sleep 1
  done
  die "MariaDB still running after ${WAIT_SECS}s"
}

MY_VERSION=""
my_login() { # as the app user over TCP, into the app database
  local v
  v=$(MYSQL_PWD=$MY_PASS "$MYSQL_CLI" --no-defaults --protocol=TCP -h "$MY_TCP_HOST" -P "$MY_PORT" \
    -u "$MY_USER" --connect-timeout=5 -N -B -e 'SELECT VERSION()' "$MY_DB" 2>/dev/null) || return 1
  if [[ $v == *MariaDB* ]]; then MY_VERSION="MariaDB ${v%%-*}"; else MY_VERSION="MySQL ${v%%-*}"; fi
}

# ---------------------------------------------------------------- native mode: PostgreSQL

pg_answers() { pg_isready -q -t 2 -h "$PG_TCP_HOST" -p "$PG_PORT" >/dev/null 2>&1; }

PG_VER=""
PG_CLUSTER=""
PG_CLUSTER_STATUS=""
# Finds the Debian cluster listening on PG_PORT.
pg_find_cluster() {
  local ver name port status rest
  PG_VER="" PG_CLUSTER="" PG_CLUSTER_STATUS=""
  command -v pg_lsclusters >/dev/null || return 1
  while read -r ver name port status rest; do
    if [[ $port == "$PG_PORT" ]]; then
      PG_VER=$ver PG_CLUSTER=$name PG_CLUSTER_STATUS=$status
      return 0
    fi
  done < <(pg_lsclusters -h 2>/dev/null)
  return 1
}

pg_start() {
  if pg_answers; then
    return 0
  fi
  ((EUID == 0)) || die "PostgreSQL is not running on $PG_TCP_HOST:$PG_PORT; run this script as root to start it"
  if ! pg_find_cluster; then
    if [[ -n $(pg_lsclusters -h 2>/dev/null) ]]; then
      die "no PostgreSQL cluster uses port $PG_PORT (pg_lsclusters shows others); fix POSTGRES_URL or the cluster port"
    fi
    local newest
    newest=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
    say "creating PostgreSQL cluster $newest/main on port $PG_PORT"
    run_quiet "pg_createcluster" pg_createcluster --port "$PG_PORT" "$newest" main
    pg_find_cluster || die "pg_createcluster did not create a cluster on port $PG_PORT"
  fi
  if [[ $PG_CLUSTER_STATUS != online* ]]; then
    say "starting PostgreSQL $PG_VER/$PG_CLUSTER on $PG_TCP_HOST:$PG_PORT"
    run_quiet "pg_ctlcluster start" pg_ctlcluster --skip-systemctl-redirect "$PG_VER" "$PG_CLUSTER" start
  fi
  local i
  for ((i = 0; i < WAIT_SECS; i++)); do
    pg_answers && return 0
    sleep 1
  done
  die "PostgreSQL did not answer on $PG_TCP_HOST:$PG_PORT within ${WAIT_SECS}s (see /var/log/postgresql/)"
}

pg_admin() { # SQL on stdin, as the postgres superuser over the local socket
  local psql=(psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres)
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "${psql[@]}")
  elif [[ $(id -un) == postgres ]]; then
    "${psql[@]}"
  else
    "${psql[@]}" -h "$PG_TCP_HOST" -U postgres -w
  fi
}

pg_provision() {
  local u_str u_id p db_str db_id
  u_str=$(sql_pg_str "$PG_USER")
  u_id=$(sql_pg_ident "$PG_USER")
  p=$(sql_pg_str "$PG_PASS")
  db_str=$(sql_pg_str "$PG_DB")
  db_id=$(sql_pg_ident "$PG_DB")
  run_quiet "PostgreSQL provisioning (as postgres)" pg_admin <<EOF
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = $u_str) AS need_role \gset
\if :need_role
CREATE ROLE $u_id LOGIN SUPERUSER PASSWORD $p;
\else
ALTER ROLE $u_id WITH LOGIN SUPERUSER PASSWORD $p;
\endif
SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = $db_str) AS need_db \gset
\if :need_db
CREATE DATABASE $db_id OWNER $u_id;
\endif
EOF
}

pg_stop() {
  if ! pg_find_cluster; then
    if pg_answers; then die "PostgreSQL answers on port $PG_PORT but is not a Debian cluster; stop it yourself"; fi
    say "postgres  already down"
    return 0
  fi
  if [[ $PG_CLUSTER_STATUS != online* ]]; then
    say "postgres  already down"
    return 0
  fi
  run_quiet "pg_ctlcluster stop" pg_ctlcluster --skip-systemctl-redirect "$PG_VER" "$PG_CLUSTER" stop
  say "postgres  stopped"
}

PG_VERSION=""
pg_login() {
  local v
  v=$(PGPASSWORD=$PG_PASS PGCONNECT_TIMEOUT=5 psql -X -w -A -t -h "$PG_TCP_HOST" -p "$PG_PORT" \
    -U "$PG_USER" -d "$PG_DB" -c 'SHOW server_version' 2>/dev/null) || return 1
  PG_VERSION="PostgreSQL ${v%% *}"
}

# ---------------------------------------------------------------- native mode: commands

native_status() {
  local ok=0
  pick_clients
  if ! my_answers; then
    say "mysql     down  nothing answers on $MY_TCP_HOST:$MY_PORT"
    ok=1
  elif my_login; then
    say "mysql     up    $(my_target) ($MY_VERSION)"
  else
    say "mysql     up    server answers on $MY_TCP_HOST:$MY_PORT, but $MY_USER cannot log in to $MY_DB (run: scripts/local-stack.sh up)"
    ok=1
  fi
  if ! command -v pg_isready >/dev/null || ! pg_answers; then
    say "postgres  down  nothing answers on $PG_TCP_HOST:$PG_PORT"
    ok=1
  elif pg_login; then
    say "postgres  up    $(pg_target) ($PG_VERSION)"
  else
    say "postgres  up    server answers on $PG_TCP_HOST:$PG_PORT, but $PG_USER cannot log in to $PG_DB (run: scripts/local-stack.sh up)"
    ok=1
  fi
  return "$ok"
}

native_up() {
  is_local_host "$MY_HOST" || die "native mode only manages local servers; MYSQL_URL host is $MY_HOST"
  is_local_host "$PG_HOST" || die "native mode only manages local servers; POSTGRES_URL host is $PG_HOST"
  ensure_packages
  local was_ready=0
  if my_answers && pg_answers && my_login && pg_login; then
    was_ready=1
  fi
  my_start
  pg_start
  my_provision
  pg_provision
  my_login || die "MariaDB: $MY_USER cannot log in over TCP to $MY_TCP_HOST:$MY_PORT/$MY_DB after provisioning"
  pg_login || die "PostgreSQL: $PG_USER cannot log in over TCP to $PG_TCP_HOST:$PG_PORT/$PG_DB after provisioning"
  ((was_ready)) && say "already running and provisioned (users/databases re-checked)"
  say "mysql     up    $(my_target) ($MY_VERSION)"
  say "postgres  up    $(pg_target) ($PG_VERSION)"
}

native_down() {
  is_local_host "$MY_HOST" || die "native mode only manages local servers; MYSQL_URL host is $MY_HOST"
  is_local_host "$PG_HOST" || die "native mode only manages local servers; POSTGRES_URL host is $PG_HOST"
  pick_clients
  [[ -n $MYSQL_ADMIN ]] || die "mariadb-admin/mysqladmin not found"
  my_stop
  pg_stop
}

# ---------------------------------------------------------------- main

main() {
  [[ $# -eq 1 ]] || usage
  case $1 in up | down | status) ;; *) usage ;; esac
  cd "$ROOT"
  load_config
  if docker_available; then
    case $1 in
      up) docker_up ;;
      down) docker_down ;;
      status) docker_status ;;
    esac
  else
    case $1 in
      up) native_up ;;
      down) native_down ;;
      status) native_status ;;
    esac
  fi
}

main "$@"
