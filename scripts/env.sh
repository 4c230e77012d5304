# Sourced by book.sh and test.sh: creates .venv with the pinned environment of requirements.txt
# (once, and again whenever requirements.txt or pyproject.toml change) and puts it on PATH.
caller_options=$(set +o)  # restored at the end: sourcing this file must not change the caller's shell
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
want=$(cat requirements.txt pyproject.toml | .venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ "$(cat .venv/.installed 2>/dev/null)" != "$want" ]; then
  echo "Installing the pinned environment into .venv (a few minutes, once)..."
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > .venv/.installed
fi
export PATH="$ROOT/.venv/bin:$PATH"
eval "$caller_options"
