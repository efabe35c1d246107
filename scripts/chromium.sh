#!/usr/bin/env bash
# Prints the path of what the browser tests drive: `chromium` (the default
# argument) or `chromedriver`. $CHROMIUM or $CHROMEDRIVER win when set; else
# the system's; else Debian's packages chromium and chromium-driver are
# installed (as root), both at once. Fails loudly when none of these works.
set -euo pipefail

log() { echo "chromium.sh: $*" >&2; }

want=${1:-chromium}
case "$want" in
  chromium) override=${CHROMIUM:-}; candidates=(chromium chromium-browser) ;;
  chromedriver) override=${CHROMEDRIVER:-}; candidates=(chromedriver) ;;
  *) log "usage: chromium.sh [chromium|chromedriver]"; exit 2 ;;
esac

if [[ -n "$override" ]]; then
  echo "$override"; exit 0
fi
find_it() {
  for candidate in "${candidates[@]}"; do
    if command -v "$candidate" >/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}
find_it && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  log "no $want found; installing chromium and chromium-driver from the OS packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2; }
  find_it && exit 0
fi
log "no $want and cannot install it: set CHROMIUM / CHROMEDRIVER, or install Debian's chromium and chromium-driver."
exit 1
