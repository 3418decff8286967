#!/usr/bin/env bash
# Install the Debian packages podclaim builds with, when any is missing.
# Needs root (apt-get); as another user it says what to install and exits 1.
set -euo pipefail

packages=(build-essential cmake pkg-config clang libclang-rt-14-dev
          libck-dev libcurl4-openssl-dev libjansson-dev libmicrohttpd-dev
          libyaml-dev libcriterion-dev curl openssl kubectl
          python3 python3-prometheus-client # /metrics checked with the Prometheus text parser (tests/daemon)
          python3-kubernetes) # the official client, checked against both servers (realk8s/)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# kubectl may come from outside Debian (a binary on PATH); only the end-to-end tests need it.
if command -v kubectl >/dev/null 2>&1; then
  missing=("${missing[@]/kubectl}")
fi
read -r -a missing <<<"${missing[*]}"
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "podclaim: missing Debian packages: ${missing[*]}" >&2
  echo "podclaim: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "podclaim: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# kubectl is not in every Debian release; install the rest even if it is unavailable.
if ! apt-get install -y -qq "${missing[@]}"; then
  rest=("${missing[@]/kubectl}")
  read -r -a rest <<<"${rest[*]}"
  apt-get install -y -qq "${rest[@]}"
  echo "podclaim: warning: kubectl is not installable here; the kubectl end-to-end tests will fail" >&2
fi
