"""Validates the custom resources of rendered manifests, which kubernetes-validate skips.

Usage: python3 crds.py K8S_VERSION FILE... Each document of a kind Kubernetes itself defines is
left to kubernetes-validate; a ServiceMonitor is checked against the Prometheus Operator's models
(cloudcoil-models-prometheus-operator, generated from its CRDs): types and patterns by pydantic,
unknown fields by comparing the document with what the model kept (the models ignore extras).
Any other kind is an error, so that no manifest goes unchecked.
"""

import sys

import kubernetes_validate
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

CUSTOM = {("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor}


def unknown_fields(given, kept, path=""):
    """Paths present in `given` that the model did not keep."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            where = f"{path}.{key}" if path else key
            if key not in kept:
                yield where
            else:
                yield from unknown_fields(value, kept[key], where)
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (value, model_value) in enumerate(zip(given, kept)):
            yield from unknown_fields(value, model_value, f"{path}[{index}]")


def check(version, filename):
    """Checks one file's documents; true when all pass."""
    failed = False
    with open(filename, encoding="utf-8") as file:
        documents = [d for d in yaml.safe_load_all(file) if d]
    for document in documents:
        kind, api = document.get("kind"), document.get("apiVersion")
        name = f"{kind}/{document.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(document, version, strict=True)
            continue  # a built-in kind: kubernetes-validate reports on it
        except kubernetes_validate.SchemaNotFoundError:
            pass
        except kubernetes_validate.ValidationError:
            continue
        model = CUSTOM.get((api, kind))
        if model is None:
            print(f"ERROR {filename}: {name} ({api}): no schema to check it against", file=sys.stderr)
            failed = True
            continue
        try:
            kept = model.model_validate(document).model_dump(
                by_alias=True, exclude_unset=True, mode="json"
            )
        except Exception as error:  # pydantic's ValidationError, with every field at fault
            print(f"ERROR {filename}: {name}: {error}", file=sys.stderr)
            failed = True
            continue
        extra = list(unknown_fields(document, kept))
        if extra:
            print(f"ERROR {filename}: {name}: unknown fields: {', '.join(extra)}", file=sys.stderr)
            failed = True
    return not failed


if __name__ == "__main__":
    results = [check(sys.argv[1], filename) for filename in sys.argv[2:]]
    sys.exit(0 if all(results) else 1)
