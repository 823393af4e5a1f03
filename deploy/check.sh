#!/usr/bin/env bash
# Validates deploy/docker, deploy/compose and deploy/kubernetes offline: no Docker engine, no
# cluster, no network. Exits non-zero at the first failure; prints each check as it runs.
#
#   deploy/check.sh
#
# Tools, each overridable from the environment (CI can point them into a virtualenv):
#   DOCKER_COMPOSE       docker-compose                 (Debian: apt-get install docker-compose)
#   CHECK_JSONSCHEMA     check-jsonschema               (PyPI: check-jsonschema)
#   KUBECTL              kubectl                        (kubectl kustomize, built in)
#   KUBERNETES_VALIDATE  kubernetes-validate            (PyPI: kubernetes-validate)
#   KUBERNETES_VERSIONS  "1.30.0 default"               schema versions; "default" = the tool's newest
#   PROMTOOL             promtool   optional: checks the Compose Prometheus configuration
#   HADOLINT             hadolint   optional: lints the Dockerfile (skipped when absent)
#
# For example:
#   python3 -m venv /tmp/deploy-venv && /tmp/deploy-venv/bin/pip install check-jsonschema kubernetes-validate
#   CHECK_JSONSCHEMA=/tmp/deploy-venv/bin/check-jsonschema \
#   KUBERNETES_VALIDATE=/tmp/deploy-venv/bin/kubernetes-validate deploy/check.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DOCKER_COMPOSE=${DOCKER_COMPOSE:-docker-compose}
CHECK_JSONSCHEMA=${CHECK_JSONSCHEMA:-check-jsonschema}
KUBECTL=${KUBECTL:-kubectl}
KUBERNETES_VALIDATE=${KUBERNETES_VALIDATE:-kubernetes-validate}
KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-1.30.0 default}
PROMTOOL=${PROMTOOL:-promtool}
HADOLINT=${HADOLINT:-hadolint}

COMPOSE_FILE=deploy/compose/compose.yaml
OVERLAYS=(local production)

checked=()
skipped=()
step() { printf '\n== %s\n' "$*"; }
ok() { checked+=("$1"); echo "ok: $1"; }
skip() { skipped+=("$1"); echo "skipped: $1"; }

need() {
  local tool=$1
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool not found (set the variable named in deploy/check.sh's header)" >&2
    exit 1
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

need "$DOCKER_COMPOSE"
need "$CHECK_JSONSCHEMA"
# kubectl renders the overlays; without it the base's resources are validated one file at a time.
HAVE_KUBECTL=1
command -v "$KUBECTL" >/dev/null 2>&1 || HAVE_KUBECTL=
need "$KUBERNETES_VALIDATE"

step "tools"
echo "docker-compose:      $("$DOCKER_COMPOSE" version --short 2>/dev/null || "$DOCKER_COMPOSE" version | head -1)"
echo "check-jsonschema:    $("$CHECK_JSONSCHEMA" --version)"
[ -n "$HAVE_KUBECTL" ] && echo "kubectl:             $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
echo "kubernetes-validate: $("$KUBERNETES_VALIDATE" --version)"

# --- Docker ---------------------------------------------------------------------------------

step "deploy/docker"
for f in deploy/docker/Dockerfile deploy/docker/healthcheck.sh .dockerignore; do
  [ -f "$f" ] || { echo "error: $f is missing" >&2; exit 1; }
done
bash -n deploy/docker/healthcheck.sh
[ -x deploy/docker/healthcheck.sh ] || { echo "error: deploy/docker/healthcheck.sh is not executable" >&2; exit 1; }
ok "deploy/docker/healthcheck.sh: bash syntax"
# Every COPY source from the build context must exist and must not be excluded by .dockerignore
# (a rough check: the patterns this repository uses, not Docker's full matcher).
while read -r src; do
  [ -e "$src" ] || { echo "error: Dockerfile copies $src, which does not exist" >&2; exit 1; }
done < <(sed -nE 's/^COPY +([^-][^ ]*) +.*/\1/p' deploy/docker/Dockerfile | grep -v '^\.$' || true)
grep -qx '!deploy/docker' .dockerignore || { echo "error: .dockerignore must keep deploy/docker" >&2; exit 1; }
ok "deploy/docker/Dockerfile: COPY sources exist and are in the build context"
if command -v "$HADOLINT" >/dev/null 2>&1; then
  "$HADOLINT" deploy/docker/Dockerfile
  ok "hadolint deploy/docker/Dockerfile"
else
  skip "hadolint not found: deploy/docker/Dockerfile not linted"
fi

# --- Compose --------------------------------------------------------------------------------

step "deploy/compose"
"$DOCKER_COMPOSE" -f "$COMPOSE_FILE" config -q
ok "docker-compose -f $COMPOSE_FILE config -q"
"$DOCKER_COMPOSE" -f "$COMPOSE_FILE" --profile observability config -q
ok "docker-compose -f $COMPOSE_FILE --profile observability config -q"
"$DOCKER_COMPOSE" -f "$COMPOSE_FILE" --profile observability config --services > "$tmp/services"
echo "services: $(tr '\n' ' ' < "$tmp/services")"
"$CHECK_JSONSCHEMA" --builtin-schema vendor.compose-spec "$COMPOSE_FILE"
ok "check-jsonschema --builtin-schema vendor.compose-spec $COMPOSE_FILE"
# Bind mounts of this repository's files: `- ./x:/y` and `- ../x:/y`, relative to the file.
missing=0
while read -r src; do
  if [ ! -e "deploy/compose/$src" ]; then
    echo "error: $COMPOSE_FILE mounts $src, which does not exist" >&2
    missing=1
  fi
done < <(sed -nE 's/^ *- +(\.\.?\/[^:]+):.*/\1/p' "$COMPOSE_FILE")
[ "$missing" = 0 ] || exit 1
ok "$COMPOSE_FILE: every mounted file of the repository exists"
bash -n deploy/compose/elasticsearch/setup.sh
ok "deploy/compose/elasticsearch/setup.sh: bash syntax"
if command -v "$PROMTOOL" >/dev/null 2>&1; then
  # As mounted in the container: the rules next to the configuration.
  mkdir -p "$tmp/prometheus/rules"
  cp deploy/compose/prometheus/prometheus.yml "$tmp/prometheus/"
  cp deploy/prometheus/rules/*.yml "$tmp/prometheus/rules/"
  "$PROMTOOL" check config "$tmp/prometheus/prometheus.yml" >/dev/null
  ok "promtool check config deploy/compose/prometheus/prometheus.yml (with deploy/prometheus/rules)"
else
  skip "promtool not found: deploy/compose/prometheus/prometheus.yml not checked"
fi

# --- Kubernetes -----------------------------------------------------------------------------

step "deploy/kubernetes"
validate() {
  local file=$1 version
  for version in $KUBERNETES_VERSIONS; do
    if [ "$version" = default ]; then
      "$KUBERNETES_VALIDATE" --strict --quiet "$file"
      ok "kubernetes-validate --strict ${file#"$tmp/"} (the tool's default version)"
    else
      "$KUBERNETES_VALIDATE" --strict --quiet --kubernetes-version "$version" "$file"
      ok "kubernetes-validate --strict --kubernetes-version $version ${file#"$tmp/"}"
    fi
  done
}
if [ -n "$HAVE_KUBECTL" ]; then
  for overlay in "${OVERLAYS[@]}"; do
    rendered="$tmp/$overlay.yaml"
    "$KUBECTL" kustomize "deploy/kubernetes/overlays/$overlay" > "$rendered"
    ok "kubectl kustomize deploy/kubernetes/overlays/$overlay ($(grep -c '^kind:' "$rendered") resources)"
    validate "$rendered"
  done
else
  skip "kubectl not found: overlays not rendered; the base's resource files validated one by one"
  for file in deploy/kubernetes/base/*.yaml; do
    case "$file" in */kustomization.yaml) continue ;; esac
    cp "$file" "$tmp/$(basename "$file")"
    validate "$tmp/$(basename "$file")"
  done
fi
cp deploy/kubernetes/base/secrets.example.yaml "$tmp/secrets.example.yaml"
validate "$tmp/secrets.example.yaml"

step "summary"
printf 'passed (%d):\n' "${#checked[@]}"
printf '  %s\n' "${checked[@]}"
if [ "${#skipped[@]}" -gt 0 ]; then
  printf 'skipped (%d):\n' "${#skipped[@]}"
  printf '  %s\n' "${skipped[@]}"
fi
echo "deploy/: all checks passed"
