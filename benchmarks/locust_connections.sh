#!/bin/bash
# How many connections one Locust worker holds: a master and ONE worker on this machine, ramping
# to USERS users (each connects, subscribes, publishes QoS 1 to itself every 5 s) against a
# mosquitto of its own, then the stats, the worker's threads/CPU/RSS and the broker's count of
# established connections.   usage: bash benchmarks/locust_connections.sh [USERS] [RATE] [SECONDS]
set -e
USERS=${1:-2000}; RATE=${2:-200}; SECONDS_=${3:-40}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d); cd "$WORK"
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
PORT=$(free_port); MASTER_PORT=$(free_port)
# set_tcp_nodelay: mosquitto's default Nagle delays a PUBACK queued behind a small PUBLISH ~40 ms.
printf "listener $PORT 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n" > mosquitto.conf
"${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}" -c mosquitto.conf > mosquitto.log 2>&1 &
BROKER=$!
trap 'kill $BROKER $WORKER 2>/dev/null || true' EXIT
sleep 1
export MQTT_PORT=$PORT
LOCUST="$PY -m locust -f $ROOT/benchmarks/locust_connections.py"
$LOCUST --headless --master --master-bind-host 127.0.0.1 --master-bind-port "$MASTER_PORT" \
    --expect-workers 1 -u "$USERS" -r "$RATE" -t "${SECONDS_}s" --host 127.0.0.1 --csv run \
    --only-summary --stop-timeout 5 > master.log 2>&1 &
MASTER=$!
$LOCUST --worker --master-host 127.0.0.1 --master-port "$MASTER_PORT" > worker.log 2>&1 &
WORKER=$!
sleep $((SECONDS_ - 3))
echo "worker (NLWP = OS threads, %CPU = average since start):"
ps -o pid,nlwp,pcpu,rss -p $WORKER
echo "connections established to the broker: $(ss -tn state established "( dport = :$PORT )" | tail -n +2 | wc -l)"
wait $MASTER || true
cut -d, -f1-8 run_stats.csv
grep -il "traceback" master.log worker.log || true
