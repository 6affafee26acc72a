//! A supervised child's stdout and stderr, when its spec pipes them: [`OutputLine`]s on
//! [`Supervisor::output`](crate::Supervisor::output), and an [`OutputTail`] in its exit report.
//!
//! # Strategy
//!
//! A pipe holds 64 KiB: a child whose pipe nobody reads blocks in its next write, for good.
//! The supervisor owns the child's `UtilityProcess`, so it must be the one that reads. For
//! every life it takes the child's piped stdout and stderr and starts one task per pipe that
//! reads until end of file, whatever the rest of the supervisor does. Each task
//!
//! - splits what it reads into lines, each at most [`MAX_LINE`] bytes (a longer line is cut
//!   into pieces, marked [`OutputLine::cut`]), and broadcasts them to whoever subscribed with
//!   [`Supervisor::output`](crate::Supervisor::output) — a subscriber that falls behind loses
//!   the oldest lines and is told how many, exactly like [`Events`](crate::Events): a slow
//!   reader never slows the child down;
//! - keeps the last [`ChildSpec::output_tail`](crate::ChildSpec::output_tail) bytes, which
//!   the life's [`SupervisorEvent::Exited`](crate::SupervisorEvent::Exited) (and a failed
//!   first start's [`Error::StartFailed`](crate::Error::StartFailed)) carry.
//!
//! Memory is bounded whatever the child writes: one line buffer of [`MAX_LINE`] and one tail
//! per pipe, and at most
//! [`SupervisorOptions::output_capacity`](crate::SupervisorOptions::output_capacity) lines
//! waiting for the slowest subscriber.
//!
//! When the child has exited, the supervisor gives the readers [`EOF_GRACE`] to reach the end
//! of what it wrote (a grandchild may hold the pipe open for ever), then stops them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use utility_process::UtilityProcess;

/// The longest [`OutputLine`], in bytes; a longer line arrives in pieces.
pub const MAX_LINE: usize = 4096;

/// How long, after a child's exit, its pipes are still read to reach their end.
pub const EOF_GRACE: Duration = Duration::from_millis(200);

/// How many bytes one read takes from a pipe.
const READ_CHUNK: usize = 16 * 1024;

/// Which of a child's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Its standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

/// One line a supervised child wrote on a piped stdout or stderr.
#[derive(Debug, Clone)]
pub struct OutputLine {
    /// The service.
    pub service: String,
    /// The process that wrote it.
    pub pid: u32,
    /// How many times the service had been restarted before that process (0 the first time).
    pub restarts: u32,
    /// stdout or stderr.
    pub stream: OutputStream,
    /// The line, without its `\n`; at most [`MAX_LINE`] bytes. Not necessarily UTF-8: see
    /// [`text`](Self::text).
    pub bytes: Vec<u8>,
    /// `true` when the line was longer than [`MAX_LINE`]: this is a piece of it, and the
    /// next line of the same stream continues it. The last piece has `cut == false`.
    pub cut: bool,
}

impl OutputLine {
    /// The line as text, invalid UTF-8 replaced by `U+FFFD`.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

/// What [`Output::recv`] gives.
#[derive(Debug, Clone)]
pub enum OutputEvent {
    /// A line.
    Line(OutputLine),
    /// This subscriber fell behind and lost the `count` oldest lines.
    Lost {
        /// How many.
        count: u64,
    },
}

/// A subscription to every supervised child's piped output, from
/// [`Supervisor::output`](crate::Supervisor::output).
///
/// Each subscriber sees every line written after it subscribed, in order for each stream.
/// One that falls more than
/// [`SupervisorOptions::output_capacity`](crate::SupervisorOptions::output_capacity) lines
/// behind loses the oldest and is told so with [`OutputEvent::Lost`]: the children are never
/// slowed down by their output.
#[derive(Debug)]
pub struct Output {
    pub(crate) receiver: broadcast::Receiver<OutputLine>,
}

impl Output {
    /// The next line; `None` once the supervisor is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses no line.
    pub async fn recv(&mut self) -> Option<OutputEvent> {
        match self.receiver.recv().await {
            Ok(line) => Some(OutputEvent::Line(line)),
            Err(broadcast::error::RecvError::Lagged(count)) => Some(OutputEvent::Lost { count }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// The last bytes a life of a child wrote on its piped stdout and stderr (empty for a stream
/// that was not piped), at most [`ChildSpec::output_tail`](crate::ChildSpec::output_tail)
/// bytes of each.
///
/// # Examples
///
/// ```
/// use utility_process_supervisor::OutputTail;
///
/// let tail = OutputTail::default();
/// assert!(tail.is_empty());
/// assert_eq!(tail.stderr_text(), "");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputTail {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_cut: bool,
    stderr_cut: bool,
}

impl OutputTail {
    /// The end of what the child wrote on stdout.
    pub fn stdout(&self) -> &[u8] {
        &self.stdout
    }

    /// The end of what the child wrote on stderr.
    pub fn stderr(&self) -> &[u8] {
        &self.stderr
    }

    /// [`stdout`](Self::stdout) as text, invalid UTF-8 replaced by `U+FFFD`.
    pub fn stdout_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// [`stderr`](Self::stderr) as text, invalid UTF-8 replaced by `U+FFFD`.
    pub fn stderr_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }

    /// Whether the child wrote more on `stream` than the tail keeps (its start was dropped).
    pub fn is_truncated(&self, stream: OutputStream) -> bool {
        match stream {
            OutputStream::Stdout => self.stdout_cut,
            OutputStream::Stderr => self.stderr_cut,
        }
    }

    /// Whether nothing was written (or nothing was piped).
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }
}

/// The last `capacity` bytes of a stream.
#[derive(Debug)]
struct Tail {
    bytes: VecDeque<u8>,
    capacity: usize,
    cut: bool,
}

impl Tail {
    fn new(capacity: usize) -> Tail {
        Tail {
            bytes: VecDeque::new(),
            capacity,
            cut: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.capacity {
            self.cut = true;
            self.bytes.clear();
            &chunk[chunk.len() - self.capacity..]
        } else {
            chunk
        };
        let excess = (self.bytes.len() + chunk.len()).saturating_sub(self.capacity);
        if excess > 0 {
            self.cut = true;
            self.bytes.drain(..excess);
        }
        self.bytes.extend(chunk);
    }
}

/// Cuts a byte stream into [`OutputLine`]s of at most [`MAX_LINE`] bytes.
#[derive(Debug)]
struct LineSplitter {
    line: Vec<u8>,
}

impl LineSplitter {
    fn new() -> LineSplitter {
        LineSplitter { line: Vec::new() }
    }

    /// Feeds `bytes`; `emit(line, cut)` is called for each complete line or piece.
    fn feed(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(Vec<u8>, bool)) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n');
            let segment = &bytes[..end.unwrap_or(bytes.len())];
            let mut rest = segment;
            while !rest.is_empty() {
                if self.line.len() == MAX_LINE {
                    emit(std::mem::take(&mut self.line), true);
                }
                let take = rest.len().min(MAX_LINE - self.line.len());
                self.line.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
            match end {
                Some(at) => {
                    emit(std::mem::take(&mut self.line), false);
                    bytes = &bytes[at + 1..];
                }
                None => bytes = &[],
            }
        }
    }

    /// The last line, if the stream did not end with `\n`.
    fn finish(&mut self, emit: &mut impl FnMut(Vec<u8>, bool)) {
        if !self.line.is_empty() {
            emit(std::mem::take(&mut self.line), false);
        }
    }
}

/// Who wrote the output.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub service: String,
    pub pid: u32,
    pub restarts: u32,
}

/// The readers of one life's pipes and the tails they keep.
#[derive(Debug)]
pub(crate) struct Readers {
    tasks: JoinSet<()>,
    stdout: Arc<Mutex<Tail>>,
    stderr: Arc<Mutex<Tail>>,
}

impl Readers {
    /// Takes `child`'s piped stdout and stderr (if any) and starts reading them, on the
    /// current runtime.
    pub(crate) fn start(
        child: &mut UtilityProcess,
        writer: &Writer,
        lines: &broadcast::Sender<OutputLine>,
        tail_capacity: usize,
    ) -> Readers {
        let mut readers = Readers {
            tasks: JoinSet::new(),
            stdout: Arc::new(Mutex::new(Tail::new(tail_capacity))),
            stderr: Arc::new(Mutex::new(Tail::new(tail_capacity))),
        };
        if let Some(pipe) = child.take_stdout() {
            readers.tasks.spawn(drain(
                pipe,
                OutputStream::Stdout,
                writer.clone(),
                lines.clone(),
                Arc::clone(&readers.stdout),
            ));
        }
        if let Some(pipe) = child.take_stderr() {
            readers.tasks.spawn(drain(
                pipe,
                OutputStream::Stderr,
                writer.clone(),
                lines.clone(),
                Arc::clone(&readers.stderr),
            ));
        }
        readers
    }

    /// Waits up to [`EOF_GRACE`] for the pipes to reach their end, stops reading them, and
    /// returns their tails.
    pub(crate) async fn finish(mut self) -> OutputTail {
        let all_read = async { while self.tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(EOF_GRACE, all_read).await;
        self.tasks.abort_all();
        let take = |tail: &Mutex<Tail>| {
            let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            (tail.bytes.iter().copied().collect(), tail.cut)
        };
        let (stdout, stdout_cut) = take(&self.stdout);
        let (stderr, stderr_cut) = take(&self.stderr);
        OutputTail {
            stdout,
            stderr,
            stdout_cut,
            stderr_cut,
        }
    }
}

/// Reads one pipe to its end: lines to the subscribers, bytes to the tail.
async fn drain(
    mut pipe: impl AsyncRead + Unpin,
    stream: OutputStream,
    writer: Writer,
    lines: broadcast::Sender<OutputLine>,
    tail: Arc<Mutex<Tail>>,
) {
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut splitter = LineSplitter::new();
    let mut emit = |bytes: Vec<u8>, cut: bool| {
        // No subscriber is not an error: output is for whoever listens.
        if lines.receiver_count() > 0 {
            let _ = lines.send(OutputLine {
                service: writer.service.clone(),
                pid: writer.pid,
                restarts: writer.restarts,
                stream,
                bytes,
                cut,
            });
        }
    };
    loop {
        let n = match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tail.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(&buffer[..n]);
        splitter.feed(&buffer[..n], &mut emit);
    }
    splitter.finish(&mut emit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::new();
        let mut emit = |line: Vec<u8>, cut: bool| out.push((line, cut));
        for chunk in chunks {
            splitter.feed(chunk, &mut emit);
        }
        splitter.finish(&mut emit);
        out
    }

    #[test]
    fn lines_are_split_at_newlines_across_reads() {
        let lines = split(&[b"one\ntw", b"o\n\nthree"]);
        let expected: Vec<(Vec<u8>, bool)> = vec![
            (b"one".to_vec(), false),
            (b"two".to_vec(), false),
            (Vec::new(), false),
            (b"three".to_vec(), false),
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn a_line_longer_than_the_limit_arrives_in_marked_pieces() {
        let long = vec![b'x'; 2 * MAX_LINE + 10];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        let lines = split(&[&input[..100], &input[100..]]);
        let shape: Vec<(usize, bool)> = lines.iter().map(|(l, c)| (l.len(), *c)).collect();
        assert_eq!(
            shape,
            [(MAX_LINE, true), (MAX_LINE, true), (10, false), (4, false)]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_not_cut() {
        let mut input = vec![b'y'; MAX_LINE];
        input.push(b'\n');
        let lines = split(&[&input]);
        assert_eq!(lines, [(vec![b'y'; MAX_LINE], false)]);
    }

    #[test]
    fn the_tail_keeps_only_the_last_bytes() {
        let mut tail = Tail::new(8);
        tail.push(b"hello ");
        assert!(!tail.cut);
        tail.push(b"world");
        assert_eq!(tail.bytes.iter().copied().collect::<Vec<_>>(), b"lo world");
        assert!(tail.cut);
        tail.push(&[b'z'; 100]);
        assert_eq!(tail.bytes.len(), 8);
    }
}
