#!/usr/bin/env bash
# The container test: builds the image as a user would and runs it as a user would.
#
#   bash tests/container/run.sh
#
# Installs what it needs (Debian's docker.io, debootstrap, docker-compose), starts dockerd
# when none is running (and stops it again at the end), builds a Python base image from
# Debian's packages (Docker Hub is not reachable here; kept between runs), builds the
# project's Dockerfile on it with `--build-arg BASE=...`, then tests/container/driver.py
# checks the image: one PASS/FAIL line per check, a non-zero exit on any failure.
# It skips (exit 0, loudly) only when the Docker daemon cannot start on this machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
here=tests/container
base_image=${AOP_TEST_BASE:-aop-test-base:py3}
image=${AOP_TEST_IMAGE:-azure-openai-proxy}
run_id="aop-ct-$$-$started"
work=$(mktemp -d /tmp/aop-container-test.XXXXXX)
dockerd_pid=

say() { echo "container-test: $*"; }
skip() {
  echo "################################################################################"
  echo "# CONTAINER TEST SKIPPED: $*"
  echo "# Nothing about the image was tested."
  echo "################################################################################"
  exit 0
}

cleanup() {
  if [ -n "${docker:-}" ] && "$docker" info >/dev/null 2>&1; then
    "$docker" ps -aq --filter "label=aop-container-test=$run_id" | xargs -r "$docker" rm -f -v >/dev/null 2>&1 || true
    "$docker" network ls -q --filter "label=aop-container-test=$run_id" | xargs -r "$docker" network rm >/dev/null 2>&1 || true
  fi
  if [ -n "$dockerd_pid" ]; then
    say "stopping the dockerd it started (pid $dockerd_pid)"
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- what it needs -------------------------------------------------------------------------
need=()
[ -x /usr/bin/docker ] && command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") \
      >"$work/apt.log" 2>&1 || { tail -n 20 "$work/apt.log"; say "could not install ${need[*]}"; }
  else
    say "missing ${need[*]} and cannot install them (not root, or no apt-get)"
  fi
fi
# Debian's client, which matches Debian's daemon and has BuildKit built in (a newer
# client elsewhere on PATH may need the buildx plugin for `--secret`).
docker=${DOCKER:-}
if [ -z "$docker" ]; then
  if [ -x /usr/bin/docker ]; then docker=/usr/bin/docker; else docker=$(command -v docker || true); fi
fi
[ -n "$docker" ] || skip "no docker client could be installed"
export DOCKER="$docker" DOCKER_BUILDKIT=1

# -- the daemon ----------------------------------------------------------------------------
if ! "$docker" info >/dev/null 2>&1; then
  command -v dockerd >/dev/null 2>&1 || skip "no dockerd could be installed"
  [ "$(id -u)" = 0 ] || skip "dockerd is not running and starting it needs root"
  say "starting dockerd (log: /tmp/aop-dockerd.log)"
  dockerd >/tmp/aop-dockerd.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 120); do
    "$docker" info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  if ! "$docker" info >/dev/null 2>&1; then
    tail -n 20 /tmp/aop-dockerd.log || true
    dockerd_pid=
    skip "dockerd could not start on this machine (see /tmp/aop-dockerd.log)"
  fi
fi
say "docker $("$docker" version -f '{{.Server.Version}}'), storage $("$docker" info -f '{{.Driver}}')"

# -- the base and the image ----------------------------------------------------------------
t0=$(date +%s)
bash "$here/base.sh" "$base_image"
say "base ready in $(( $(date +%s) - t0 )) s"

# The machine's package index settings and CA certificates reach pip in the build stage
# as BuildKit secrets: they are in no layer and not in the shipped image.
python3 "$here/pipconf.py" "$work/pip.conf" "$work/ca.pem"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=$(git remote get-url origin 2>/dev/null || echo "")
t0=$(date +%s)
say "building $image on $base_image"
# The README's `docker build -t azure-openai-proxy .`, with the base and the secrets.
if ! "$docker" build --network host --progress plain \
    --secret id=pipconf,src="$work/pip.conf" --secret id=cacert,src="$work/ca.pem" \
    --build-arg BASE="$base_image" --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" --build-arg SOURCE="$source_url" \
    -t "$image" . >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log"
  echo "FAIL build: docker build failed"
  exit 1
fi
echo "PASS build: $image in $(( $(date +%s) - t0 )) s"
# The build this one replaced, now untagged (only images with this project's label).
"$docker" image prune -f --filter "label=org.opencontainers.image.title=azure-openai-proxy" >/dev/null || true

# -- the checks ----------------------------------------------------------------------------
status=0
python3 "$here/driver.py" --docker "$docker" --image "$image" --base "$base_image" --run-id "$run_id" \
  --version "$version" --secrets "$work/pip.conf" "$work/ca.pem" || status=$?
say "took $(( $(date +%s) - started )) s in all"
exit "$status"
