#!/usr/bin/env bash
# Once per installation, from deploy/compose: make the collector's CA, the broker's certificate
# (for BROKER_HOST in .env), the enrollment endpoint's certificate and the collector's own
# MQTT client certificate. Keys are made inside the containers' volumes; only the broker's key
# and certificates land in ./pki/broker (read by the mosquitto container).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[ -r .env ] || { echo "init-pki: copy .env.example to .env and fill it in first" >&2; exit 1; }
BROKER_HOST=$(sed -n 's/^BROKER_HOST=//p' .env)
[ -n "$BROKER_HOST" ] || { echo "init-pki: set BROKER_HOST in .env" >&2; exit 1; }
chmod 600 .env
install -d -m 0755 pki/broker

cfg=/etc/fieldproof/collector.toml
run() { docker compose run --rm --no-deps collector fieldproof "$@"; }

docker compose build collector
# the collector container runs as uid 10001; let it write the broker's files
docker run --rm -v "$PWD/pki/broker:/c" busybox chown 10001:10001 /c
run collector ca init --config "$cfg"
run collector ca server-cert --config "$cfg" --host "$BROKER_HOST" --out-dir /etc/fieldproof/mosquitto/certs
run collector ca server-cert --config "$cfg" --host "$BROKER_HOST" \
  --out-dir /var/lib/fieldproof-collector/enroll-tls
run collector ca collector-cert --config "$cfg"
# Mosquitto (uid 1883 in its image) must read its key; nobody else may
docker run --rm -v "$PWD/pki/broker:/c" busybox chown 1883:1883 /c/server.key
echo "init-pki: done. Give gateways pki/broker/ca.pem (install-gateway.sh --ca-file)."
