#!/usr/bin/env bash
# Make sure the local services the tests use are up: PostgreSQL on 127.0.0.1:5432.
# (The local AWS server is started by the tests themselves.)
set -euo pipefail

pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "ensure-services: installing the PostgreSQL client tools" >&2
  apt-get update -qq && apt-get install -y -qq postgresql-client >/dev/null
fi
if ! pg_ready; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "ensure-services: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
fi
if ! pg_ready; then
  echo "ensure-services: PostgreSQL is not answering on 127.0.0.1:5432; the catalog tests need it" >&2
  exit 1
fi
