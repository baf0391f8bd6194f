#!/bin/bash
# Runs once, when the InfluxDB 2 container initialises: map the bucket to the InfluxQL
# database "fieldproof" (dashboards and checks use InfluxQL) and give Grafana a read-only
# v1 login for it.
set -euo pipefail
influx v1 dbrp create --db fieldproof --rp autogen --default \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID:?}" --org "${DOCKER_INFLUXDB_INIT_ORG:?}"
influx v1 auth create --username grafana --password "${GRAFANA_INFLUX_PASSWORD:?}" \
  --read-bucket "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" --org "${DOCKER_INFLUXDB_INIT_ORG}"
