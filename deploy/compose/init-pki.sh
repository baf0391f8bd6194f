#!/usr/bin/env bash
# Once per installation, from deploy/compose: make the collector's CA, the broker's certificate
# (for BROKER_HOST in .env), the enrollment endpoint's certificate and the collector's own
# MQTT client certificate. Keys are made inside the volumes of the services that use them (the
# one-off "pki" service of compose.yaml writes them; volumes-init then hands each volume to its
# service's user); only the broker's key and certificates land in ./pki/broker (read by the
# mosquitto container).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[ -r .env ] || { echo "init-pki: copy .env.example to .env and fill it in first" >&2; exit 1; }
BROKER_HOST=$(sed -n 's/^BROKER_HOST=//p' .env)
[ -n "$BROKER_HOST" ] || { echo "init-pki: set BROKER_HOST in .env" >&2; exit 1; }
chmod 600 .env
install -d -m 0755 pki/broker

cfg=/etc/fieldproof/collector.toml
pki() { docker compose --profile tools run --rm --no-deps pki fieldproof "$@"; }

docker compose --profile tools build pki
pki collector ca init --config "$cfg"
pki collector ca server-cert --config "$cfg" --host "$BROKER_HOST" --out-dir /etc/fieldproof/mosquitto/certs
pki collector ca server-cert --config "$cfg" --host "$BROKER_HOST" \
  --out-dir /var/lib/fieldproof-enroll/tls
pki collector ca collector-cert --config "$cfg"
# each volume to its service's user (collector 10001, enroll 10002, anchor 10003), keys 0600;
# the broker's key to Mosquitto (uid 1883 in its image)
docker compose run --rm --no-deps volumes-init
echo "init-pki: done. Give gateways pki/broker/ca.pem (install-gateway.sh --ca-file), or tell"
echo "technicians the CA fingerprint printed above (gateway enroll-install --ca-fingerprint)."
