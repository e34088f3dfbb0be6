#!/usr/bin/env bash
# Whether codejail-http keeps answering GET /live while clients abuse it: p50/p99/max
# latency of /live probes (one every 0.1 s, each with a 5 s timeout, for DURATION s
# per phase) when idle, under STALLED clients that each sent half a header block and
# stall (reopening any connection the front closes), and under FLOODS clients that
# each POST, over and over, a multipart body of FLOOD_BYTES (default 9.6 MiB, under the
# 10 MiB cap) made of tiny file parts (about 120,000). Also prints the front's CPU
# seconds per phase. One dev broker, one front on a loopback port, ready first (the
# floods must reach the form reader).
#
# Usage: bench/http_slow_clients.sh [--front BIN] [--bin-dir DIR] [--python PATH]
#                                   [--front-nofile N] [--duration S] [--stalled N]
#                                   [--floods N] [--flood-bytes B]
#   --front         the codejail-http binary to measure (default: DIR/codejail-http);
#                   e.g. an older build, to compare
#   --bin-dir       codejail-broker and codejail-jail (default: target/release under
#                   $CARGO_TARGET_DIR or the repository's, else target/debug)
#   --python        the broker's interpreter (default: the sandbox venv,
#                   /var/tmp/codejail-sandbox-venv-lean/bin/python)
#   --front-nofile  the front's soft RLIMIT_NOFILE (default 1024, what systemd gives a
#                   service without LimitNOFILE=; its hard limit stays this shell's)
#   --duration      seconds of probes per phase (default 15)
#   --stalled --floods --flood-bytes   defaults 1100, 4, 10066329
#
# Build first: cargo build --release --bins
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/broker.sh
source "$root/scripts/lib/broker.sh"
die() { echo "http_slow_clients: $*" >&2; exit 2; }
target="${CARGO_TARGET_DIR:-$root/target}"
bins=$target/release
[[ -x $bins/codejail-broker ]] || bins=$target/debug
front=
python=/var/tmp/codejail-sandbox-venv-lean/bin/python
front_nofile=1024 duration=15 stalled=1100 floods=4 flood_bytes=10066329
while (($#)); do
    case $1 in
        --front) front=${2:?}; shift 2 ;;
        --bin-dir) bins=${2:?}; shift 2 ;;
        --python) python=${2:?}; shift 2 ;;
        --front-nofile) front_nofile=${2:?}; shift 2 ;;
        --duration) duration=${2:?}; shift 2 ;;
        --stalled) stalled=${2:?}; shift 2 ;;
        --floods) floods=${2:?}; shift 2 ;;
        --flood-bytes) flood_bytes=${2:?}; shift 2 ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ -d $bins ]] || die "no directory $bins"
bins=$(cd "$bins" && pwd)
front=${front:-$bins/codejail-http}
[[ $front == /* ]] || front=$PWD/$front
for b in "$bins/codejail-broker" "$bins/codejail-jail" "$front"; do
    [[ -x $b ]] || die "$b missing: cargo build --release --bins (or --bin-dir, --front)"
done
for v in front_nofile stalled floods flood_bytes; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer"
done
[[ -x "$python" ]] || die "no interpreter $python (scripts/setup-sandbox-venv.sh --lean)"

# The stalled clients need descriptors here: the soft limit up to the hard one.
ulimit -S -n "$(ulimit -H -n)"
(($(ulimit -n) > stalled + 256)) || die "ulimit -Hn $(ulimit -Hn) is too low for $stalled stalled clients"

tmp=$(mktemp -d /var/tmp/codejail-http-slow.XXXXXX)
chmod 755 "$tmp"
broker_pid='' http_pid=''
cleanup() {
    local p
    for p in $http_pid $broker_pid; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $http_pid $broker_pid; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# The dev broker; as root, as an unprivileged uid (it never runs programs as root).
mkdir "$tmp/broker"
socket=$tmp/broker/broker.sock
start_broker --as "${BENCH_BROKER_UID:-199972}" "$tmp/broker.log" "$socket" \
    "$bins/codejail-broker" --dev --python "$python" --allow-uid "$(id -u)" \
    || die "the broker did not start"
broker_pid=$started_broker_pid

# The front with its defaults (only keys every version knows).
cat >"$tmp/http.toml" <<TOML
listen = "127.0.0.1:0"
broker_socket = "$socket"
TOML
(ulimit -S -n "$front_nofile" &&
    NO_COLOR=1 RUST_LOG=warn,codejail_http=info exec "$front" --config "$tmp/http.toml") \
    >"$tmp/http.log" 2>&1 &
http_pid=$!
addr=
for _ in $(seq 200); do
    addr=$(sed -n 's/.*codejail-http listening listen=\([0-9.:]*\).*/\1/p' "$tmp/http.log" | head -1)
    [[ -n $addr ]] && break
    sleep 0.1
done
[[ $addr == 127.* ]] || { cat "$tmp/http.log" >&2; die "codejail-http did not listen on loopback"; }
for _ in $(seq 300); do
    /usr/bin/python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://$addr/health/').status != 200)" \
        2>/dev/null && break
    sleep 0.2
done
/usr/bin/python3 -c "import urllib.request; urllib.request.urlopen('http://$addr/health/')" \
    || { cat "$tmp/http.log" >&2; die "codejail-http not ready"; }

echo "http_slow_clients: front $front (soft RLIMIT_NOFILE $front_nofile, hard $(ulimit -Hn)), $(nproc) CPUs"
/usr/bin/python3 "$root/bench/http_slow_clients.py" "$addr" "$http_pid" --duration "$duration" \
    --stalled "$stalled" --floods "$floods" --flood-bytes "$flood_bytes"
echo "front's log, warnings and errors:"
grep -E ' (WARN|ERROR) ' "$tmp/http.log" | sed -E 's/^[^ ]+ +//' | sort | uniq -c | sort -rn | head -8 || true
