//! Peers: the tools a user would reach for instead, doing the same work as our rows.
//!
//! - **ipc-channel** (the crate Servo uses; Unix `SOCK_SEQPACKET` sockets on Linux), with the
//!   bootstrap its documentation gives for a child process: the parent opens an
//!   `IpcOneShotServer`, relaunches this executable with `--ipc-child ROLE NAME`, and the
//!   child connects to the server by name and sends back the ends it made, so each side ends
//!   up with a sender and a receiver. Rows:
//!   - `peers.ipc.rtt.typed`: round trip of a 64-byte `Vec<u8>` over
//!     `IpcSender<Vec<u8>>` (bincode, the crate's usual way), child echoing;
//!   - `peers.ipc.rtt.bytes`: the same over `IpcBytesSender`, raw bytes;
//!   - `peers.ipc.stream.64`: one-way throughput of 64 B over `IpcBytesSender`, an order (N)
//!     first, the child answering when it has counted N (as `ours.stream.64`).
//! - **procspawn** (`peers.procspawn.spawn`): `procspawn::spawn((), |()| 42).join()`, the
//!   crate's own "thread::spawn with processes": start a process, ship it a closure, get its
//!   value back. It relaunches this executable too (`main` calls `procspawn::init()`).
//!   Compared with `floor.spawn`, and best read next to `ours.spawn.first_message`.
//! - **Node.js** `child_process.fork` (`peers.node.*`), what an Electron app's own code uses
//!   for a child: `node/child.js` is both the measuring parent (`driver` role) and the child
//!   it forks (`child` role), so the parent side is real Node too. Messages are 64-character
//!   strings on the default (JSON) serialization. Rows: round trip, one-way throughput of
//!   64 B (same N as ours), and fork until the first message. The rows are skipped, with a
//!   note, when `node` is not on `PATH`.
//!
//! Each peer is measured with its idiomatic blocking or event-loop style, as its users would
//! write it; its floor is the same as the matching row of ours.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
};

use crate::floor;
use crate::{sample, stream_count, BoxError, Ctx, Kind, Result, Spec};

/// The argument that makes this executable an ipc-channel child.
const IPC_CHILD: &str = "--ipc-child";

/// What a typed ipc-channel child sends the parent: its way in and its way out.
type TypedBoot = (IpcSender<Vec<u8>>, IpcReceiver<Vec<u8>>);
/// The same with byte channels.
type BytesBoot = (IpcBytesSender, IpcBytesReceiver);

/// The Node.js script: driver and child.
const NODE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/child.js");

/// Runs every peer case.
pub fn run(ctx: &Ctx) {
    ctx.measure(
        Spec::new(
            "peers.ipc.rtt.typed",
            "ipc-channel: round trip, 64 B Vec<u8> over IpcSender (bincode)",
            Kind::Time,
        )
        .floor(floor::RTT),
        || ipc_rtt_typed(ctx),
    );
    ctx.measure(
        Spec::new(
            "peers.ipc.rtt.bytes",
            "ipc-channel: round trip, 64 B over IpcBytesSender",
            Kind::Time,
        )
        .floor(floor::RTT),
        || ipc_rtt_bytes(ctx),
    );
    ctx.measure(
        Spec::new(
            "peers.ipc.stream.64",
            "ipc-channel: one-way stream, 64 B over IpcBytesSender",
            Kind::Rate { bytes: 64 },
        )
        .floor(floor::stream_each(64)),
        || ipc_stream(ctx),
    );
    ctx.measure(
        Spec::new(
            "peers.procspawn.spawn",
            "procspawn: spawn a trivial closure and join its value",
            Kind::Time,
        )
        .floor(floor::SPAWN),
        || procspawn_spawn(ctx),
    );

    match node_version() {
        Some(version) => {
            if ctx.placement == crate::Placement::Default {
                ctx.note(format!("Node.js {version}"));
            }
            ctx.measure(
                Spec::new(
                    "peers.node.rtt",
                    "Node.js: child_process.fork round trip, 64-char string",
                    Kind::Time,
                )
                .floor(floor::RTT),
                || node(ctx, "rtt", crate::rtt_iters(ctx)),
            );
            ctx.measure(
                Spec::new(
                    "peers.node.stream.64",
                    "Node.js: one-way stream parent → child, 64-char strings",
                    Kind::Rate { bytes: 64 },
                )
                .floor(floor::stream_each(64)),
                || node(ctx, "stream", stream_count(ctx, 64)),
            );
            ctx.measure(
                Spec::new(
                    "peers.node.fork",
                    "Node.js: child_process.fork until the first message",
                    Kind::Time,
                )
                .floor(floor::SPAWN),
                || node(ctx, "fork", ctx.pick(3, 1)),
            );
        }
        None => ctx.note("node is not on PATH: the Node.js rows are skipped"),
    }
}

// ---- ipc-channel ---------------------------------------------------------------------------

/// An ipc-channel child and the ends the bootstrap gave the parent.
struct IpcChild<B> {
    process: Child,
    boot: B,
}

/// Relaunches this executable as an ipc-channel child in `role` and accepts its bootstrap.
fn ipc_start<B>(role: &str) -> Result<IpcChild<B>>
where
    B: serde::Serialize + for<'de> serde::Deserialize<'de>,
{
    let (server, name) = IpcOneShotServer::<B>::new()?;
    let process = Command::new(std::env::current_exe()?)
        .args([IPC_CHILD, role, &name])
        .stdin(Stdio::null())
        .spawn()?;
    let (_receiver, boot) = server.accept()?;
    Ok(IpcChild { process, boot })
}

impl<B> IpcChild<B> {
    /// Drops the parent's ends (the child's `recv` fails and it exits) and waits for it.
    fn end(self) -> Result<()> {
        let IpcChild { mut process, boot } = self;
        drop(boot);
        process.wait()?;
        Ok(())
    }
}

fn ipc_rtt_typed(ctx: &Ctx) -> Result<Vec<f64>> {
    let child = ipc_start::<TypedBoot>("typed-echo")?;
    let (to_child, from_child) = &child.boot;
    let iters = crate::rtt_iters(ctx);
    let samples = sample(ctx, 1, || {
        let started = Instant::now();
        for _ in 0..iters {
            to_child.send(vec![b'x'; 64])?;
            let echo = from_child.recv().map_err(|e| format!("{e:?}"))?;
            if echo.len() != 64 {
                return Err("short echo".into());
            }
        }
        Ok(started.elapsed().as_secs_f64() / iters as f64)
    });
    child.end()?;
    samples
}

fn ipc_rtt_bytes(ctx: &Ctx) -> Result<Vec<f64>> {
    let child = ipc_start::<BytesBoot>("bytes-echo")?;
    let (to_child, from_child) = &child.boot;
    let ping = [b'x'; 64];
    let iters = crate::rtt_iters(ctx);
    let samples = sample(ctx, 1, || {
        let started = Instant::now();
        for _ in 0..iters {
            to_child.send(&ping)?;
            let echo = from_child.recv().map_err(|e| format!("{e:?}"))?;
            if echo.len() != 64 {
                return Err("short echo".into());
            }
        }
        Ok(started.elapsed().as_secs_f64() / iters as f64)
    });
    child.end()?;
    samples
}

fn ipc_stream(ctx: &Ctx) -> Result<Vec<f64>> {
    let child = ipc_start::<BytesBoot>("bytes-sink")?;
    let (to_child, from_child) = &child.boot;
    let count = stream_count(ctx, 64);
    let payload = [b'x'; 64];
    let samples = sample(ctx, 1, || {
        let started = Instant::now();
        to_child.send(&count.to_le_bytes())?;
        for _ in 0..count {
            to_child.send(&payload)?;
        }
        let answer = from_child.recv().map_err(|e| format!("{e:?}"))?;
        let elapsed = started.elapsed().as_secs_f64();
        let bytes = u64::from_le_bytes(answer.as_slice().try_into()?);
        if bytes != count * 64 {
            return Err(format!("the child counted {bytes} bytes").into());
        }
        Ok(count as f64 / elapsed)
    });
    child.end()?;
    samples
}

/// In an ipc-channel child, runs its role and exits; anywhere else, returns at once.
pub fn ipc_child_main_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(IPC_CHILD) {
        return;
    }
    let (Some(role), Some(name)) = (args.get(2), args.get(3)) else {
        eprintln!("bench ipc child: usage: {IPC_CHILD} ROLE SERVER");
        std::process::exit(2);
    };
    match ipc_child(role, name) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("bench ipc child {role}: {e}");
            std::process::exit(1);
        }
    }
}

fn ipc_child(role: &str, server: &str) -> Result<()> {
    match role {
        "typed-echo" => {
            let (to_child, from_parent) = ipc::channel::<Vec<u8>>()?;
            let (to_parent, from_child) = ipc::channel::<Vec<u8>>()?;
            IpcSender::<TypedBoot>::connect(server.to_owned())?.send((to_child, from_child))?;
            // Ends when the parent drops its ends.
            while let Ok(message) = from_parent.recv() {
                to_parent.send(message)?;
            }
            Ok(())
        }
        "bytes-echo" | "bytes-sink" => {
            let (to_child, from_parent) = ipc::bytes_channel()?;
            let (to_parent, from_child) = ipc::bytes_channel()?;
            IpcSender::<BytesBoot>::connect(server.to_owned())?.send((to_child, from_child))?;
            if role == "bytes-echo" {
                while let Ok(message) = from_parent.recv() {
                    to_parent.send(&message)?;
                }
                return Ok(());
            }
            while let Ok(order) = from_parent.recv() {
                let count = u64::from_le_bytes(order.as_slice().try_into()?);
                let mut bytes = 0u64;
                for _ in 0..count {
                    match from_parent.recv() {
                        Ok(message) => bytes += message.len() as u64,
                        Err(_) => return Ok(()),
                    }
                }
                to_parent.send(&bytes.to_le_bytes())?;
            }
            Ok(())
        }
        other => Err(format!("unknown role {other:?}").into()),
    }
}

// ---- procspawn -----------------------------------------------------------------------------

fn procspawn_spawn(ctx: &Ctx) -> Result<Vec<f64>> {
    let reps = ctx.pick(5, 2);
    sample(ctx, 1, || {
        let started = Instant::now();
        for _ in 0..reps {
            let value = procspawn::spawn((), |()| 42u32)
                .join()
                .map_err(|e| format!("procspawn: {e}"))?;
            if value != 42 {
                return Err("procspawn returned the wrong value".into());
            }
        }
        Ok(started.elapsed().as_secs_f64() / reps as f64)
    })
}

// ---- Node.js -------------------------------------------------------------------------------

/// `node --version`, or `None` when there is no `node` to run.
fn node_version() -> Option<String> {
    let output = Command::new("node").arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs the Node driver in `mode`; it prints a JSON array of samples on stdout.
fn node(ctx: &Ctx, mode: &str, iters: impl ToString) -> Result<Vec<f64>> {
    let output = Command::new("node")
        .arg(NODE_SCRIPT)
        .args([
            "driver",
            mode,
            &ctx.samples().to_string(),
            &iters.to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        let _ = std::io::stderr().write_all(&output.stdout);
        return Err(format!("node driver {mode} ended with {}", output.status).into());
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| BoxError::from(format!("node driver {mode} printed no samples: {e}")))
}
