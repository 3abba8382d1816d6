#!/usr/bin/env bash
# Builds the Guichet image with podman on a machine that reaches no image registry: the runtime
# stage of deploy/container/Containerfile (`--target prebuilt`) on a Debian bookworm base made from
# the package mirror (once), with a binary built on this host.
#
#   bash deploy/container/build.sh                      # cargo build --release, then the image
#   GUICHET_BINARY=target/debug/guichet bash deploy/container/build.sh   # that binary instead
#   IMAGE=localhost/guichet:1.0 bash deploy/container/build.sh           # another tag
#
# Prints the image's name on its last line. Where a registry is reachable, build the default
# target instead, which compiles in a Rust stage: `podman build -f deploy/container/Containerfile .`
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/podman.sh
. deploy/podman.sh

image=${IMAGE:-localhost/guichet:dev}
binary=${GUICHET_BINARY:-}
if [ -z "$binary" ]; then
  cargo build --release --locked --bin guichet >&2
  binary=target/release/guichet
fi
[ -x "$binary" ] || { echo "build.sh: $binary is not an executable" >&2; exit 1; }

base=$(guichet_base_image)

# A small context: the prebuilt target needs only the binary and the configuration.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/guichet"
cp -r gateway.yaml routes specs "$context/"

previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
podman build --quiet --target prebuilt --build-arg "BASE=$base" \
  -f deploy/container/Containerfile -t "$image" "$context" >&2
# The image this tag named before (another binary) is left without a name: remove it, unless a
# container still uses it.
current=$(podman image inspect --format '{{.Id}}' "$image")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi
echo "$image"
