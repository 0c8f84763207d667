# Shared set-up steps for scripts/run and scripts/test. Each step does nothing when its part is
# already there, so the scripts are cheap to re-run.

TANSU_VERSION=0.6.0

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages given that are not installed yet.
ensure_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# A C toolchain for librdkafka (built from source by rdkafka-sys) and a Rust toolchain.
ensure_build_deps() {
  ensure_apt build-essential pkg-config zlib1g-dev ca-certificates curl
  if ! command -v cargo >/dev/null 2>&1; then
    [ -f "$HOME/.cargo/env" ] || {
      echo "==> installing the Rust toolchain (rustup)"
      curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt
    }
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
}

# tansu: a Kafka-protocol broker (Apache Kafka cannot be installed here). The tests start their own
# brokers from this binary. Building it takes about 16 minutes on 2 cores, once.
ensure_tansu() {
  local bin
  bin=$(command -v tansu || true)
  [ -z "$bin" ] && [ -x "$HOME/.cargo/bin/tansu" ] && bin="$HOME/.cargo/bin/tansu"
  if [ -z "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "==> building the tansu $TANSU_VERSION broker (about 16 minutes, once)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
    bin="$HOME/.cargo/bin/tansu"
  fi
  export TANSU_BIN="$bin"
  echo "==> broker: $("$TANSU_BIN" --version 2>/dev/null | head -n1) at $TANSU_BIN"
}

# MariaDB's server and client binaries (Debian's mariadb-server): the tests start private servers
# from them in temporary directories, so the system service is not needed and is left stopped.
ensure_mariadb() {
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    ensure_apt mariadb-server mariadb-client
    # The package starts a system server; the tests do not use it.
    as_root systemctl disable --now mariadb >/dev/null 2>&1 || as_root service mariadb stop >/dev/null 2>&1 || true
  fi
  ensure_apt mariadb-client
  local bin
  bin=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  echo "==> MariaDB: $("$bin" --version 2>/dev/null | head -n1)"
}

# Prometheus (Debian's package): the tests start a private server that scrapes the gateway, and
# check the shipped alert rules with promtool. Sets PROMETHEUS_BIN and PROMTOOL_BIN.
ensure_prometheus() {
  if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    ensure_apt prometheus
    # The package starts a system server (and a node exporter); the tests do not use them.
    as_root systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 \
      || as_root service prometheus stop >/dev/null 2>&1 || true
  fi
  export PROMETHEUS_BIN="$(command -v prometheus)" PROMTOOL_BIN="$(command -v promtool)"
  echo "==> $("$PROMETHEUS_BIN" --version 2>&1 | head -n1)"
}

# Debian's headless Chromium and its WebDriver, for the console's browser tests, and a CJK font so
# that their screenshots show Chinese. Sets CHROMIUM_BIN and CHROMEDRIVER_BIN.
ensure_chromium() {
  ensure_apt chromium chromium-driver fonts-wqy-microhei
  export CHROMIUM_BIN="$(command -v chromium)" CHROMEDRIVER_BIN="$(command -v chromedriver)"
  echo "==> $("$CHROMEDRIVER_BIN" --version 2>&1 | head -n1)"
}

# A PyPI tool in a virtualenv of its own, under the user's data directory; prints its path.
#   pip_tool NAME VERSION
pip_tool() {
  local name="$1" version="$2"
  local venv="${XDG_DATA_HOME:-$HOME/.local/share}/leadgate/$name-$version"
  if [ ! -x "$venv/bin/$name" ]; then
    ensure_apt python3-venv >&2
    echo "==> installing $name $version" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "$name==$version" >&2
  fi
  echo "$venv/bin/$name"
}

# kubernetes-validate (PyPI), which checks deploy/k8s/ against the Kubernetes API schemas (its
# python, with PyYAML, reads the manifests for the test too). Sets KUBERNETES_VALIDATE_BIN.
KUBERNETES_VALIDATE_VERSION=1.37.0
ensure_kubernetes_validate() {
  KUBERNETES_VALIDATE_BIN="$(pip_tool kubernetes-validate "$KUBERNETES_VALIDATE_VERSION")"
  export KUBERNETES_VALIDATE_BIN
  echo "==> kubernetes-validate $("$KUBERNETES_VALIDATE_BIN" --version)"
}

# schemathesis (PyPI), the property-based API tester the tests run against /openapi.json. Sets
# SCHEMATHESIS_BIN.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  SCHEMATHESIS_BIN="$(pip_tool schemathesis "$SCHEMATHESIS_VERSION")"
  export SCHEMATHESIS_BIN
  echo "==> $("$SCHEMATHESIS_BIN" --version)"
}
