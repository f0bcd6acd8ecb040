#!/bin/bash
# Build the gcm-lasagne images on a Debian machine that reaches Debian's and
# PyPI's package mirrors but no image registry (an air-gapped build). Where
# `docker pull debian:bookworm-slim` works, plain `docker build` is enough
# (docs/gpu.md).
#
#   sudo docker/build-local.sh               # the cpu and cuda11 variants
#   sudo docker/build-local.sh cpu           # one variant
#
# Each step is skipped when its result is already there:
# 1. a Docker client with BuildKit and a running engine: Debian's docker.io
#    is installed if there is none, and its daemon started (no bridge, no
#    iptables rules: builds and containers use the host's network);
# 2. the base image debian:bookworm-slim, made with debootstrap from the
#    mirror the host's apt uses, with the host's apt sources and CA bundle
#    (so that pip inside the build trusts what the host trusts);
# 3. VARIANT images, tagged $IMAGE:VARIANT (and $IMAGE for cuda11, the
#    Dockerfile's default).
#
# Environment: IMAGE (default gcm-lasagne), MIRROR (default: from apt),
# DOCKER (a client to use). A daemon this script starts logs to
# /var/log/gcm-lasagne-dockerd.log and its pid is in /run/gcm-lasagne-dockerd.pid.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${IMAGE:-gcm-lasagne}
BASE=debian:bookworm-slim
PIDFILE=/run/gcm-lasagne-dockerd.pid
LOGFILE=/var/log/gcm-lasagne-dockerd.log
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=(cpu cuda11)

die() { echo "build-local: error: $*" >&2; exit 1; }
say() { echo "build-local: $*" >&2; }

for v in "${VARIANTS[@]}"; do
    case $v in
        cpu|cuda11) ;;
        # cuda10's stage starts from ubuntu:18.04 and NVIDIA's repositories,
        # which this script cannot make locally.
        cuda10) die "cuda10 needs ubuntu:18.04 and NVIDIA's apt repositories; build it with plain docker build where those are reachable" ;;
        *) die "unknown variant '$v' (cpu or cuda11)" ;;
    esac
done

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root (run with sudo)"
}

apt_install() {
    need_root "installing $*"
    say "installing $* from Debian's packages"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# The Dockerfile needs BuildKit (it builds only the chosen variant's stages;
# the legacy builder would build cuda10's too and fail on ubuntu:18.04).
# Clients before Engine 23.0 have BuildKit built in; later ones need buildx.
has_buildkit() {
    local major
    command -v "$1" >/dev/null 2>&1 || return 1
    "$1" buildx version >/dev/null 2>&1 && return 0
    major=$("$1" version --format '{{.Client.Version}}' 2>/dev/null || true)
    major=${major%%.*}
    [[ $major =~ ^[0-9]+$ ]] && [ "$major" -lt 23 ]
}

pick_client() {
    local c
    for c in ${DOCKER:-} docker /usr/bin/docker; do
        if has_buildkit "$c"; then DOCKER=$c; return 0; fi
    done
    return 1
}

if ! pick_client; then
    [ -e /usr/bin/docker ] && die "no Docker client here builds with BuildKit: install the docker-buildx-plugin package of your Docker, or use Debian's docker.io"
    apt_install docker.io
    pick_client || die "Debian's docker.io gave no client with BuildKit"
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
    need_root "starting the Docker daemon"
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io
    say "starting dockerd (log $LOGFILE, pid in $PIDFILE)"
    dockerd --bridge=none --iptables=false >>"$LOGFILE" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    for _ in $(seq 60); do
        "$DOCKER" info >/dev/null 2>&1 && break
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
            || die "dockerd stopped at once; see $LOGFILE"
        sleep 1
    done
    "$DOCKER" info >/dev/null 2>&1 || die "dockerd did not answer in 60 s; see $LOGFILE"
fi

make_base() {
    local mirror dir
    need_root "making the base image with debootstrap"
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    # shellcheck disable=SC2016  # $(SITE) is apt's field, not the shell's
    mirror=${MIRROR:-$(apt-get indextargets --format '$(SITE)' \
        'RELEASE: bookworm' 'IDENTIFIER: Packages' 'Target-Of: deb' 2>/dev/null | head -n 1)}
    [ -n "$mirror" ] || die "no bookworm mirror in apt's sources; set MIRROR (e.g. MIRROR=http://deb.debian.org/debian)"
    dir=$(mktemp -d /var/tmp/gcm-base.XXXXXX)
    # shellcheck disable=SC2064  # the folder is known now
    trap "rm -rf '$dir'" EXIT
    say "debootstrap --variant=minbase bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$dir" "$mirror" >/dev/null \
        || die "debootstrap failed (its log: $dir/debootstrap/debootstrap.log)"
    # Debian's bookworm suites as the host's apt reaches them (its mirror,
    # -updates, -security); other repositories of the host stay out, since
    # one that fails to answer would fail the build's apt-get update.
    local sources
    # shellcheck disable=SC2016  # apt's fields, as above
    sources=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT)' \
        'IDENTIFIER: Packages' 'Target-Of: deb' 2>/dev/null | awk '
        $2 ~ /^bookworm(-updates|-security)?$/ {
            key = $1 " " $2
            if (!(key in comps)) order[++n] = key
            if (index(" " comps[key] " ", " " $3 " ") == 0)
                comps[key] = comps[key] (comps[key] == "" ? "" : " ") $3
        }
        END { for (i = 1; i <= n; i++) print "deb " order[i] " " comps[order[i]] }')
    if [ -n "$sources" ] && [ -z "${MIRROR:-}" ]; then
        echo "$sources" > "$dir/etc/apt/sources.list"
    fi
    # pip in the build reaches PyPI through whatever the host trusts (a TLS
    # proxy's own CA, say); apt does not need it (plain HTTP, signed lists).
    local env=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/host-ca-bundle.crt"
        env+=(--change 'ENV PIP_CERT=/etc/host-ca-bundle.crt')
    fi
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb
    tar -C "$dir" -c . | "$DOCKER" import "${env[@]}" \
        --change 'LABEL org.gcm-lasagne.local-base=debootstrap' \
        --change 'CMD ["bash"]' - "$BASE" >/dev/null
    rm -rf "$dir"
    trap - EXIT
}

if "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    say "using the $BASE already here"
else
    start=$SECONDS
    make_base
    say "made $BASE in $((SECONDS - start)) s"
fi

for v in "${VARIANTS[@]}"; do
    tags=(-t "$IMAGE:$v")
    [ "$v" = cuda11 ] && tags+=(-t "$IMAGE")
    start=$SECONDS
    say "building $IMAGE:$v"
    DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
        --build-arg VARIANT="$v" "${tags[@]}" "$ROOT"
    say "built $IMAGE:$v in $((SECONDS - start)) s, $("$DOCKER" image inspect \
        --format '{{.Size}}' "$IMAGE:$v" | awk '{printf "%.2f GB", $1 / 1e9}')"
done
