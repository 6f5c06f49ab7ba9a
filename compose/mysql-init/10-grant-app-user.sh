#!/bin/bash
# Run once by the mysql:8.0 image when the data volume is first initialised
# (sourced by /usr/local/bin/docker-entrypoint.sh, after it created $MYSQL_USER@'%').
# Integration tests create their own databases, so the app user gets every privilege.
# Sourced into the entrypoint: no `exit`, no `set` changes here.

if [ -n "${MYSQL_USER:-}" ]; then
	_salesdwh_user=${MYSQL_USER//\\/\\\\}
	_salesdwh_user=${_salesdwh_user//\'/\'\'}
	_salesdwh_sql="GRANT ALL PRIVILEGES ON *.* TO '${_salesdwh_user}'@'%' WITH GRANT OPTION; FLUSH PRIVILEGES;"
	echo "mysql-init: granting ALL PRIVILEGES ON *.* to '${MYSQL_USER}'@'%'"
	if declare -F docker_process_sql >/dev/null; then
		# Sourced by the official entrypoint: reuse its root connection helper.
		docker_process_sql --database=mysql <<<"$_salesdwh_sql"
	else
		# Executed on its own: root over the entrypoint's socket, password via the environment.
		MYSQL_PWD="${MYSQL_ROOT_PASSWORD:-}" mysql --protocol=socket -uroot mysql <<<"$_salesdwh_sql"
	fi
	unset _salesdwh_user _salesdwh_sql
fi
