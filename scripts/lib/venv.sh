# Sourced by scripts/*: creates or refreshes .venv from the pinned lock files.
# Needs only Python 3.11+ on PATH (no root, no system packages).
#   ensure_venv serve   runtime + embedded PostgreSQL + grpcurl
#   ensure_venv dev     everything the tests, linters and codegen need
# PYTHON=python3.13 picks the interpreter; a .venv made by another version is
# then rebuilt with it.
VENV="${CONCERT_VENV:-$PWD/.venv}"

_python_ok() {
  "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

# Prints a runnable path for an interpreter name. pyenv's shims answer
# `command -v python3.13` but refuse to run a version that is not selected,
# so such a name is looked up among pyenv's installed versions too.
_resolve_python() {
  local name="$1" version
  if command -v "$name" >/dev/null 2>&1 && _python_ok "$name"; then
    echo "$name"; return 0
  fi
  if command -v pyenv >/dev/null 2>&1; then
    for version in $(pyenv whence "$name" 2>/dev/null | sort -rV); do
      if _python_ok "$(pyenv root)/versions/$version/bin/$name"; then
        echo "$(pyenv root)/versions/$version/bin/$name"; return 0
      fi
    done
  fi
  return 1
}

_pick_python() {
  local candidate
  if [[ -n "${PYTHON:-}" ]]; then
    _resolve_python "$PYTHON" && return 0
    echo "error: PYTHON=$PYTHON is not a Python 3.11 or newer that runs here" >&2
    return 1
  fi
  for candidate in python3 python3.13 python3.12 python3.11; do
    _resolve_python "$candidate" && return 0
  done
  echo "error: Python 3.11 or newer is required" >&2
  return 1
}

_minor_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

_install_failed() {
  echo "error: installing $1 into $VENV failed (pip's error is above); fix the cause and rerun $(basename "$(dirname "$0")")/$(basename "$0")" >&2
  # Whatever pip left behind is not a known state: every profile reinstalls next time.
  rm -f "$VENV"/.installed-*
  return 1
}

ensure_venv() {
  local profile="$1"
  local lock="requirements/$profile.lock"
  local stamp="$VENV/.installed-$profile"
  local python want
  if [[ -x "$VENV/bin/python" && -n "${PYTHON:-}" ]]; then
    python=$(_pick_python) || return 1
    if [[ "$(_minor_version "$python")" != "$(_minor_version "$VENV/bin/python")" ]]; then
      echo "rebuilding $VENV with $python (it was made with Python $(_minor_version "$VENV/bin/python"))" >&2
      rm -rf "$VENV"
    fi
  fi
  want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  rm -f "$stamp"
  if [[ ! -x "$VENV/bin/python" ]]; then
    python=${python:-$(_pick_python)} || return 1
    echo "creating $VENV with $python" >&2
    "$python" -m venv "$VENV" || return 1
  fi
  echo "installing $lock into $VENV" >&2
  # The lock pins pip and setuptools too: the build below uses the venv's own
  # setuptools (no build isolation, so nothing unpinned is fetched).
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$lock" ||
    _install_failed "$lock" || return 1
  # The project itself, editable, so `python -m server` and `import concert.v1`
  # work from any directory without PYTHONPATH.
  # (setuptools narrates editable installs on stderr; keep it unless it fails).
  if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
       --no-build-isolation -e . >"$VENV/.install.log" 2>&1; then
    cat "$VENV/.install.log" >&2
    _install_failed "the project (pip install -e .)" || return 1
  fi
  echo "$want" > "$stamp"
}
