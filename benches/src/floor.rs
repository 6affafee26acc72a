//! The floor: what the kernel and the memory system allow, with no library in the way.
//!
//! Every other row of the table is compared with one of these, measured in the same run and
//! the same placement. A floor does the same physical work as the rows compared with it, with
//! the least code that can do it, so the ratio says what the library (or the peer) adds.
//!
//! - **Round trip** (`floor.rtt`): two processes joined by `socketpair(AF_UNIX, SOCK_STREAM)`
//!   play ping-pong with 64 B and blocking `write`/`read`: one system call each way, no
//!   framing, no event loop, no encoding. Timed over many round trips per sample.
//! - **One-way stream** (`floor.stream.<size>.each` and `.batched`): the parent writes
//!   length-prefixed messages (a 4-byte length, then the payload) of 64 B, 1 KiB and 64 KiB
//!   down the same kind of socket; the child reads 256 KiB at a time, walks the frames
//!   (without copying payloads out) and writes one byte back when it has counted the
//!   sample's N messages. `each` is one `write` per message, the pattern of a library that
//!   sends each message as it is posted; `batched` packs as many whole messages as fit in
//!   256 KiB into each `write`, the pattern of a library that coalesces. Timed from the first
//!   write to the child's byte: messages per second and payload MB/s.
//! - **memcpy** (`floor.memcpy`): copying 64 MiB between two buffers that are already
//!   faulted in. Moving 64 MiB through a socket costs at least two such copies (into the
//!   kernel and out), so this bounds the 64 MiB row from above; a shared-memory buffer, when
//!   the library has one, should get close to it.
//! - **Shared memory, first use** (`floor.shared.first.64mib`): a new 64 MiB memfd, filled,
//!   passed with `SCM_RIGHTS` and read by a raw child, with the library's huge-page and
//!   alignment steps but nothing else of it (`raw_shm.rs`): the floor of the library's
//!   `SharedBuffer` first-use row. Its own ratio is to memcpy.
//! - **Spawn** (`floor.spawn`): `std::process::Command` (posix_spawn under glibc) relaunches
//!   this very executable with `--floor-child spawn FD`; the child gets through `main`'s
//!   child checks to its mode and writes one byte on the inherited socket. Timed from the
//!   call to the byte: the least it costs to start this binary and hear from it. The same
//!   loop also times the call until `spawn` returns (`floor.spawn.exec`): posix_spawn's
//!   `vfork` resumes the parent once the child has executed the program, the moment
//!   utility-process reports `Event::Spawn`.
//! - **Idle RSS** (`floor.rss`): the same binary, started the same way, idle in a blocking
//!   `read` after writing its byte: its `VmRSS` is what any child of this executable costs
//!   before a library adds its runtime and buffers.
//! - **N children** (`floor.spawn_n.<n>`): N of those idle children started one after the
//!   other, timed until all N have written their byte (they all stay alive to the end, as
//!   our N children do).
//!
//! The raw children are started through [`spawn_self`] with `--floor-child` and handle their
//! role in [`child_main_if_asked`], before `main` parses anything.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::{sample, size_name, stream_count, sys, Ctx, Kind, Result, Spec, STREAM_SIZES};

/// The argument that makes this executable a raw floor child.
const CHILD_FLAG: &str = "--floor-child";

/// What the sink child reads per `read`, and what a batched write holds at most.
const CHUNK: usize = 256 * 1024;

/// The ids of the floor rows others compare with.
pub const RTT: &str = "floor.rtt";
pub const MEMCPY: &str = "floor.memcpy";
pub const SPAWN: &str = "floor.spawn";
pub const SPAWN_EXEC: &str = "floor.spawn.exec";
pub const RSS: &str = "floor.rss";
pub const SHARED_FIRST: &str = "floor.shared.first.64mib";

/// The per-message stream floor for `size`.
pub fn stream_each(size: usize) -> String {
    format!("floor.stream.{size}.each")
}

/// The N-children floor.
pub fn spawn_n(n: usize) -> String {
    format!("floor.spawn_n.{n}")
}

/// The numbers of concurrent children measured.
pub fn concurrent_counts(ctx: &Ctx) -> Vec<usize> {
    if ctx.quick {
        vec![100]
    } else {
        vec![100, 1000]
    }
}

/// Runs every floor case.
pub fn run(ctx: &Ctx) {
    ctx.measure(
        Spec::new(
            RTT,
            "floor: socketpair round trip, 64 B, blocking read/write",
            Kind::Time,
        ),
        || rtt(ctx),
    );
    for size in STREAM_SIZES {
        for batched in [false, true] {
            let (id, how) = if batched {
                (format!("floor.stream.{size}.batched"), "batched writes")
            } else {
                (stream_each(size), "one write per message")
            };
            ctx.measure(
                Spec::new(
                    id,
                    format!("floor: one-way stream, {}, {how}", size_name(size)),
                    Kind::Rate { bytes: size as u64 },
                ),
                || stream(ctx, size, batched),
            );
        }
    }
    ctx.measure(
        Spec::new(MEMCPY, "floor: memcpy 64 MiB", Kind::Bandwidth),
        || memcpy(ctx),
    );
    ctx.measure(
        Spec::new(
            SHARED_FIRST,
            "floor: a new 64 MiB memfd filled, passed and read by another process (system calls only)",
            Kind::Bandwidth,
        )
        .floor(MEMCPY),
        || shared_first(ctx),
    );
    ctx.measure_many(
        vec![
            Spec::new(
                SPAWN_EXEC,
                "floor: spawn this binary until Command::spawn returns (exec done)",
                Kind::Time,
            ),
            Spec::new(
                SPAWN,
                "floor: spawn this binary until it writes 1 byte",
                Kind::Time,
            ),
        ],
        || spawn(ctx),
    );
    ctx.measure(
        Spec::new(
            RSS,
            "floor: idle child RSS (this binary, no library)",
            Kind::Memory,
        ),
        || idle_rss(ctx),
    );
    for n in concurrent_counts(ctx) {
        ctx.measure(
            Spec::new(
                spawn_n(n),
                format!("floor: {n} idle children until all wrote 1 byte"),
                Kind::Time,
            ),
            || spawn_many(ctx, n),
        );
    }
}

// ---- the parent's side ---------------------------------------------------------------------

/// Starts this executable as a raw floor child with `args`, letting it inherit `pass`.
///
/// The descriptors are made inheritable only for the duration of the spawn. The library's
/// children never see them even then: it closes everything above descriptor 3 in its
/// children.
pub fn spawn_self(args: &[String], pass: &[BorrowedFd<'_>]) -> Result<Child> {
    let exe = std::env::current_exe()?;
    for fd in pass {
        sys::set_inheritable(*fd, true)?;
    }
    let child = Command::new(exe)
        .arg(CHILD_FLAG)
        .args(args)
        .stdin(Stdio::null())
        .spawn();
    for fd in pass {
        sys::set_inheritable(*fd, false)?;
    }
    Ok(child?)
}

fn fd_arg(fd: &impl AsRawFd) -> String {
    fd.as_raw_fd().to_string()
}

fn rtt(ctx: &Ctx) -> Result<Vec<f64>> {
    let (mut ours, theirs) = UnixStream::pair()?;
    let mut child = spawn_self(
        &["echo".into(), fd_arg(&theirs), "64".into()],
        &[theirs.as_fd()],
    )?;
    drop(theirs);
    let ping = [b'x'; 64];
    let mut pong = [0u8; 64];
    let iters = crate::rtt_iters(ctx);
    let samples = sample(ctx, 1, || {
        let started = Instant::now();
        for _ in 0..iters {
            ours.write_all(&ping)?;
            ours.read_exact(&mut pong)?;
        }
        Ok(started.elapsed().as_secs_f64() / iters as f64)
    });
    drop(ours);
    child.wait()?;
    samples
}

fn stream(ctx: &Ctx, size: usize, batched: bool) -> Result<Vec<f64>> {
    let count = stream_count(ctx, size);
    let (mut ours, theirs) = UnixStream::pair()?;
    let mut child = spawn_self(
        &["sink".into(), fd_arg(&theirs), count.to_string()],
        &[theirs.as_fd()],
    )?;
    drop(theirs);
    let mut frame = Vec::with_capacity(4 + size);
    frame.extend_from_slice(&(size as u32).to_le_bytes());
    frame.resize(4 + size, b'x');
    let per_write = if batched {
        (CHUNK / frame.len()).max(1)
    } else {
        1
    };
    let batch = frame.repeat(per_write);
    let samples = sample(ctx, 1, || {
        let started = Instant::now();
        let mut left = count as usize;
        while left > 0 {
            let n = left.min(per_write);
            ours.write_all(&batch[..n * frame.len()])?;
            left -= n;
        }
        let mut ack = [0u8; 1];
        ours.read_exact(&mut ack)?;
        Ok(count as f64 / started.elapsed().as_secs_f64())
    });
    drop(ours);
    child.wait()?;
    samples
}

fn memcpy(ctx: &Ctx) -> Result<Vec<f64>> {
    const SIZE: usize = 64 << 20;
    let source = vec![0xA5u8; SIZE];
    let mut target = vec![0u8; SIZE];
    let copies = ctx.pick(8, 2);
    sample(ctx, 1, || {
        let started = Instant::now();
        for _ in 0..copies {
            target.copy_from_slice(std::hint::black_box(&source));
            std::hint::black_box(&mut target);
        }
        Ok((copies * SIZE) as f64 / started.elapsed().as_secs_f64())
    })
}

/// A new 64 MiB memfd to a raw reader child and back, per sample (see `raw_shm.rs`).
fn shared_first(ctx: &Ctx) -> Result<Vec<f64>> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut child = spawn_self(&["shm-reader".into(), fd_arg(&theirs)], &[theirs.as_fd()])?;
    drop(theirs);
    // `first_use` drops its end when done: the child reads end-of-file and exits.
    let samples = crate::raw_shm::first_use(ctx, ours);
    child.wait()?;
    samples
}

fn spawn(ctx: &Ctx) -> Result<Vec<Vec<f64>>> {
    let reps = ctx.pick(5, 2);
    let (mut to_exec, mut to_byte) = (Vec::new(), Vec::new());
    for round in 0..=ctx.samples() {
        let (mut execed, mut wrote) = (0.0, 0.0);
        for _ in 0..reps {
            let (mut ours, theirs) = UnixStream::pair()?;
            let started = Instant::now();
            // `spawn` returns once the program is executing (posix_spawn's vfork has resumed).
            let mut child = spawn_self(&["spawn".into(), fd_arg(&theirs)], &[theirs.as_fd()])?;
            execed += started.elapsed().as_secs_f64();
            drop(theirs);
            let mut byte = [0u8; 1];
            ours.read_exact(&mut byte)?;
            wrote += started.elapsed().as_secs_f64();
            child.wait()?;
        }
        // Round 0 is the warm-up.
        if round > 0 {
            to_exec.push(execed / reps as f64);
            to_byte.push(wrote / reps as f64);
        }
    }
    Ok(vec![to_exec, to_byte])
}

/// Idle children that have each written their byte, and the socket whose closing ends them.
struct IdleChildren {
    children: Vec<Child>,
    release: UnixStream,
}

impl IdleChildren {
    /// Starts `n` idle children and waits until each has written its byte.
    fn start(n: usize) -> Result<IdleChildren> {
        let (mut ready, ready_theirs) = UnixStream::pair()?;
        let (release, release_theirs) = UnixStream::pair()?;
        let args = vec![
            "idle".to_owned(),
            fd_arg(&ready_theirs),
            fd_arg(&release_theirs),
        ];
        let mut children = Vec::with_capacity(n);
        let started = (|| -> Result<()> {
            for _ in 0..n {
                children.push(spawn_self(
                    &args,
                    &[ready_theirs.as_fd(), release_theirs.as_fd()],
                )?);
            }
            drop(ready_theirs);
            drop(release_theirs);
            let mut got = 0;
            let mut buf = [0u8; 4096];
            while got < n {
                match ready.read(&mut buf)? {
                    0 => return Err("an idle child closed its socket before writing".into()),
                    k => got += k,
                }
            }
            Ok(())
        })();
        let idle = IdleChildren { children, release };
        started.map(|()| idle)
    }

    fn end(mut self) -> Result<()> {
        drop(self.release);
        for child in &mut self.children {
            child.wait()?;
        }
        Ok(())
    }
}

fn idle_rss(ctx: &Ctx) -> Result<Vec<f64>> {
    sample(ctx, 0, || {
        let idle = IdleChildren::start(1)?;
        let rss = sys::vm_rss(idle.children[0].id());
        idle.end()?;
        rss
    })
}

fn spawn_many(ctx: &Ctx, n: usize) -> Result<Vec<f64>> {
    let samples = if n >= 1000 {
        ctx.samples().min(5)
    } else {
        ctx.samples()
    };
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let idle = IdleChildren::start(n)?;
        out.push(started.elapsed().as_secs_f64());
        idle.end()?;
    }
    Ok(out)
}

// ---- the raw children ----------------------------------------------------------------------

/// In a raw floor child, runs its role and exits; anywhere else, returns at once.
pub fn child_main_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(CHILD_FLAG) {
        return;
    }
    let code = match child(&args[2..]) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench floor child {:?}: {e}", &args[2..]);
            1
        }
    };
    std::process::exit(code);
}

/// Takes the descriptor the parent named on the command line.
fn inherited(arg: Option<&String>) -> Result<UnixStream> {
    let fd: i32 = arg.ok_or("missing descriptor argument")?.parse()?;
    if fd <= 2 {
        return Err(format!("descriptor {fd} is not an inherited socket").into());
    }
    // SAFETY: the parent made this descriptor inheritable for us and named it; nothing else in
    // this freshly started process owns it (no library here opens descriptors before this).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(UnixStream::from(owned))
}

fn child(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("spawn") => {
            inherited(args.get(1))?.write_all(&[1])?;
            Ok(())
        }
        Some("idle") => {
            let mut ready = inherited(args.get(1))?;
            let mut release = inherited(args.get(2))?;
            ready.write_all(&[1])?;
            drop(ready);
            let mut buf = [0u8; 16];
            while release.read(&mut buf)? > 0 {}
            Ok(())
        }
        Some("echo") => {
            let mut stream = inherited(args.get(1))?;
            let size: usize = args.get(2).ok_or("missing size")?.parse()?;
            let mut buf = vec![0u8; size];
            loop {
                match stream.read_exact(&mut buf) {
                    Ok(()) => stream.write_all(&buf)?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Some("shm-reader") => crate::raw_shm::reader(inherited(args.get(1))?),
        Some("sink") => {
            let stream = inherited(args.get(1))?;
            let per_round: u64 = args.get(2).ok_or("missing count")?.parse()?;
            sink(stream, per_round)
        }
        other => Err(format!("unknown floor child role {other:?}").into()),
    }
}

/// Counts length-prefixed frames without copying them; writes one byte per `per_round`.
fn sink(mut stream: UnixStream, per_round: u64) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut header = [0u8; 4];
    let mut header_have = 0usize;
    let mut skip = 0usize;
    let mut in_frame = false;
    let mut count = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let mut at = 0;
        while at < n {
            if in_frame {
                let k = skip.min(n - at);
                skip -= k;
                at += k;
            } else {
                let k = (4 - header_have).min(n - at);
                header[header_have..header_have + k].copy_from_slice(&buf[at..at + k]);
                header_have += k;
                at += k;
                if header_have < 4 {
                    continue;
                }
                header_have = 0;
                skip = u32::from_le_bytes(header) as usize;
                in_frame = true;
            }
            if in_frame && skip == 0 {
                in_frame = false;
                count += 1;
                if count == per_round {
                    count = 0;
                    stream.write_all(&[1])?;
                }
            }
        }
    }
}
