#!/usr/bin/env bash
# A real cluster on one machine: a Redis server and N silos (nodes a, b, c, ...) joined through it, sharing one
# checkpoint store. What the README's "Cluster" section runs.
#
#   deploy/local-cluster.sh start [N] [CHECKPOINT_DIR]   # default 3 silos, checkpoints from ./runs
#   deploy/local-cluster.sh status
#   deploy/local-cluster.sh kill NODE                    # kill -9 one silo, as a crashed machine would
#   deploy/local-cluster.sh restart NODE                 # start that silo again (same ports, same node name)
#   deploy/local-cluster.sh stop                         # stop every silo and Redis
#
# Silo i listens on 127.0.0.1: silo port 11111+i, gateway 30000+i, HTTP 5080+i; Redis on 6380 (not the system
# default 6379). State lives in .cluster/ (logs, pids, Redis data, the store); silo a and b may fine-tune.
# Settings beyond these go in the environment as usual (Operator__ApiKey=..., ModelHost__Slots=32).
set -euo pipefail
cd "$(dirname "$0")/.."
state="$(pwd)/.cluster"
redis_port="${REDIS_PORT:-6380}"
silo_dll="Silo/bin/Debug/net10.0/OrleansGpt.Silo.dll"
nodes=(a b c d e f g h)

# Alive and not a zombie (a killed silo whose parent shell is gone may linger as one where nothing reaps it).
alive() { local stat; stat=$(ps -o stat= -p "$1" 2>/dev/null) && [[ -n "$stat" && "$stat" != Z* ]]; }
redis_running() { [[ -f "$state/redis.pid" ]] && alive "$(cat "$state/redis.pid")"; }
silo_running() { [[ -f "$state/silo-$1.pid" ]] && alive "$(cat "$state/silo-$1.pid")"; }
index_of() { for i in "${!nodes[@]}"; do [[ "${nodes[$i]}" == "$1" ]] && { echo "$i"; return; }; done; echo "unknown node $1" >&2; exit 2; }

start_silo() {
    local node="$1" i
    i=$(index_of "$node")
    local checkpoints; checkpoints="$(cat "$state/checkpoints")"
    local training=()
    [[ "$node" == a || "$node" == b ]] && training=(--ModelHost:TrainingDevices:0=cpu:0)
    nohup dotnet "$silo_dll" \
        --Cluster:Provider=redis --Cluster:Redis="127.0.0.1:$redis_port" --Cluster:AdvertisedAddress=127.0.0.1 \
        --Cluster:SiloPort=$((11111 + i)) --Cluster:GatewayPort=$((30000 + i)) --Urls="http://127.0.0.1:$((5080 + i))" \
        --ModelHost:Node="$node" --ModelHost:CheckpointDirectory="$checkpoints" --ModelHost:StoreDirectory="$state/store" \
        --ModelHost:CacheDirectory="$state/cache-$node" --ModelHost:DataDirectory="$PWD/data" "${training[@]}" \
        >>"$state/silo-$node.log" 2>&1 &
    echo $! >"$state/silo-$node.pid"
    echo "silo $node: pid $!, http://127.0.0.1:$((5080 + i)), gateway $((30000 + i)), log $state/silo-$node.log"
}

case "${1:-}" in
start)
    count="${2:-3}"
    checkpoints="$(realpath -m "${3:-runs}")"
    mkdir -p "$state"
    echo "$checkpoints" >"$state/checkpoints"
    echo "$count" >"$state/count"
    command -v redis-server >/dev/null || { echo "redis-server is not installed: apt-get install -y redis-server" >&2; exit 1; }
    [[ -f "$silo_dll" ]] || dotnet build Silo -v q
    if ! redis_running; then
        redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$state" --appendonly yes --daemonize yes --pidfile "$state/redis.pid" --logfile "$state/redis.log"
        for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
        echo "redis: 127.0.0.1:$redis_port (data in $state)"
    fi
    for node in "${nodes[@]:0:$count}"; do silo_running "$node" || start_silo "$node"; done
    echo "clients: dotnet run --project Client -- --redis 127.0.0.1:$redis_port chat"
    ;;
status)
    redis_running && echo "redis: running on $redis_port" || echo "redis: stopped"
    for node in "${nodes[@]:0:$(cat "$state/count" 2>/dev/null || echo 0)}"; do
        i=$(index_of "$node")
        if silo_running "$node"; then echo "silo $node: running, $(curl -s "127.0.0.1:$((5080 + i))/healthz" || echo 'not answering yet')"; else echo "silo $node: stopped"; fi
    done
    ;;
kill)
    node="${2:?which node}"
    silo_running "$node" && kill -9 "$(cat "$state/silo-$node.pid")" && echo "silo $node killed (-9)"
    ;;
restart)
    node="${2:?which node}"
    silo_running "$node" && { echo "silo $node is running" >&2; exit 1; }
    start_silo "$node"
    ;;
stop)
    # Silos first, and waited for: a stopping silo records its exit in Redis, so Redis goes last.
    pids=()
    for pidfile in "$state"/silo-*.pid; do
        [[ -f "$pidfile" ]] || continue
        pid="$(cat "$pidfile")"
        alive "$pid" && kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
        rm -f "$pidfile"
    done
    for _ in $(seq 60); do
        running=0
        for pid in "${pids[@]}"; do alive "$pid" && running=1; done
        [[ $running == 0 ]] && break
        sleep 0.5
    done
    for pid in "${pids[@]}"; do alive "$pid" && kill -9 "$pid" && echo "silo pid $pid did not stop in 30 s: killed"; done
    redis_running && redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || true
    echo "stopped (state kept in $state; delete it to start afresh)"
    ;;
*)
    sed -n '2,16p' "$0"
    exit 2
    ;;
esac
