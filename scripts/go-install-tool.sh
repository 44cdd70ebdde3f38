# Sourced by scripts/ensure-temporal.sh and scripts/ensure-minio.sh: builds one Go tool into a folder, once.
#
#   go_install_tool <module@version> <binary name> <folder>
#
# Takes a lock (two processes never build at once), looks again under it, builds into a staging folder next to the
# target and renames it into place (nobody sees a half-written binary). Progress on stderr; exits 1 with the reason.
go_install_tool() {
  local module="$1" name="$2" dir="$3"
  local target="$dir/$name" go staging started
  go="$(command -v go 2>/dev/null || true)"
  # Go is often installed under /usr/local/go without being on a non-login shell's PATH.
  if [ -z "$go" ] && [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go; fi
  if [ -z "$go" ]; then
    echo "error: no $name at $target and no Go toolchain to build one (install Go from https://go.dev/dl/, or build it yourself: CGO_ENABLED=0 GOBIN=$dir go install $module)" >&2
    return 1
  fi
  mkdir -p "$dir"
  exec 9>"$dir/.$name-build.lock"
  if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    echo "another build of $name is running; waiting for it" >&2
    flock 9
  fi
  if [ -x "$target" ]; then return 0; fi
  staging="$(mktemp -d "$dir/.build.XXXXXX")"
  echo "building $name with $("$go" version): CGO_ENABLED=0 go install $module" >&2
  started=$(date +%s)
  if ! CGO_ENABLED=0 GOBIN="$staging" "$go" install "$module" >&2 9>&-; then
    echo "error: go install $module failed after $(($(date +%s) - started))s (output above)" >&2
    rm -rf "$staging"
    return 1
  fi
  mv -f "$staging/$name" "$target"
  rm -rf "$staging"
  echo "built $target in $(($(date +%s) - started))s" >&2
}
