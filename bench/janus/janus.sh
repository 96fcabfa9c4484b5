#!/usr/bin/env bash
# Janus VideoRoom 1.1.2 (Debian) for the side-by-side benchmark (issue 6), in a network
# namespace of its own: Janus never gathers ICE candidates on a loopback interface, so it runs
# behind a veth pair (host 10.77.0.1, Janus 10.77.0.2) and the load is aimed only there, never at
# the machine's external address (../shared/brief/performance.md).
#
#   sudo bash bench/janus/janus.sh start    # install if needed, namespace, config, start; waits for /janus/info
#   sudo bash bench/janus/janus.sh stop     # stop it and remove the namespace
#   bash bench/janus/janus.sh url           # the HTTP API address
#
# Config (what mattered in the brief's run): HTTP transport only, bound to the namespace
# address; every other plugin, transport, logger and event handler disabled; half-trickle,
# mDNS ignored, no STUN/TURN; `event_loops = 1` (Janus's better threading for this load);
# a VideoRoom room 1234 with `bitrate = 0` (no cap, no REMB), `fir_freq = 0`, VP8 and Opus,
# no recording, up to 1000 publishers (the ramp must not be capped by the room).
set -euo pipefail
NS=rtjanus
HOST_IF=rtj0
NS_IF=rtj1
HOST_IP=10.77.0.1
NS_IP=10.77.0.2
PORT=8088
DIR=${JANUS_DIR:-/tmp/rt-janus}
URL="http://$NS_IP:$PORT/janus"

cfg() {
  rm -rf "$DIR/etc" && mkdir -p "$DIR/etc" "$DIR/log"
  local lib
  lib=$(dirname "$(dirname "$(dpkg -L janus | grep '/plugins/libjanus_videoroom.so$' | head -1)")")
  local plugins transports
  plugins=$(cd "$lib/plugins" && ls *.so | grep -v '^libjanus_videoroom.so$' | paste -sd, -)
  transports=$(cd "$lib/transports" && ls *.so | grep -v '^libjanus_http.so$' | paste -sd, -)
  cat > "$DIR/etc/janus.jcfg" <<CFG
general: {
  configs_folder = "$DIR/etc"
  plugins_folder = "$lib/plugins"
  transports_folder = "$lib/transports"
  events_folder = "$lib/events"
  loggers_folder = "$lib/loggers"
  debug_level = 3
  session_timeout = 120
  event_loops = 1
}
media: {
  rtp_port_range = "20000-40000"
}
nat: {
  nice_debug = false
  full_trickle = false
  ignore_mdns = true
  ice_enforce_list = "$NS_IF"
}
plugins: {
  disable = "$plugins"
}
transports: {
  disable = "$transports"
}
loggers: {
  disable = "libjanus_jsonlog.so"
}
events: {
  broadcast = false
}
CFG
  cat > "$DIR/etc/janus.transport.http.jcfg" <<CFG
general: {
  json = "plain"
  base_path = "/janus"
  http = true
  port = $PORT
  ip = "$NS_IP"
  https = false
}
admin: {
  admin_http = false
}
CFG
  cat > "$DIR/etc/janus.plugin.videoroom.jcfg" <<CFG
general: {
}
room-1234: {
  description = "roundtable bench"
  publishers = 1000
  bitrate = 0
  fir_freq = 0
  audiocodec = "opus"
  videocodec = "vp8"
  record = false
}
CFG
}

start() {
  if ! command -v janus >/dev/null || ! command -v curl >/dev/null || ! command -v ip >/dev/null; then
    echo "== installing janus, curl, iproute2"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq janus curl iproute2 >/dev/null
  fi
  stop >/dev/null 2>&1 || true
  ip netns add "$NS"
  ip link add "$HOST_IF" type veth peer name "$NS_IF"
  ip link set "$NS_IF" netns "$NS"
  ip addr add "$HOST_IP/24" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip netns exec "$NS" ip addr add "$NS_IP/24" dev "$NS_IF"
  ip netns exec "$NS" ip link set "$NS_IF" up
  ip netns exec "$NS" ip link set lo up
  cfg
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  ip netns exec "$NS" janus -F "$DIR/etc" -L "$DIR/log/janus.log" -N -b >/dev/null
  for _ in $(seq 1 100); do
    if curl -fsS "$URL/info" >/dev/null 2>&1; then
      echo "janus up at $URL ($(curl -fsS "$URL/info" | grep -o '"version_string": *"[^"]*"'))"
      return 0
    fi
    sleep 0.1
  done
  echo "janus did not answer at $URL; log: $DIR/log/janus.log" >&2
  tail -20 "$DIR/log/janus.log" >&2 || true
  return 1
}

stop() {
  pkill -f "janus -F $DIR/etc" 2>/dev/null || true
  sleep 0.3
  ip link del "$HOST_IF" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
