#!/usr/bin/env bash
# Vendors Swagger UI's distribution files into broker/api/static/swagger-ui/ at a pinned version, so the API docs
# at /docs load with no network beyond the broker itself (a council's offline network has no CDN). Source map
# references are dropped: the maps are not shipped.
set -euo pipefail
VERSION=5.35.0
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack -q "swagger-ui-dist@$VERSION" >/dev/null && tar xzf "swagger-ui-dist-$VERSION.tgz")
out=broker/api/static/swagger-ui
mkdir -p "$out"
for file in swagger-ui-bundle.js swagger-ui.css; do
  sed -e 's#^//\# sourceMappingURL=.*$##' -e 's#/\*\# sourceMappingURL=[^*]*\*/##' "$work/package/$file" > "$out/$file"
done
cp "$work/package/favicon-32x32.png" "$out/"
{ echo "Swagger UI $VERSION (https://github.com/swagger-api/swagger-ui), from the swagger-ui-dist package:"
  echo "swagger-ui-bundle.js, swagger-ui.css and favicon-32x32.png, source map references removed."
  echo; cat "$work/package/LICENSE"; echo; cat "$work/package/NOTICE"
  echo; echo "Licences of the libraries bundled in swagger-ui-bundle.js:"; echo
  cat "$work/package/swagger-ui-bundle.js.LICENSE.txt"; } > "$out/LICENSE.txt"
echo "Swagger UI $VERSION vendored into $out"
