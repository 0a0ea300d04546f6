# Sourced by scripts/*: creates or refreshes .venv from the pinned lock files.
# Needs only Python 3.11+ on PATH (no root, no system packages).
#   ensure_venv serve   runtime + embedded PostgreSQL
#   ensure_venv dev     everything the tests, linters and codegen need
VENV="${CONCERT_VENV:-$PWD/.venv}"

_pick_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 or newer is required" >&2
  return 1
}

ensure_venv() {
  local profile="$1"
  local lock="requirements/$profile.lock"
  local stamp="$VENV/.installed-$profile"
  local want
  want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    local python
    python=$(_pick_python)
    echo "creating $VENV with $python" >&2
    "$python" -m venv "$VENV"
  fi
  echo "installing $lock into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$lock"
  # The project itself, editable, so `python -m server` and `import concert.v1`
  # work from any directory without PYTHONPATH.
  # (setuptools narrates editable installs on stderr; keep it unless it fails).
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
       --no-build-isolation -e . >"$VENV/.install.log" 2>&1; then
    cat "$VENV/.install.log" >&2
    return 1
  fi
  echo "$want" > "$stamp"
}
