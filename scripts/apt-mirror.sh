#!/usr/bin/env bash
# Prints the first Debian mirror this machine's apt sources name (one-line
# or deb822 format; not the security archive); $MIRROR overrides it.
set -euo pipefail
if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; exit 0; fi
{ grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | sed -E 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{print $1}' || true
  grep -hiE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -E 's/^[^:]*:[[:space:]]*//' | tr ' ' '\n' || true
} | grep -E '^https?://' | grep -v security | grep -i debian | head -1 || true
