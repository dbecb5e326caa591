#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the project into .venv, makes sure RabbitMQ and
# PostgreSQL are running (installing them, and OpenSSH's server for the batch tests, from Debian's packages
# where missing), then runs the linters, the type checker and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
wait_for_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 1; done
  echo "$2 did not start listening on port $1" >&2; return 1
}

say "Python environment"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# The pinned versions (requirements/test.lock, made by pip-compile from pyproject.toml), then the project itself.
.venv/bin/python -m pip install -q -r requirements/test.lock
.venv/bin/python -m pip install -q --no-deps -e .

say "RabbitMQ on 127.0.0.1:5672"
if [ -z "${CASEBRIDGE_TEST_AMQP_URL:-}" ] && ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  as_root rabbitmq-server -detached
  wait_for_port 5672 RabbitMQ
fi

say "PostgreSQL on 127.0.0.1:5432"
if [ -z "${CASEBRIDGE_TEST_POSTGRES_URL:-}" ] && ! port_open 5432; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
    conf=$(ls -d /etc/postgresql/*/main | head -1)
    # Tests connect over loopback as the postgres role without a password (a throwaway local server).
    sed -i 's/^\(host\s\+all\s\+all\s\+127.0.0.1\/32\s\+\)\S\+/\1trust/' "$conf/pg_hba.conf"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_for_port 5432 PostgreSQL
fi

say "OpenSSH server (the batch tests start their own sshd on a loopback port)"
[ -x /usr/sbin/sshd ] || command -v sshd >/dev/null || apt_install openssh-server

say "Chromium for the console's browser tests"
# Playwright drives Debian's Chromium (its own browser download is not used).
[ -x /usr/bin/chromium ] || apt_install chromium

say "ruff"
.venv/bin/ruff check .
say "mypy --strict"
.venv/bin/mypy

say "pytest"
exec .venv/bin/pytest "$@"
