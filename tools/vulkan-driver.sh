#!/usr/bin/env bash
# Make sure a Vulkan driver is present: when the machine has none (no ICD
# manifest), install Mesa's software one, lavapipe, from the distribution's own
# packages. Sourced by tools/demo.sh and .ci/run; safe to run twice.
# On Debian bookworm, bookworm-backports' Mesa 25 is 3.5-4.5x faster on compute
# than bookworm's Mesa 22: its sources line reuses the URI of the machine's own
# bookworm entry (one-line or deb822 format), so no package host is named here.
set -euo pipefail

have_icd() {
  ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json /usr/local/share/vulkan/icd.d/*.json >/dev/null 2>&1
}

# The URI of the first apt entry whose suites include bookworm.
bookworm_uri() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; exit } }' "$f"
  done | head -n1 | grep . && return 0
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas are separated by blank lines
    awk 'BEGIN { RS = ""; FS = "\n" }
         { uri = ""; ok = 0
           for (i = 1; i <= NF; i++) {
             if ($i ~ /^URIs:/) { split($i, a, " "); uri = a[2] }
             if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) ok = 1
           }
           if (ok && uri != "") { print uri; exit } }' "$f"
  done | head -n1 | grep .
}

if ! have_icd; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "tweedie: no Vulkan driver found and no apt-get to install one; install your GPU's Vulkan driver (or Mesa's lavapipe)" >&2
    exit 1
  fi
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  echo "tweedie: no Vulkan driver found; installing Mesa's software driver (lavapipe)" >&2
  . /etc/os-release || true
  if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    if uri="$(bookworm_uri)"; then
      echo "deb $uri bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/backports.list >/dev/null
    fi
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1 \
    || $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

# A private runtime dir silences Mesa's "XDG_RUNTIME_DIR is invalid" line.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
  export XDG_RUNTIME_DIR="$(mktemp -d)"
  chmod 700 "$XDG_RUNTIME_DIR"
fi
