#!/bin/bash
# Runs once, when the InfluxDB 2 container initialises: map the bucket to the InfluxQL
# database "fieldproof" (dashboards and checks use InfluxQL), give the collector a v1 login
# that may only WRITE the bucket, and Grafana one that may only READ it. The admin token
# (DOCKER_INFLUXDB_INIT_ADMIN_TOKEN) stays in this container.
set -euo pipefail
influx v1 dbrp create --db fieldproof --rp autogen --default \
  --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID:?}" --org "${DOCKER_INFLUXDB_INIT_ORG:?}"
influx v1 auth create --username collector --password "${COLLECTOR_INFLUX_PASSWORD:?}" \
  --write-bucket "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" --org "${DOCKER_INFLUXDB_INIT_ORG}"
influx v1 auth create --username grafana --password "${GRAFANA_INFLUX_PASSWORD:?}" \
  --read-bucket "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" --org "${DOCKER_INFLUXDB_INIT_ORG}"
