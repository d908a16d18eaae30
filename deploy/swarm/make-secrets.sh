#!/usr/bin/env bash
# Makes the TLS material and the shared token that the Swarm stack (and the Kubernetes
# manifests) turn on by default, with openssl only:
#
#   ca.pem / ca.key      a private CA (EC P-256)
#   server.pem / .key    one certificate for every fixbench service, signed by that CA, with
#                        SANs for every service name (store, evaluator, each approach), their
#                        Swarm `tasks.<name>` and Kubernetes `<name>.<ns>.svc[.cluster.local]`
#                        forms, localhost, 127.0.0.1 (the containers' health checks) and
#                        fixbench.internal (FIXBENCH_TLS_SERVER_NAME: clients dial replicas
#                        by IP, so they check this name instead)
#   token                64 hex characters (FIXBENCH_TOKEN_FILE)
#   store_key            64 hex characters: the key the store, the evaluator and the
#                        orchestrator share to sign each job's scoped store credential
#                        (FIXBENCH_STORE_KEY_FILE; approaches never get it)
#
# and, unless --files-only, creates the five Docker secrets the stack names:
# <prefix>_token, <prefix>_tls_cert, <prefix>_tls_key, <prefix>_tls_ca, <prefix>_store_key.
#
# usage: deploy/swarm/make-secrets.sh [--out DIR] [--prefix NAME] [--namespace NS]
#                                     [--files-only] [--replace]
#   --out DIR       where the files go (default .fixbench/secrets, git-ignored). Files already
#                   there are reused, so Swarm and Kubernetes get the same material; delete
#                   the folder to renew everything.
#   --prefix NAME   Docker secret name prefix (default fixbench; the stack reads
#                   FIXBENCH_SECRETS for it)
#   --namespace NS  Kubernetes namespace for the SANs (default fixbench)
#   --files-only    make the files, create no Docker secret (for kubectl, see
#                   deploy/kubernetes/README.md)
#   --replace       remove existing Docker secrets of the same names first (only possible
#                   while no service uses them: `docker stack rm` before)
#
# Extra SANs: FIXBENCH_EXTRA_SANS="DNS:fixbench.example.org,IP:10.0.0.5".
# Certificate lifetime: FIXBENCH_CERT_DAYS (default 365).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
out="$repo/.fixbench/secrets"
prefix=fixbench
namespace=fixbench
files_only=0
replace=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --prefix) prefix=${2:?--prefix needs a name}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a name}; shift 2 ;;
    --files-only) files_only=1; shift ;;
    --replace) replace=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "make-secrets.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in
  *[!A-Za-z0-9_.-]*|"") echo "make-secrets.sh: --prefix $prefix: use letters, digits, _ . -" >&2; exit 2 ;;
esac
command -v openssl >/dev/null || { echo "make-secrets.sh: openssl is not installed" >&2; exit 2; }

# Every service the deployments run: the store, the evaluator and one per approach folder
# (the same list tests/container/test_compose_config.py holds compose.yaml to).
names="store evaluator"
for approach in "$repo"/services/*/approach.py; do
  name=$(basename "$(dirname "$approach")")
  case "$name" in _*) continue ;; esac
  names="$names $name"
done

mkdir -p "$out"
chmod 700 "$out"
umask 077
if [ -s "$out/ca.pem" ] && [ -s "$out/server.pem" ] && [ -s "$out/server.key" ] && [ -s "$out/token" ]; then
  echo "make-secrets.sh: reusing the material in $out (delete it to renew)" >&2
else
  days=${FIXBENCH_CERT_DAYS:-365}
  sans="DNS:fixbench.internal,DNS:localhost,IP:127.0.0.1"
  for name in $names; do
    sans="$sans,DNS:$name,DNS:tasks.$name,DNS:$name.$namespace,DNS:$name.$namespace.svc,DNS:$name.$namespace.svc.cluster.local"
  done
  [ -n "${FIXBENCH_EXTRA_SANS:-}" ] && sans="$sans,$FIXBENCH_EXTRA_SANS"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/ca.key" -out "$work/ca.pem" -days "$days" -subj "/CN=fixbench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/server.key" -out "$work/server.csr" -subj "/CN=fixbench.internal" 2>/dev/null
  # clientAuth too: with FIXBENCH_TLS_CLIENT_AUTH=1 every process presents this certificate.
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' \
    "$sans" >"$work/server.ext"
  openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -out "$work/server.pem" -days "$days" -extfile "$work/server.ext" 2>/dev/null
  openssl verify -CAfile "$work/ca.pem" "$work/server.pem" >/dev/null
  openssl rand -hex 32 >"$work/token"
  # All four appear together or not at all (a half-written set would be "reused" next time).
  mv "$work/ca.key" "$work/ca.pem" "$work/server.key" "$work/server.pem" "$work/token" "$out/"
  echo "make-secrets.sh: wrote ca.pem, ca.key, server.pem, server.key and token to $out" >&2
fi
# Made on its own, so that material from before the key existed gains one without renewal.
if [ ! -s "$out/store_key" ]; then
  openssl rand -hex 32 >"$out/store_key.tmp" && mv "$out/store_key.tmp" "$out/store_key"
  echo "make-secrets.sh: wrote store_key to $out" >&2
fi

[ "$files_only" = 1 ] && exit 0

command -v docker >/dev/null || { echo "make-secrets.sh: docker is not installed (use --files-only)" >&2; exit 2; }
declare -A files=([token]=token [tls_cert]=server.pem [tls_key]=server.key [tls_ca]=ca.pem [store_key]=store_key)
# Check all five first, so a refusal leaves no half-created set behind.
for key in token tls_cert tls_key tls_ca store_key; do
  secret="${prefix}_${key}"
  if docker secret inspect "$secret" >/dev/null 2>&1 && [ "$replace" = 0 ]; then
    echo "make-secrets.sh: Docker secret $secret exists already; pass --replace (after docker stack rm) or another --prefix" >&2
    exit 1
  fi
done
for key in token tls_cert tls_key tls_ca store_key; do
  secret="${prefix}_${key}"
  if docker secret inspect "$secret" >/dev/null 2>&1; then
    docker secret rm "$secret" >/dev/null
  fi
  docker secret create --label "fixbench.secrets=$prefix" "$secret" "$out/${files[$key]}" >/dev/null
  echo "$secret"
done
