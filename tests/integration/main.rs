//! The integration tests: one binary (it links faster on two cores than one per file), one
//! module per area.

/// Shared buffers: memory that travels without being copied.
mod buffers;
/// A hostile child: malformed frames and descriptors, floods, signal storms, fork/kill cycles.
#[cfg(unix)]
mod hostile;
/// Spawn, exit and error events, kill, no orphans, no zombies, no stray descriptors.
mod lifecycle;
/// Resource limits: the child is stopped and the limit named; the tests again as nobody.
#[cfg(unix)]
mod limits;
/// Ordering, sizes, queueing before the child connects, raw bytes, the blocking API.
mod messages;
/// JS workers written for Electron, run unchanged through the npm package in `js/`.
#[cfg(unix)]
mod node;
/// Message channels, ports sent between processes, child-to-child talk.
mod ports;
/// Python children on the `utility_process` package: values both ways, ports, panics, pool, supervisor.
#[cfg(unix)]
mod python;
/// The strict sandbox: escapes fail, denied calls are reported, fail closed.
#[cfg(unix)]
mod sandbox;
/// stdout and stderr; cwd, env, args, the service name.
mod stdio;
/// The library's story through `tracing`: the events of a short run and their fields.
mod tracing;
