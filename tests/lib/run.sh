#!/usr/bin/env bash
# `make run`: a gateway on 127.0.0.1:8080 with 2 workers in --echo mode, and a private
# redis-server when neither --redis nor WSGATE_REDIS says where Redis is.
# Extra flags: make run ARGS="--log-level info".
set -euo pipefail
BUILD=${1:-build}
shift || true
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d /tmp/wsgate-run.XXXXXX)
redis_pid=""
prev=""
cleanup() {
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

redis_url=${WSGATE_REDIS:-}
for arg in "$@"; do # make run ARGS="--redis URL ..." names its own Redis too
    case "$prev:$arg" in
    *:--redis=*) redis_url=${arg#--redis=} ;;
    --redis:*) redis_url=$arg ;;
    esac
    prev=$arg
done
redis_cli="redis-cli -u $redis_url"
if [ -z "$redis_url" ]; then
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$tmp" --daemonize no --loglevel warning >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    redis-cli -p "$port" ping >/dev/null || { cat "$tmp/redis.log"; exit 1; }
    redis_url="redis://127.0.0.1:$port"
    redis_cli="redis-cli -p $port"
    echo "wsgate: started a private redis-server on 127.0.0.1:$port (stopped with the gateway)"
fi

case " $* " in
*" --allow-origin"*) ;;
*) [ -n "${WSGATE_ALLOW_ORIGIN:-}" ] || echo "wsgate: warning: no --allow-origin: a page on any site may connect with its visitors' cookies" ;;
esac

cat <<MSG

wsgate is starting on 127.0.0.1:8080 (2 workers, --echo). Ctrl-C stops it.

  Connect:   open http://127.0.0.1:8080/ in a browser (demo page), or
             /usr/bin/python3 -m websockets 'ws://127.0.0.1:8080/?group=room:1&user=alice'
  Close it:  build/wsgatectl close --redis $redis_url --group room:1 \\
                 --code 4001 --reason 'bye from the backend' --wait 2000
  or:        $redis_cli PUBLISH wsgate:orders '{"group":"room:1","code":4001,"reason":"bye"}'
  Gateways:  build/wsgatectl gateways --redis $redis_url

MSG
"$BUILD/wsgate" --listen 127.0.0.1:8080 --workers 2 --echo --redis "$redis_url" --id local \
    --log-level info "$@" &
gw=$!
trap 'kill -TERM $gw 2>/dev/null || true' INT TERM
wait $gw || true
wait $gw 2>/dev/null || true
