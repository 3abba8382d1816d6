# Podman as it works on the project's machines, for scripts that source this file
# (deploy/container/build.sh, the container test). See the notes on containers in the README's
# "Deploying" section.
#   - crun, podman's default runtime, fails here ("cgroups in hybrid mode not supported"): every
#     call goes through runc.
#   - raising the open-files limit is refused, so podman reads a containers.conf of our own that
#     sets no default ulimits (unless CONTAINERS_CONF already names one).
# Defines `podman` (a function) and `guichet_base_image`, which makes the Debian base image from
# the package mirror apt uses, once, when no registry can be reached.

if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  echo "podman and runc are needed: run \`bash deploy/setup.sh\` (as root) first" >&2
  return 1 2>/dev/null || exit 1
fi

if [ -z "${CONTAINERS_CONF:-}" ]; then
  GUICHET_PODMAN_CONF=${TMPDIR:-/tmp}/guichet-containers.conf
  printf '[containers]\ndefault_ulimits = []\n' >"$GUICHET_PODMAN_CONF"
  export CONTAINERS_CONF=$GUICHET_PODMAN_CONF
fi

podman() { command podman --runtime runc "$@"; }

# The base image the runtime stage builds on here: Debian bookworm with CA certificates, made
# with mmdebstrap (about a minute) and kept as localhost/debian-base:bookworm for every later
# build. Prints the image's name.
guichet_base_image() {
  local image=localhost/debian-base:bookworm
  if ! podman image exists "$image"; then
    command -v mmdebstrap >/dev/null \
      || { echo "mmdebstrap is needed: run \`bash deploy/setup.sh\` (as root) first" >&2; return 1; }
    local work
    work=$(mktemp -d)
    echo "making $image from the package mirror (about a minute, once)" >&2
    mmdebstrap --quiet --variant=apt --include=ca-certificates bookworm "$work/rootfs.tar" >&2 \
      && podman import --quiet "$work/rootfs.tar" "$image" >/dev/null
    local status=$?
    rm -rf "$work"
    [ "$status" -eq 0 ] || return "$status"
  fi
  echo "$image"
}
