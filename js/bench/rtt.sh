#!/bin/sh
# Round trip of a 64-byte message (a 64-character string, MessagePack or JSON):
#   1. a Rust parent <-> an Electron-style JS worker through this package (tests/children/node_echo.js),
#   2. Node's own child_process.fork IPC, Node parent <-> Node child (benches/node/child.js).
# Both print the median over 5 samples of 10,000 round trips each (after a warm-up sample).
# Builds in release. Usage: sh js/bench/rtt.sh   (honours CARGO_TARGET_DIR)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
: "${CARGO_TARGET_DIR:=$root/target}"
export CARGO_TARGET_DIR
cargo build -q --release -p utility-process-node --manifest-path "$root/Cargo.toml"
UTILITY_PROCESS_NODE_ADDON="$CARGO_TARGET_DIR/release/libutility_process_node.so" \
  cargo test -q --release -p utility-process-tests --test integration --manifest-path "$root/Cargo.toml" \
  -- --ignored --nocapture node::round_trip_of_a_64_byte_message 2>/dev/null | grep 'round trip'
node "$root/benches/node/child.js" driver rtt 5 10000 | node -e '
  let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
    const v = JSON.parse(s).map((x) => x * 1e6).sort((a, b) => a - b);
    console.log(`node parent <-> node child (child_process.fork), 64 B round trip: median ${v[2].toFixed(1)} µs, min ${v[0].toFixed(1)} µs, max ${v[4].toFixed(1)} µs (10000 per sample)`);
  });'
