#!/bin/sh
# One-shot set-up for docker-compose: the schema, the generated sync SQL,
# the lane topics and the Debezium connector, all from the mapping.
set -eu
: "${NEXUS_PG_HOST:?}" "${NEXUS_CONNECT_URL:?}"
export PGPASSWORD="$NEXUS_PG_ADMIN_PASSWORD"
until psql -h "$NEXUS_PG_HOST" -U "$NEXUS_PG_ADMIN_USER" -d "$NEXUS_PG_DB" -c 'select 1' >/dev/null 2>&1; do sleep 1; done
psql -v ON_ERROR_STOP=1 -h "$NEXUS_PG_HOST" -U "$NEXUS_PG_ADMIN_USER" -d "$NEXUS_PG_DB" -f /etc/nexus-sync/schemas/contextnexus.sql
psql -v ON_ERROR_STOP=1 -h "$NEXUS_PG_HOST" -U "$NEXUS_PG_ADMIN_USER" -d "$NEXUS_PG_DB" <<SQL
DO \$\$ BEGIN
  CREATE ROLE ${NEXUS_CDC_USER} LOGIN REPLICATION PASSWORD '${NEXUS_CDC_PASSWORD}';
EXCEPTION WHEN duplicate_object THEN NULL; END \$\$;
DO \$\$ BEGIN
  CREATE ROLE ${NEXUS_WRITER_USER} LOGIN PASSWORD '${NEXUS_WRITER_PASSWORD}';
EXCEPTION WHEN duplicate_object THEN NULL; END \$\$;
SQL
nexus-schema sync-sql | psql -v ON_ERROR_STOP=1 -h "$NEXUS_PG_HOST" -U "$NEXUS_PG_ADMIN_USER" -d "$NEXUS_PG_DB"
until curl -fsS "$NEXUS_CONNECT_URL/connectors" >/dev/null; do sleep 2; done
# Connect creates missing topics through its admin client when asked; the
# lane topics need the partition count, so the connector is told to.
nexus-schema connector-json | sed 's/^{$/{ "topic.creation.default.partitions": "'"${NEXUS_TOPIC_PARTITIONS:-4}"'", "topic.creation.default.replication.factor": "1",/' \
  | curl -fsS -X PUT -H 'Content-Type: application/json' --data @- "$NEXUS_CONNECT_URL/connectors/nexus-postgres/config"
echo "nexus-init: done"
