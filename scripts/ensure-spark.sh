#!/usr/bin/env bash
# Everything the Spark engine (WAP_ENGINE=spark) needs besides the `spark` Python extra: a Java
# runtime and the JDBC drivers of Iceberg's JDBC catalog, from Debian. Idempotent: installs only
# what is missing (dpkg -s), so a prepared machine does nothing here. Nothing is fetched at run time.
#   libxerial-sqlite-jdbc-java (+ -jni)  /usr/share/java/sqlite-jdbc.jar   the default SQLite catalog
#   libpostgresql-jdbc-java              /usr/share/java/postgresql.jar    a PostgreSQL catalog
set -euo pipefail

packages=(libxerial-sqlite-jdbc-java libxerial-sqlite-jdbc-jni libpostgresql-jdbc-java)
command -v java >/dev/null 2>&1 || packages+=(openjdk-17-jre-headless)

missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-spark: missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "ensure-spark: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for jar in /usr/share/java/sqlite-jdbc.jar /usr/share/java/postgresql.jar; do
  [ -e "$jar" ] || { echo "ensure-spark: $jar is missing after install" >&2; exit 1; }
done
