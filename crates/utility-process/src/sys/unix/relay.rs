//! Relaying a confined child's output, so that it never holds the parent's own descriptors.
//!
//! A child given the parent's stdout or stderr (`Stdio::Inherit`) shares the parent's *open
//! file description*: its flags and its offset. A hostile child can set it non-blocking (the
//! parent's next large `println!` then fails with `EAGAIN` and panics), truncate and rewrite
//! the parent's redirected log file, or, when it is a terminal, push input into it with
//! `TIOCSTI`. A sandboxed child therefore gets pipes instead, and a thread of the parent's
//! copies what comes out of them to the parent's streams: the child holds nothing of the
//! parent's but the pipe's write end.
//!
//! The relay also reads a memory-limited child's stderr for the line that Rust's default
//! allocation-error handler writes before it aborts (`memory allocation of N bytes failed`):
//! the one sign of an allocation failure that does not depend on `errno` surviving until
//! the abort, which a backtrace printer (`RUST_BACKTRACE=1`) defeats.
//!
//! One thread per relayed child, blocked in `poll` on its pipes; it ends when every pipe has
//! reached end-of-file (the child and everything it started are gone). A write to the parent's
//! stream that fails for good (a closed pipe, say) turns that stream into a sink, so that the
//! child is never blocked by where its output was going.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{cvt, retry};

/// Where one of the child's streams goes.
#[derive(Debug)]
pub(crate) enum Sink {
    /// The parent's own descriptor (1 or 2), through a duplicate the relay owns.
    Parent(RawFd),
    /// A pipe whose read end the application holds (`Stdio::Pipe`).
    Pipe(OwnedFd),
    /// Nowhere (`Stdio::Ignore`): read and dropped.
    Discard,
}

/// One stream to relay: the read end of the child's pipe, and where it goes.
#[derive(Debug)]
pub(crate) struct Stream {
    pub source: OwnedFd,
    pub sink: Sink,
    /// Look for the allocation-failure line in it.
    pub watch_allocation_failure: bool,
}

/// What the relay tells the rest of the library.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The child wrote Rust's allocation-failure line.
    pub allocation_failure: AtomicBool,
}

/// The line Rust's default allocation-error handler writes, around the size.
const FAILURE_PREFIX: &[u8] = b"memory allocation of ";
const FAILURE_SUFFIX: &[u8] = b" bytes failed";

/// Starts the relay thread for `streams`; `done` runs on it once every stream has ended.
pub(crate) fn start(
    streams: Vec<Stream>,
    seen: Arc<Seen>,
    done: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    let mut relays = Vec::with_capacity(streams.len());
    for stream in streams {
        let sink = match stream.sink {
            Sink::Parent(fd) => {
                // SAFETY: F_DUPFD_CLOEXEC on the parent's own stdout or stderr, which stay open
                // for the call; the result is a fresh descriptor nobody else owns.
                let dup = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) });
                match dup {
                    // SAFETY: see above.
                    Ok(fd) => Output::Fd(unsafe { OwnedFd::from_raw_fd(fd) }),
                    // The parent has no such stream (closed): nothing to write to.
                    Err(_) => Output::Discard,
                }
            }
            Sink::Pipe(fd) => Output::Fd(fd),
            Sink::Discard => Output::Discard,
        };
        relays.push(Relay {
            source: Some(stream.source),
            sink,
            line: Line::new(stream.watch_allocation_failure),
        });
    }
    std::thread::Builder::new()
        .name("up-relay".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            run(&mut relays, &seen);
            done();
        })
        .map(drop)
}

#[derive(Debug)]
enum Output {
    Fd(OwnedFd),
    Discard,
}

#[derive(Debug)]
struct Relay {
    /// `None` once it reached end-of-file.
    source: Option<OwnedFd>,
    sink: Output,
    line: Line,
}

fn run(relays: &mut [Relay], seen: &Seen) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut pfds: Vec<libc::pollfd> = relays
            .iter()
            .map(|r| libc::pollfd {
                fd: r.source.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        if pfds.iter().all(|p| p.fd < 0) {
            return;
        }
        let count = pfds.len() as libc::nfds_t;
        // SAFETY: `pfds` holds `count` valid pollfds (a negative fd is ignored).
        let polled = retry(|| cvt(unsafe { libc::poll(pfds.as_mut_ptr(), count, -1) }));
        if polled.is_err() {
            return;
        }
        for (relay, pfd) in relays.iter_mut().zip(&pfds) {
            if pfd.revents == 0 {
                continue;
            }
            let Some(source) = &relay.source else {
                continue;
            };
            let n = retry(|| {
                // SAFETY: reads at most `buf.len()` bytes into `buf` from a descriptor we own.
                let n =
                    unsafe { libc::read(source.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match n {
                Ok(0) | Err(_) => relay.source = None,
                Ok(n) => {
                    if relay.line.feed(&buf[..n]) {
                        seen.allocation_failure.store(true, Ordering::SeqCst);
                    }
                    if let Output::Fd(fd) = &relay.sink {
                        if write_all(fd, &buf[..n]).is_err() {
                            relay.sink = Output::Discard;
                        }
                    }
                }
            }
        }
    }
}

/// Writes all of `bytes`, waiting when the descriptor is non-blocking and full.
fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writes from `bytes`, alive for the call, to a descriptor we own.
        let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    super::wait_fd(fd.as_fd(), super::Interest::Writable, None)?;
                    continue;
                }
                _ => return Err(e),
            }
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// The current line of a stream, as far as the allocation-failure check needs it.
#[derive(Debug)]
struct Line {
    watch: bool,
    /// The line's start (at most `LINE_KEPT` bytes).
    head: Vec<u8>,
    /// The line is longer than `LINE_KEPT`: it is not the one looked for.
    long: bool,
}

/// The failure line is under 60 bytes; anything longer is something else.
const LINE_KEPT: usize = 96;

impl Line {
    fn new(watch: bool) -> Line {
        Line {
            watch,
            head: Vec::new(),
            long: false,
        }
    }

    /// Takes the next bytes of the stream; `true` if a line among them was the failure line.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        if !self.watch {
            return false;
        }
        let mut found = false;
        for &b in bytes {
            if b == b'\n' {
                found |= !self.long && is_failure_line(&self.head);
                self.head.clear();
                self.long = false;
            } else if self.head.len() < LINE_KEPT {
                self.head.push(b);
            } else {
                self.long = true;
            }
        }
        found
    }
}

fn is_failure_line(line: &[u8]) -> bool {
    line.strip_prefix(FAILURE_PREFIX)
        .and_then(|rest| rest.strip_suffix(FAILURE_SUFFIX))
        .is_some_and(|size| !size.is_empty() && size.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocation_failure_line_is_found_across_reads_and_nothing_else_matches() {
        let mut line = Line::new(true);
        assert!(!line.feed(b"hello\nmemory allocation of 1048"));
        assert!(line.feed(b"576 bytes failed\nstack backtrace:\n"));
        let mut line = Line::new(true);
        assert!(!line.feed(b"memory allocation of lots bytes failed\n"));
        assert!(!line.feed(b"xmemory allocation of 12 bytes failed\n"));
        assert!(!line.feed(b"memory allocation of 12 bytes failed, said nobody\n"));
        let long = [b'7'; 200];
        assert!(!line.feed(FAILURE_PREFIX));
        assert!(!line.feed(&long));
        assert!(!line.feed(b" bytes failed\n"));
        let mut line = Line::new(false);
        assert!(!line.feed(b"memory allocation of 12 bytes failed\n"));
    }
}
