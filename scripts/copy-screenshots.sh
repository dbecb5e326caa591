#!/usr/bin/env bash
# Copy the console's screenshots, taken by the browser tests, into docs/screenshots/.
# The tests (./scripts/test.sh -k console_browser) save them to build/screenshots/; tests never write into docs/.
set -euo pipefail
cd "$(dirname "$0")/.."
shots=build/screenshots
if ! ls "$shots"/*.png >/dev/null 2>&1; then
  echo "no screenshots yet: run ./scripts/test.sh -k console_browser first" >&2
  exit 1
fi
mkdir -p docs/screenshots
cp "$shots"/*.png docs/screenshots/
echo "docs/screenshots/ updated from $shots"
