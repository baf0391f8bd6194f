#!/usr/bin/env bash
# Install a fieldproof gateway on Raspberry Pi OS (Bookworm or later), as root. Idempotent:
# running it again upgrades the package and keeps the key, the config and the spool.
#
#   sudo ./install-gateway.sh --farm FARM --field FIELD --broker HOST[:PORT] \
#        [--ca-file ca.pem] [--enroll-url https://collector.example:8443] [--source PATH]
#
# What it does: installs Python's venv support, creates the 'fieldproof' system user (in the
# dialout/gpio/i2c groups that exist), installs fieldproof into /opt/fieldproof/venv (wheels
# only; a compiler only where PyPI has no wheel for this CPU), writes
# /etc/fieldproof/gateway.toml (only when missing), makes the gateway key ON THIS DEVICE
# ('fieldproof gateway init', mode 0600, owned by fieldproof), installs and enables the
# systemd unit, limits the journal's size on the SD card and empties apt's caches. It does not
# start the service: enroll first, then start, then run the doctor (it prints the commands).
set -euo pipefail

PREFIX=/opt/fieldproof
CONF_DIR=/etc/fieldproof
CONF=$CONF_DIR/gateway.toml
DATA=/var/lib/fieldproof
SVC_USER=fieldproof
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

farm="" field="" broker="" ca_file="" enroll_url=""
source_path="$HERE/../.."

die() { echo "install-gateway: $*" >&2; exit 1; }
usage() { sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --farm) farm=${2:?}; shift 2 ;;
    --field) field=${2:?}; shift 2 ;;
    --broker) broker=${2:?}; shift 2 ;;
    --ca-file) ca_file=${2:?}; shift 2 ;;
    --enroll-url) enroll_url=${2:?}; shift 2 ;;
    --source) source_path=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "install-gateway: unknown option $1" >&2; usage 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root: sudo $0 $*"
if [ -z "$farm" ] || [ -z "$field" ] || [ -z "$broker" ]; then
  die "--farm, --field and --broker are required"
fi
case "$farm$field" in *[!A-Za-z0-9._-]*) die "farm and field may use letters, digits, '.', '_', '-'" ;; esac
broker_host=${broker%%:*}
broker_port=8883
[ "$broker_host" != "$broker" ] && broker_port=${broker##*:}
case "$broker_port" in ''|*[!0-9]*) die "--broker port must be a number" ;; esac
[ -z "$ca_file" ] || [ -r "$ca_file" ] || die "cannot read --ca-file $ca_file"
[ -e "$source_path" ] || die "no fieldproof source at $source_path (give --source PATH to a checkout or wheel)"
command -v systemctl >/dev/null || die "this script needs systemd (Raspberry Pi OS has it)"

echo "==> packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# no compiler here: it comes only if PyPI has no wheel of a dependency for this CPU (below)
apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates \
  systemd-timesyncd >/dev/null
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "fieldproof needs Python 3.11 or newer; this system has $(python3 -V 2>&1)"

echo "==> user $SVC_USER"
if ! id "$SVC_USER" >/dev/null 2>&1; then
  useradd --system --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin "$SVC_USER"
fi
for group in dialout gpio i2c spi; do
  if getent group "$group" >/dev/null; then usermod -aG "$group" "$SVC_USER"; fi
done
install -d -o "$SVC_USER" -g "$SVC_USER" -m 0700 "$DATA" "$DATA/tls"
install -d -o root -g "$SVC_USER" -m 0750 "$CONF_DIR"

echo "==> fieldproof into $PREFIX/venv"
install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade --prefer-binary pip
# the gateway role only: no web3, InfluxDB client or libsodium on a Pi (pyproject extras).
# Wheels only first: 64-bit Pi OS (aarch64) has one for every dependency. Where PyPI has none
# for this CPU (32-bit Pi OS, armv7l: cffi and sysv_ipc), install a compiler and build those.
pip_log=$(mktemp)
if ! "$PREFIX/venv/bin/pip" install --quiet --upgrade --prefer-binary --only-binary=:all: \
    "${source_path}[gateway]" 2>"$pip_log"; then
  echo "==> PyPI has no $(uname -m) wheel of (at least):" \
    "$(sed -n 's/.*No matching distribution found for \([^ ;]*\).*/\1/p' "$pip_log" | sort -u)"
  echo "==> installing a compiler to build them (slow on a Pi: minutes)"
  apt-get install -y -qq --no-install-recommends build-essential python3-dev libffi-dev \
    >/dev/null
  "$PREFIX/venv/bin/pip" install --quiet --upgrade --prefer-binary "${source_path}[gateway]"
fi
rm -f "$pip_log"
ln -sf "$PREFIX/venv/bin/fieldproof" /usr/local/bin/fieldproof

if [ ! -e "$CONF" ]; then
  echo "==> $CONF"
  umask 027
  cat >"$CONF" <<TOML
# fieldproof gateway ($(date -u +%Y-%m-%d)). Find sensors: fieldproof gateway sensors scan
key_file = "$DATA/gateway.key"
data_dir = "$DATA"
farm = "$farm"
field = "$field"
interval_s = 60
enrollment_url = "$enroll_url"

[mqtt]
host = "$broker_host"
port = $broker_port

[mqtt.tls]
ca_file = "$DATA/tls/ca.pem"
cert_file = "$DATA/tls/client.pem"
key_file = "$DATA/tls/client.key"

# One table per sensor; 'fieldproof gateway sensors scan' shows what answers. Examples:
# [[sensors]]
# kind = "ds18b20"
# name = "soil_temp_20cm"
#
# [[sensors]]
# kind = "modbus_soil"
# name = "soil1"
# port = "/dev/ttyUSB0"
TOML
  chown root:"$SVC_USER" "$CONF"
  chmod 0640 "$CONF"
else
  echo "==> keeping existing $CONF"
fi

if [ -n "$ca_file" ]; then
  echo "==> collector CA -> $DATA/tls/ca.pem"
  install -o "$SVC_USER" -g "$SVC_USER" -m 0644 "$ca_file" "$DATA/tls/ca.pem"
fi

if [ ! -e "$DATA/gateway.key" ]; then
  echo "==> gateway key (made here, never leaves this device)"
  runuser -u "$SVC_USER" -- "$PREFIX/venv/bin/fieldproof" gateway init --config "$CONF"
else
  echo "==> keeping existing gateway key"
fi

echo "==> systemd, journald, logrotate"
install -m 0644 "$HERE/../systemd/fieldproof-gateway.service" /etc/systemd/system/
install -d -m 0755 /etc/systemd/journald.conf.d
install -m 0644 "$HERE/journald-fieldproof.conf" /etc/systemd/journald.conf.d/fieldproof.conf
install -m 0644 "$HERE/../logrotate/fieldproof" /etc/logrotate.d/fieldproof
systemctl daemon-reload
systemctl restart systemd-journald
systemctl enable --now systemd-timesyncd >/dev/null 2>&1 || true
systemctl enable fieldproof-gateway.service

echo "==> freeing the SD card of apt's caches and package lists"
apt-get clean
rm -rf /var/lib/apt/lists/*

cat <<NEXT

Installed. Next, as the technician (commands run as the service user):
  1. wire the sensors, add [[sensors]] to $CONF, check them:
       sudo -u $SVC_USER fieldproof gateway sensors test --config $CONF
  2. enroll (token from the operator, or send the request file):
       sudo -u $SVC_USER fieldproof gateway enroll --config $CONF --installer "YOUR NAME" \\
            --location "LAT,LON" --token TOKEN
     without a token, the answer is installed only with the CA's fingerprint from the
     operator (enroll-install --ca-fingerprint SHA256) unless --ca-file was given here
  3. start and check:
       sudo systemctl start fieldproof-gateway
       sudo -u $SVC_USER fieldproof gateway doctor --config $CONF --no-sensors
NEXT
