#!/usr/bin/env bash
# Makes sure the build tools the workers' JPEG codec needs are installed.
#
# libjpeg-turbo is built from the source bundled with the turbojpeg crate (Debian 12
# ships 2.1, older than the crate supports), which takes cmake and nasm, the assembler
# for its SIMD code. When either is missing and we are root, Debian's packages are
# installed; otherwise the exact command is printed.
#
# jpegtran (libjpeg-turbo-progs) is not needed to build or run: the tests compare the
# workers' lossless JPEG transforms with it byte for byte. openssl makes the TLS tests'
# throwaway CA (deploy/tls/make-test-ca.sh).
set -euo pipefail

missing=()
for tool in cmake nasm jpegtran openssl; do
  if ! command -v "$tool" >/dev/null; then
    case $tool in
      jpegtran) missing+=(libjpeg-turbo-progs) ;;
      *) missing+=("$tool") ;;
    esac
  fi
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "deps: installing ${missing[*]} (once)…" >&2
  log=${TMPDIR:-/tmp}/pixmill-apt.log
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1
    apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
      || { echo "deps: apt-get install ${missing[*]} failed; see $log" >&2; exit 1; }
  fi
  exit 0
fi

echo "deps: the build and tests need ${missing[*]}. Install them, then run this again:" >&2
echo "  sudo apt-get install ${missing[*]}" >&2
exit 1
