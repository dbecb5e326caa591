#!/usr/bin/env bash
# Copy the fault-injection suite's last complete page of figures into docs/reliability.md.
# The suite (./scripts/test.sh -k fault_injection) writes it to build/reliability/reliability.md once every
# scenario has run; tests never write into docs/ themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
page=build/reliability/reliability.md
if [ ! -f "$page" ]; then
  echo "no figures yet: run ./scripts/test.sh -k fault_injection first (every scenario must run)" >&2
  exit 1
fi
cp "$page" docs/reliability.md
echo "docs/reliability.md updated from $page"
