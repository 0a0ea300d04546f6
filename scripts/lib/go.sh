# Sourced by the Go client's setup (tests/e2e/toolchains.py): the Go toolchain,
# grpc-go, protobuf-go and the protoc-gen-go / protoc-gen-go-grpc plugins, all
# from Debian's packages (no Go module proxy is reachable from CI). Idempotent:
# nothing is installed when the commands and sources are already there.
#   ensure_go   install what is missing; exit 1 with the reason when it cannot
#   exit status 3: this machine cannot install them (no apt-get, or not root)
# Builds run in GOPATH mode against Debian's sources (GOPATH=…:$GO_DEBIAN_GOPATH).
#
# golang-github-golang-protobuf-1-5-dev is named on purpose: grpc-go accepts
# either 1.3 or 1.5 of github.com/golang/protobuf, and apt picks 1.3, whose
# codec predates the APIv2 messages protoc-gen-go writes; 1.5 wraps APIv2.
GO_DEBIAN_GOPATH=/usr/share/gocode
GO_DEBIAN_PACKAGES=(golang-go golang-google-grpc-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev golang-google-genproto-dev
  protoc-gen-go protoc-gen-go-grpc)

_go_present() {
  command -v go >/dev/null 2>&1 &&
    command -v protoc-gen-go >/dev/null 2>&1 &&
    command -v protoc-gen-go-grpc >/dev/null 2>&1 &&
    [[ -d "$GO_DEBIAN_GOPATH/src/google.golang.org/grpc" &&
       -d "$GO_DEBIAN_GOPATH/src/google.golang.org/protobuf" &&
       -d "$GO_DEBIAN_GOPATH/src/google.golang.org/genproto/googleapis/rpc/errdetails" ]] &&
    dpkg-query -W -f='${Status}' golang-github-golang-protobuf-1-5-dev 2>/dev/null |
      grep -q 'install ok installed'
}

ensure_go() {
  _go_present && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "Go client: no apt-get on this machine to install ${GO_DEBIAN_PACKAGES[*]}" >&2
    return 3
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "Go client: installing ${GO_DEBIAN_PACKAGES[*]} needs root (apt-get)" >&2
    return 3
  fi
  echo "installing ${GO_DEBIAN_PACKAGES[*]} with apt-get" >&2
  # The package lists may be missing or stale on a fresh machine: update once.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${GO_DEBIAN_PACKAGES[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${GO_DEBIAN_PACKAGES[@]}" >&2 || {
      echo "Go client: apt-get install ${GO_DEBIAN_PACKAGES[*]} failed" >&2
      return 1
    }
  fi
  _go_present || {
    echo "Go client: the packages installed but go, the plugins or the sources are still missing" >&2
    return 1
  }
}
