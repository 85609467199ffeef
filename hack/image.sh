#!/usr/bin/env bash
# Builds the operator's image from the repository's Dockerfile, unmodified, where no Docker daemon runs
# and no container registry is reachable: buildah in chroot isolation, on a stand-in for the
# Dockerfile's `FROM python:<version>-slim-<suite>` made from Debian packages.
#
#   hack/image.sh    build; prints the image's name in buildah's storage (sandbox-operator:<appVersion>)
#
# Needs root (buildah's storage, debootstrap's chroot) and installs what is missing with apt-get:
# debootstrap, buildah, and runc, with which tests/image runs the image. Prints each step's time on stderr.
#
# The stand-in base: `debootstrap --variant=minbase` of the base's Debian suite from this machine's
# own apt mirror, with Python where the official image has it (a venv at /usr/local, so
# /usr/local/bin/python3 and a pip the build stage uses, which the runtime stage may uninstall). It is
# cached in ~/.cache/sandbox-operator/image keyed by STAND_IN_VERSION, so a warm run skips debootstrap.
# Imported into buildah's storage under the base's own name, it also carries this machine's CA bundle
# and pip settings (index, certificate, timeouts), read at run time, so the build stage's pip reaches
# the package index as this machine does; proxy variables are passed as build args. Such an image is
# for local tests only: never push it. A real base image already in buildah's storage is used as is.
set -euo pipefail

STAND_IN_VERSION=1   # bump when the stand-in's recipe changes: the cached rootfs is rebuilt
STAND_IN_PACKAGES=python3,python3-venv,ca-certificates
STAND_IN_LABEL=dev.sandbox-operator.stand-in-base
PACKAGES=(debootstrap buildah runc)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SANDBOX_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandbox-operator}/image"
[[ $# -eq 0 ]] || { echo "usage: $0" >&2; exit 2; }

log() { echo "image: $*" >&2; }
fail() { log "$*"; exit 1; }
step_start=$SECONDS
timed() {  # timed WHAT: logs how long the step since the last one took
  log "$1 in $((SECONDS - step_start))s"
  step_start=$SECONDS
}

[[ "$(id -u)" -eq 0 ]] || fail "needs root (buildah's storage and debootstrap's chroot); run it with sudo"

missing=()
for package in "${PACKAGES[@]}"; do
  command -v "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]} with apt-get"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  timed "installed ${missing[*]}"
fi

# The base every stage starts from, e.g. python:3.11.17-slim-bookworm: one, or the stand-in is wrong.
mapfile -t bases < <(awk 'toupper($1) == "FROM" { print $2 }' "$repo/Dockerfile" | sort -u)
[[ ${#bases[@]} -eq 1 ]] || fail "the Dockerfile's stages start from ${#bases[@]} bases (${bases[*]}); expected one"
base="${bases[0]}"
suite="${base##*-}"
image="sandbox-operator:$(awk -F'"' '/^appVersion:/ { print $2 }' "$repo/charts/sandbox-operator/Chart.yaml")"

apt_mirror() {  # this machine's Debian mirror for suite $1 (else for its own release), from its apt sources
  local wanted own uri
  own="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  for wanted in "$1" "$own"; do
    # deb822 stanzas (*.sources), then one-line entries (sources.list, *.list; options in [] dropped).
    uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v suite="$wanted" 'BEGIN { RS = "" }
      { uri = ""; hit = 0; n = split($0, lines, "\n")
        for (i = 1; i <= n; i++) {
          if (lines[i] ~ /^URIs:/) { split(lines[i], words, /[ \t]+/); uri = words[2] }
          if (lines[i] ~ /^Suites:/) { m = split(lines[i], words, /[ \t]+/); for (j = 2; j <= m; j++) if (words[j] == suite) hit = 1 }
        }
        if (hit && uri != "" && !found) { print uri; found = 1 } }' || true)"
    [[ -n "$uri" ]] || uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | sed -E 's/\[[^]]*\]//' \
      | awk -v suite="$wanted" '$1 == "deb" && $3 == suite && !found { print $2; found = 1 }' || true)"
    if [[ -n "$uri" ]]; then
      echo "$uri"
      return
    fi
  done
}

stand_in_tar="$cache/stand-in-$suite-v$STAND_IN_VERSION.tar"
if [[ ! -f "$stand_in_tar" ]]; then
  mirror="$(apt_mirror "$suite")"
  [[ -n "$mirror" ]] || fail "no Debian mirror for $suite in /etc/apt/sources.list*"
  log "debootstrap $suite from $mirror (cached afterwards in $stand_in_tar)"
  mkdir -p "$cache"
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include="$STAND_IN_PACKAGES" "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || fail "debootstrap failed; its log: $cache/debootstrap.log"
  # The official image's layout: python3 and pip in /usr/local/bin, packages in /usr/local/lib.
  chroot "$rootfs" /usr/bin/python3 -m venv /usr/local
  rm -f "$rootfs"/usr/local/bin/[Aa]ctivate*
  # What an image does not hold: package caches and lists, device nodes (the runtime makes /dev).
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/dev/* "$rootfs"/etc/resolv.conf
  tar -C "$rootfs" -cf "$stand_in_tar.tmp" .
  mv "$stand_in_tar.tmp" "$stand_in_tar"
  rm -rf "$rootfs"
  trap - EXIT
  timed "made the stand-in rootfs"
fi

# This machine's CA bundle and pip settings, as its own pip sees them: a `pip config list` line is
# `global.index-url='...'` (a file's) or `:env:.index-url='...'` (a PIP_* variable's, which wins).
# Settings naming other host paths (find-links...) would mean nothing inside, so only these are taken.
python="${PYTHON:-python3}"
pip_settings="$("$python" -m pip config list 2>/dev/null | awk '
  match($0, /^(global|:env:)\.(index-url|extra-index-url|trusted-host|proxy|timeout|default-timeout|retries|cert)=/) {
    split(substr($0, 1, RLENGTH - 1), name, ".")
    value = substr($0, RLENGTH + 1); gsub(/^\047|\047$/, "", value)
    if (name[1] == ":env:" || !(name[2] in env)) setting[name[2]] = value
    if (name[1] == ":env:") env[name[2]] = 1
  }
  END { for (key in setting) print key " = " setting[key] }' | sort)"
ca_bundle="$(sed -nE 's/^cert = //p' <<<"$pip_settings")"
ca_bundle="${ca_bundle:-${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}}}"
[[ -f "$ca_bundle" ]] || fail "no CA bundle at $ca_bundle"
pip_conf="$(printf '[global]\n%s\ncert = /etc/ssl/certs/ca-certificates.crt\n' "$(grep -v '^cert = ' <<<"$pip_settings" || true)")"
stand_in_key="$( { stat -c '%n %s %Y' "$stand_in_tar"; echo "$pip_conf"; cat "$ca_bundle"; } | sha256sum | cut -c1-16)"

have_key="$(buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$STAND_IN_LABEL\"}}" "$base" 2>/dev/null || echo absent)"
if [[ "$have_key" == "$stand_in_key" ]]; then
  :
elif [[ "$have_key" == "" || "$have_key" == "<no value>" ]]; then
  log "using the $base image found in buildah's storage (not a stand-in)"
else
  log "importing the stand-in as $base"
  replaced="$(buildah images --quiet --no-trunc "$base" 2>/dev/null || true)"
  container="$(buildah from --pull-never scratch)"
  mount="$(buildah mount "$container")"
  tar -C "$mount" -xf "$stand_in_tar"
  cp "$ca_bundle" "$mount/etc/ssl/certs/ca-certificates.crt"
  echo "$pip_conf" >"$mount/etc/pip.conf"
  buildah umount "$container" >/dev/null
  buildah config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd python3 --label "$STAND_IN_LABEL=$stand_in_key" "$container"
  buildah commit --quiet --rm "$container" "$base" >/dev/null
  [[ -z "$replaced" ]] || buildah rmi "$replaced" >/dev/null 2>&1 || true  # an older stand-in, unless in use
  timed "imported the stand-in"
fi

build_args=(--build-arg "REVISION=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)")
for name in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  if [[ -n "${!name:-}" ]]; then
    build_args+=(--build-arg "$name=${!name}")  # predefined build args: used by RUN, kept out of the image
  fi
done
log "building $image from $repo/Dockerfile"
previous="$(buildah images --quiet --no-trunc "$image" 2>/dev/null || true)"
(cd "$repo" && buildah bud --isolation chroot --network host --pull-never "${build_args[@]}" -t "$image" . >&2)
if [[ -n "$previous" && "$previous" != "$(buildah images --quiet --no-trunc "$image")" ]]; then
  buildah rmi "$previous" >/dev/null 2>&1 || true  # the image this build replaced, unless still in use
fi
timed "built $image"
echo "$image"
