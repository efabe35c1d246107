#!/usr/bin/env bash
# Prints the path of a Chromium the browser tests may drive headless: $CHROMIUM
# if set, else the system's chromium, else Debian's package installed (as root).
# Fails loudly when none of these works.
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }

if [[ -n "${CHROMIUM:-}" ]]; then
  echo "$CHROMIUM"; exit 0
fi
for candidate in chromium chromium-browser; do
  if command -v "$candidate" >/dev/null; then
    command -v "$candidate"; exit 0
  fi
done
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  log "no Chromium found; installing it from the OS packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2; }
  command -v chromium; exit 0
fi
log "no Chromium and cannot install one: set CHROMIUM=/path/to/chromium or install Debian's chromium."
exit 1
