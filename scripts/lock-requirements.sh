#!/usr/bin/env bash
# Pin every dependency, for the image (requirements/runtime.lock) and for the tests and CI (requirements/test.lock),
# from the ranges in pyproject.toml. Run it after changing a dependency, and commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pip install -q pip-tools
common=(--quiet --strip-extras --no-emit-index-url --no-emit-find-links)
.venv/bin/pip-compile "${common[@]}" --output-file requirements/runtime.lock pyproject.toml
.venv/bin/pip-compile "${common[@]}" --extra test --output-file requirements/test.lock pyproject.toml
echo "requirements/runtime.lock and requirements/test.lock written"
