#!/usr/bin/env bash
# Build the test base image (default aop-test-base:py3) from Debian's packages with
# debootstrap: the host's Debian release, python3, venv, pip and ca-certificates. Docker
# Hub is not reachable here; this stands in for python:3.12-slim. Kept between runs:
# nothing is done when the image exists (delete it to rebuild).
set -euo pipefail
docker=${DOCKER:-docker}
image=${1:-aop-test-base:py3}
if "$docker" image inspect "$image" >/dev/null 2>&1; then
  echo "base: $image exists (cached)"
  exit 0
fi
release=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
# The host's own Debian mirror, as apt is set up here.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
           2>/dev/null | grep -E '^(deb|URIs:)[[:space:]]' | grep -o -E 'https?://[^ ]+/debian/?' \
         | head -n 1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/aop-test-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base: debootstrap $release from $mirror (a few minutes the first time)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  "$release" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log"; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
tar -C "$root" --numeric-owner -c . | "$docker" import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$image" >/dev/null
echo "base: built $image"
