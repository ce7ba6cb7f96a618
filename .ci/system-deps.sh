#!/usr/bin/env bash
# Installs the Debian packages the tests need, only if something is missing. Runs as root in CI.
set -euo pipefail
need=()
[ -e /usr/lib/x86_64-linux-gnu/libportaudio.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libportaudio.so.2 ] || need+=(libportaudio2)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# The central database tests (tests/fleet/test_postgres.py) start their own server from these binaries.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# Browser tests (tests/web): headless Debian Chromium driven by Selenium through the Debian chromium-driver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# The arm64 lane (.ci/arm64.sh): qemu user-mode and the tool that extracts a Debian arm64 root.
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need[*]} (run as root or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "installing system packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
