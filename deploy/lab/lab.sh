#!/usr/bin/env bash
# The moha namespace lab: network namespaces on one machine joined by a bridge.
#
#   lab.sh up   [RUN]   create namespaces <RUN>-lb1 <RUN>-lb2 <RUN>-node1..3 <RUN>-client
#                       and <RUN>-br (the bridge), addresses in 10.77.0.0/24
#   lab.sh down [RUN]   kill every process in those namespaces and delete them
#                       (without RUN: every lab namespace, mohalab-* and moha<digits>-*)
#   lab.sh test         run the drills: go test -v -run TestLab ./deploy/lab/
#
# RUN defaults to "mohalab". Traffic stays inside the namespaces: nothing is routed to
# the host. The Go test (lab_test.go) calls `up` and `down` itself, also on failure.
set -euo pipefail

SUBNET_PREFIX=10.77.0
HOSTS=(lb1:11 lb2:12 node1:21 node2:22 node3:23 client:100)

die() { echo "lab.sh: $*" >&2; exit 1; }

need_root() {
	[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
}

# nuke NS: kill whatever runs in NS, then delete it.
nuke() {
	local ns=$1 pids
	# LAB_KEEP_PID: the test process itself, should one of its threads be in $ns.
	pids=$(ip netns pids "$ns" 2>/dev/null | grep -vx "${LAB_KEEP_PID:-0}" || true)
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		kill -9 $pids 2>/dev/null || true
	fi
	ip netns del "$ns" 2>/dev/null || true
}

down() {
	local run=${1:-} ns
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		if [ -n "$run" ]; then
			case $ns in "$run"-*) nuke "$ns" ;; esac
		else
			# Only the lab's own names: mohalab-* (by hand) and moha<pid>-* (the test).
			if [[ $ns =~ ^moha(lab|[0-9]+)- ]]; then nuke "$ns"; fi
		fi
	done
}

up() {
	local run=${1:-mohalab} i=0 entry name octet
	down "$run"
	trap 'down "$run"' ERR
	ip netns add "$run-br"
	ip -n "$run-br" link set lo up
	ip -n "$run-br" link add br0 type bridge
	ip -n "$run-br" link set br0 up
	for entry in "${HOSTS[@]}"; do
		name=${entry%%:*}
		octet=${entry##*:}
		i=$((i + 1))
		ip netns add "$run-$name"
		ip -n "$run-$name" link set lo up
		# Both ends are created inside the bridge namespace (names are short and
		# local to it), then one end moves and becomes eth0.
		ip -n "$run-br" link add "p$i" type veth peer name "e$i"
		ip -n "$run-br" link set "e$i" netns "$run-$name"
		ip -n "$run-$name" link set "e$i" name eth0
		ip -n "$run-$name" addr add "$SUBNET_PREFIX.$octet/24" dev eth0
		ip -n "$run-$name" link set eth0 up
		ip -n "$run-br" link set "p$i" master br0
		ip -n "$run-br" link set "p$i" up
	done
	trap - ERR
}

case ${1:-} in
up)
	need_root
	up "${2:-mohalab}"
	;;
down)
	need_root
	down "${2:-}"
	;;
test)
	cd "$(dirname "$0")/../.."
	exec go test -v -count=1 -timeout 15m -run TestLab ./deploy/lab/
	;;
*)
	sed -n '2,11p' "$0" >&2
	exit 2
	;;
esac
