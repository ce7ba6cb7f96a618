#!/usr/bin/env bash
# Provision a fresh Raspberry Pi OS (64-bit; Bookworm = Python 3.11, Trixie = Python 3.13) as a fieldear recorder.
# Run on the Pi as root:  sudo bash provision.sh [--source DIR|--wheel FILE] [--config FILE] [--model DIR] [--no-service]
#
#   1. apt: libportaudio2 (microphone), python3-venv, alsa-utils (arecord), rsync (for `fieldear deploy`)
#   2. a venv in /opt/fieldear/venv with fieldear (from a source checkout, a wheel, or PyPI)
#   3. audio checks: arecord -l, `fieldear devices --test` (3 s recording, level and clipping)
#   4. `fieldear service install` (user `fieldear` in group audio, /var/lib/fieldear, the unit, enable --now)
# Every step can be re-run; nothing is removed. See docs/provisioning.md.
set -euo pipefail

PREFIX=/opt/fieldear
VENV=$PREFIX/venv
SOURCE=""
WHEEL=""
CONFIG=""
MODEL=""
SERVICE=1

usage() { sed -n '2,10p' "$0"; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --source) SOURCE=$2; shift 2 ;;
    --wheel) WHEEL=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --no-service) SERVICE=0; shift ;;
    -h|--help) usage ;;
    *) echo "provision.sh: unknown option $1" >&2; usage ;;
  esac
done

say() { echo "==> $*"; }
die() { echo "provision.sh: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: sudo bash $0 $*"
command -v apt-get >/dev/null || die "apt-get not found: this script is for Raspberry Pi OS / Debian"
[ -d /run/systemd/system ] || [ "$SERVICE" = 0 ] || die "systemd is not running (use --no-service in a chroot/image build)"

. /etc/os-release
say "system: ${PRETTY_NAME:-unknown} on $(uname -m)"
case "${VERSION_CODENAME:-}" in
  bookworm|trixie) ;;
  *) echo "warning: tested on Bookworm and Trixie, this is '${VERSION_CODENAME:-?}'" >&2 ;;
esac
[ "$(uname -m)" = aarch64 ] || echo "warning: 64-bit Raspberry Pi OS (aarch64) is required for the ai-edge-litert wheels" >&2

say "apt packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends libportaudio2 python3-venv python3-pip alsa-utils rsync >/dev/null

PY=$(command -v python3)
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python $PYVER is too old (need 3.11+)"
say "python $PYVER: venv in $VENV"
mkdir -p "$PREFIX"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
if [ -n "$WHEEL" ]; then
  "$VENV/bin/pip" install -q "$WHEEL"
elif [ -n "$SOURCE" ]; then
  "$VENV/bin/pip" install -q "$SOURCE"
else
  "$VENV/bin/pip" install -q fieldear
fi
"$VENV/bin/fieldear" --version

say "audio: ALSA capture devices (arecord -l)"
if ! arecord -l 2>/dev/null | grep -q '^card'; then
  echo "warning: no capture device: plug in the USB microphone and run: arecord -l" >&2
else
  arecord -l | grep '^card'
  say "audio: 3 s test recording (fieldear devices --test)"
  # as the service user would: the audio group must be able to open the device
  "$VENV/bin/fieldear" devices --test || echo "warning: the test recording failed; see docs/provisioning.md (audio checks)" >&2
fi

if [ "$SERVICE" = 1 ]; then
  say "service: install and start"
  args=()
  [ -n "$CONFIG" ] && args+=(--config "$CONFIG")
  if [ -n "$MODEL" ]; then
    args+=(--model "$MODEL")
  elif [ ! -e /var/lib/fieldear/models/current ]; then
    # first install: the bundle shipped with fieldear becomes models/current
    args+=(--model "$("$VENV/bin/python" -c 'from runtime.paths import DEFAULT_BUNDLE; print(DEFAULT_BUNDLE)')")
  fi
  "$VENV/bin/fieldear" service install "${args[@]}"
  # the log is readable by group fieldear only: let the admin user run `fieldear status` without sudo
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && getent group fieldear >/dev/null; then
    usermod -aG fieldear "$SUDO_USER" && echo "added $SUDO_USER to group fieldear (log in again for \`fieldear status\`)"
  fi
  sleep 5
  systemctl --no-pager status fieldear | head -n 12 || true
  "$VENV/bin/fieldear" status --config /etc/fieldear/fieldear.toml || true
fi
say "done. Logs: journalctl -u fieldear -f   Status: $VENV/bin/fieldear status --config /etc/fieldear/fieldear.toml"
