#!/usr/bin/env bash
# Vendors GOV.UK Frontend's compiled stylesheet into broker/console/static/govuk/ at a pinned version, so
# installing Casebridge needs no npm. The GDS Transport font and the crown crest are for GOV.UK's own domains
# only, so the font faces are dropped (the styles fall back to Arial, as GOV.UK Frontend recommends elsewhere)
# and the crest image is not referenced.
set -euo pipefail
VERSION=5.14.0
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack -q "govuk-frontend@$VERSION" >/dev/null && tar xzf "govuk-frontend-$VERSION.tgz")
out=broker/console/static/govuk
mkdir -p "$out"
sed -e 's/@font-face{[^}]*}//g' -e 's/GDS Transport,//g' -e 's/font-family:GDS Transport;//g' \
    -e 's#url(/assets/images/govuk-crest.svg)#none#g' -e 's#/\*\# sourceMappingURL=[^*]*\*/##' \
    "$work/package/dist/govuk/govuk-frontend.min.css" > "$out/govuk-frontend.min.css"
cat > "$out/LICENCE.txt" <<LICENCE
GOV.UK Frontend $VERSION (https://github.com/alphagov/govuk-frontend), compiled stylesheet, with the
GDS Transport font faces and crest image references removed.

The MIT License (MIT)

Copyright (c) 2018 Crown Copyright (Government Digital Service)

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
to permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of
the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO
THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE.
LICENCE
echo "GOV.UK Frontend $VERSION vendored into $out"
