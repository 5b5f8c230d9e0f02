#!/usr/bin/env bash
# Installs from Debian what the demo and the tests run for real when it is missing: HAProxy, Prometheus,
# Redis (the job-framework tests' broker),
# and for the test node containerd, runc, the CNI plugins, iptables and nftables, and what builds images without a
# registry (mmdebstrap for the base, buildah for the Dockerfiles, gcc + libc6-dev for the static pause).
# Without root it says exactly what is missing and how to get it, and fails.
set -euo pipefail
missing=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
for tool in containerd runc mmdebstrap buildah iptables gcc; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
# nft deletes the iptables-nft tables the kubelet created on a machine that had none.
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || missing+=(libc6-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    sudo_cmd=""
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo_cmd="sudo -n"; fi
    if [ -z "$sudo_cmd" ]; then
        echo "candor: missing ${missing[*]}; install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
else
    sudo_cmd=""
fi
echo "candor: installing ${missing[*]} from Debian" >&2
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
