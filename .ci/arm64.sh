#!/usr/bin/env bash
# The runtime tests (`-m runtime`) on linux/arm64, the Pi's architecture, under qemu user-mode emulation.
#
#   .ci/arm64.sh [pytest args...]     default: -m runtime tests
#
# A Debian bookworm arm64 root with its Python 3.11 (as Raspberry Pi OS Bookworm has) is extracted by mmdebstrap
# into $ARM64_DIR/root (no maintainer scripts run: binfmt_misc is not needed, and may not be registrable). The
# project's device dependencies (pyproject.toml [project].dependencies) and pytest are installed there as the aarch64
# wheels from the package index, by the host's pip (--target, --platform). Python runs as
# `qemu-aarch64-static -cpu ARM64_CPU -L ROOT ROOT/usr/bin/python3.11` through a wrapper script,
# ROOT/usr/local/bin/python3, which is also sys.executable, so the tests' subprocesses (`sys.executable -m
# runtime.cli.main ...`) are emulated too.
# Each step leaves a stamp and is skipped when its stamp matches; `rm -rf $ARM64_DIR` starts again.
#
# ARM64_CPU (default cortex-a72, the Raspberry Pi 4's core; cortex-a76 is the Pi 5's) is the CPU qemu emulates, so
# numpy and the TFLite kernels (XNNPACK) pick the code paths they pick on that core. One run at a time per ARM64_DIR
# (the wrapper and ROOT/proc/cpuinfo are rewritten for the CPU of each run).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ARM64_DIR=$(realpath -m "${ARM64_DIR:-$REPO/.arm64}")
ARM64_CPU=${ARM64_CPU:-cortex-a72}
HOST_PYTHON=${HOST_PYTHON:-$REPO/.venv/bin/python}
ROOT=$ARM64_DIR/root
SITE=$ROOT/usr/local/lib/python3.11/dist-packages
PACKAGES="python3.11,libportaudio2"  # libportaudio2: sounddevice's library, as on the Pi

for tool in qemu-aarch64-static mmdebstrap; do
  command -v "$tool" >/dev/null 2>&1 || { echo "arm64: $tool is missing (make sysdeps installs it)" >&2; exit 1; }
done

# 1. The root: Debian bookworm arm64, python3.11 and what it depends on.
if [ "$(cat "$ROOT/.fieldear-root" 2>/dev/null)" != "bookworm $PACKAGES" ]; then
  echo "arm64: extracting a Debian bookworm arm64 root into $ROOT"
  rm -rf "$ROOT"
  mkdir -p "$ARM64_DIR"
  mmdebstrap --quiet --variant=extract --architectures=arm64 --include="$PACKAGES" bookworm "$ROOT"
  echo "bookworm $PACKAGES" >"$ROOT/.fieldear-root"
  rm -f "$SITE/.fieldear-wheels"
fi

# 2. /proc/cpuinfo as the emulated CPU's. qemu-user (7.2) shows the guest the host's x86 /proc/cpuinfo, on which
# the cpuinfo library inside the TFLite interpreter finds no ARM core and crashes (SIGSEGV in allocate_tensors);
# qemu's -L prefix serves ROOT/proc/cpuinfo instead. One entry per host CPU (the guest sees the host's sysfs).
case "$ARM64_CPU" in  # what the kernel prints on a Raspberry Pi 4 (Cortex-A72) and 5 (Cortex-A76)
  cortex-a72) part=0xd08 variant=0x0 revision=3 features="fp asimd evtstrm crc32 cpuid" ;;
  cortex-a76) part=0xd0b variant=0x4 revision=1
    features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
  *) echo "ARM64_CPU must be cortex-a72 or cortex-a76, not $ARM64_CPU" >&2; exit 2 ;;
esac
mkdir -p "$ROOT/proc"
for ((i = 0; i < $(getconf _NPROCESSORS_CONF); i++)); do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\n' "$i" "$features"
  printf 'CPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$variant" "$part" "$revision"
done >"$ROOT/proc/cpuinfo"

# 3. The wrapper: the interpreter the tests see (sys.executable); runs the arm64 python3.11 under qemu.
mkdir -p "$ROOT/usr/local/bin"
cat >"$ROOT/usr/local/bin/python3.new" <<EOF
#!/bin/sh
# The arm64 python3.11 of this root under qemu user-mode (written by .ci/arm64.sh).
exec qemu-aarch64-static -cpu $ARM64_CPU -L "$ROOT" -0 "\$0" "$ROOT/usr/bin/python3.11" "\$@"
EOF
chmod +x "$ROOT/usr/local/bin/python3.new"
mv "$ROOT/usr/local/bin/python3.new" "$ROOT/usr/local/bin/python3"
PY=$ROOT/usr/local/bin/python3

# 4. The wheels: the device install's dependencies (as `pip install fieldear` on a Pi resolves them) and pytest.
deps=$("$HOST_PYTHON" -c '
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] + ["pytest>=7.4"]))')
mapfile -t reqs <<<"$deps"
if [ "$(cat "$SITE/.fieldear-wheels" 2>/dev/null)" != "${reqs[*]}" ]; then
  echo "arm64: installing aarch64 wheels into $SITE: ${reqs[*]}"
  rm -rf "$SITE"
  "$HOST_PYTHON" -m pip install -q --disable-pip-version-check --target "$SITE" --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_27_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
    "${reqs[@]}"
  echo "${reqs[*]}" >"$SITE/.fieldear-wheels"
fi

"$PY" -c 'import platform, sys, numpy, scipy, ai_edge_litert
print("arm64:", platform.machine(), "Python", sys.version.split()[0], "numpy", numpy.__version__,
      "scipy", scipy.__version__)'
(($#)) || set -- -m runtime tests
echo "arm64: qemu -cpu $ARM64_CPU: pytest $*"
# The tree itself is on the path (as the editable install is in .venv); bytecode is kept apart from the host's.
export PYTHONPATH=$REPO PYTHONPYCACHEPREFIX=$ARM64_DIR/pycache FIELDEAR_TEST_EMULATED=1
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
