//! The crate's one error type, and the small types its variants carry.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong, on either side of a port.
///
/// Variants that describe a child carry its service name and pid, so that a log line says
/// which of many workers failed and how.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Occurs when [`fork`](crate::fork) cannot start the program: it does not exist, is not
    /// executable, the working directory does not exist, or the system is out of processes or
    /// descriptors. No child is left behind.
    #[error("cannot start {service_name} ({program}): {step}: {source}")]
    Spawn {
        /// The program as given to `fork`.
        program: PathBuf,
        /// The service name the child would have had.
        service_name: String,
        /// What was being done when it failed.
        step: SpawnStep,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },

    /// Occurs when [`parent_port`](crate::parent_port) is called in a process that was not
    /// started by [`fork`](crate::fork).
    #[error("this process was not started by utility_process::fork: {reason}")]
    NotAUtilityProcess {
        /// What is missing.
        reason: String,
    },

    /// Occurs when posting to a port whose other end is gone: the child has exited, the
    /// parent has died, or the port was closed.
    #[error("cannot post to {peer}: the port is closed")]
    Closed {
        /// Who the port led to: a service name and pid, or `"the parent"`.
        peer: String,
    },

    /// Occurs when posting to a port whose peer is not reading and whose send queue has
    /// reached its limit. Nothing was queued; the port stays usable.
    #[error("cannot post to {peer}: {queued} bytes are already waiting, the limit is {limit}")]
    QueueFull {
        /// Who the port leads to.
        peer: String,
        /// Bytes waiting to be written.
        queued: usize,
        /// The limit on waiting bytes.
        limit: usize,
    },

    /// Occurs when posting ports to a peer that is not reading, and the port's send queue
    /// already holds as many descriptors as a port may queue (1,012). The ports are closed.
    #[error("cannot post ports to {peer}: {queued} descriptors are already waiting, the limit is {limit}")]
    PortQueueFull {
        /// Who the port leads to.
        peer: String,
        /// Descriptors waiting to be written.
        queued: usize,
        /// The limit on waiting descriptors.
        limit: usize,
    },

    /// Occurs when a message is larger than the port's maximum message size. Nothing was sent.
    #[error("message of at least {size} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// How large the message is, at least: encoding stops as soon as it passes the
        /// maximum, so for a value this is the maximum plus one.
        size: u64,
        /// The largest size the port accepts.
        max: u64,
    },

    /// Occurs when a port is sent over its own other end, which could never deliver it.
    /// The port is closed.
    #[error("a port cannot be sent over its own other end")]
    PortOverItsPeer,

    /// Occurs when a message carries more ports than one message can (each takes one
    /// descriptor, two if it has unread messages; the kernel passes at most 253). The ports
    /// are closed.
    #[error("a message can carry at most {max} descriptors, this one needs {count}")]
    TooManyPorts {
        /// The descriptors needed.
        count: usize,
        /// The most one message carries.
        max: usize,
    },

    /// Occurs when a value cannot be encoded (its `Serialize` implementation failed).
    #[error("cannot encode the message")]
    Encode(#[source] utility_process_wire::Error),

    /// Occurs when [`Message::data`](crate::Message::data) cannot decode the message as the
    /// requested type. The port is unaffected.
    #[error("cannot decode the message")]
    Decode(#[source] utility_process_wire::Error),

    /// Occurs (as [`Event::Error`](crate::Event::Error)) when a child ends in a way nobody
    /// chose: on Unix, a signal its parent did not send (a segmentation fault, `abort()`); on
    /// Windows, an exception (an access violation, Rust's `abort`). A chosen exit code, even a
    /// non-zero one, is not a crash. The OS's own detail (the signal and core dump; the
    /// exception's status) is in `status`, through `unix::ExitStatusExt` or
    /// `windows::ExitStatusExt`.
    #[error("{service_name} (pid {pid}) crashed: {status}")]
    Crashed {
        /// The child's service name.
        service_name: String,
        /// The child's pid.
        pid: u32,
        /// How it ended.
        status: crate::ExitStatus,
    },

    /// Occurs (as [`Event::Error`](crate::Event::Error)) when a Rust child panicked and then
    /// ended abnormally (non-zero exit code, or a signal such as SIGABRT with `panic=abort`).
    #[error("{service_name} (pid {pid}) panicked: {panic}")]
    Panicked {
        /// The child's service name.
        service_name: String,
        /// The child's pid.
        pid: u32,
        /// The panic's message and location.
        panic: PanicInfo,
    },

    /// Occurs at [`fork`](crate::fork) when the program is a script (`.js`, `.mjs`, `.cjs`,
    /// `.py`) and what runs it cannot be found: the interpreter, or, for JavaScript, the
    /// `utility-process` npm package's bootstrap. `how_to_fix` says how to point at one.
    #[error("{service_name} ({}): cannot find {interpreter}: {how_to_fix}", program.display())]
    MissingInterpreter {
        /// The script.
        program: PathBuf,
        /// The service name the child would have had.
        service_name: String,
        /// What is missing (`"node"`, `"python3"`, the npm package's bootstrap).
        interpreter: &'static str,
        /// How to point the library at one.
        how_to_fix: &'static str,
    },

    /// Occurs (as [`Event::Error`](crate::Event::Error)) when a child's main work failed
    /// without a panic and the child then exited unsuccessfully: an entry point
    /// ([`init`](crate::init)) returned an error, or the program was started for an entry
    /// point it does not have.
    #[error("{service_name} (pid {pid}) failed: {message}")]
    EntryFailed {
        /// The child's service name.
        service_name: String,
        /// The child's pid.
        pid: u32,
        /// The error, as the child displayed it.
        message: String,
    },

    /// Occurs (as [`Event::Error`](crate::Event::Error)) when a child sends bytes that break
    /// the protocol. The parent discarded them, closed the port and killed the child.
    #[error("{service_name} (pid {pid}) broke the protocol and was killed: {violation}")]
    ProtocolViolation {
        /// The child's service name.
        service_name: String,
        /// The child's pid.
        pid: u32,
        /// What it did.
        #[source]
        violation: Violation,
    },

    /// Occurs at [`fork`](crate::fork) when the [`Limits`](crate::Limits) or the
    /// [`Sandbox`](crate::Sandbox) ask for something this machine cannot enforce, and they
    /// were not made best effort. No process was started.
    #[error(
        "cannot start {service_name} ({program}) confined as asked: this machine lacks {missing}"
    )]
    Unenforceable {
        /// The program as given to `fork`.
        program: PathBuf,
        /// The service name it would have had.
        service_name: String,
        /// The missing feature.
        missing: crate::sandbox::Missing,
    },

    /// Occurs (as [`Event::Error`](crate::Event::Error)) when a child ended because it
    /// reached one of its [`Limits`](crate::Limits): memory (an allocation failed and the
    /// child aborted), CPU time (SIGXCPU, or SIGKILL at the hard limit) or file size
    /// (SIGXFSZ).
    #[error("{service_name} (pid {pid}) reached its {limit} limit and ended")]
    LimitExceeded {
        /// The child's service name.
        service_name: String,
        /// The child's pid.
        pid: u32,
        /// Which limit.
        limit: crate::Limit,
    },

    /// Occurs (as [`Event::Error`](crate::Event::Error)) when a sandboxed child made a system
    /// call its sandbox denies. A child built with this library is not killed: the call
    /// failed with `EPERM` and the child goes on; each call is reported once. A program
    /// without the library's handler dies of SIGSYS, reported with `syscall: None`.
    #[error("{service_name} (pid {pid}) was denied {}", match syscall { Some(call) => call.to_string(), None => "a system call and was killed by SIGSYS".to_string() })]
    SandboxViolation {
        /// The child's service name.
        service_name: String,
        /// The child's pid.
        pid: u32,
        /// The call, when the child's handler could report it.
        syscall: Option<crate::sandbox::Syscall>,
    },

    /// Occurs (as [`Event::Error`](crate::Event::Error)) when a child that should be
    /// sandboxed is not: its library could not apply the sandbox's second stage (`errno` says
    /// why; the child exited without running its code), or it talked on its port without
    /// confirming it (a program not built with this library). The child was killed.
    ///
    /// This catches mistakes, not attacks: the confirmation is the child's word, and a hostile
    /// child can give it falsely. What the sandbox promises rests on the first stage, which
    /// the parent applies before `execve` and which binds every program.
    #[error("{service_name} (pid {pid}) did not apply its sandbox{}", match errno { Some(e) => format!(": {}", io::Error::from_raw_os_error(*e)), None => " (it does not link utility-process's sandbox)".to_string() })]
    SandboxNotApplied {
        /// The child's service name.
        service_name: String,
        /// The child's pid.
        pid: u32,
        /// Why the child's library failed, when it did.
        errno: Option<i32>,
    },

    /// Occurs when a system call the library depends on fails unexpectedly.
    #[error("{context}: {source}")]
    Io {
        /// What the library was doing.
        context: &'static str,
        /// The operating system's reason.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}

/// The step at which [`fork`](crate::fork) failed to start a program.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnStep {
    /// Looking the program up on `PATH`.
    Lookup,
    /// Turning the arguments and environment into C strings (one holds a NUL byte).
    Arguments,
    /// Creating the ports, pipes or the process itself.
    Fork,
    /// Giving the child its own process group.
    ProcessGroup,
    /// Arming the signal that kills the child with its parent.
    ParentDeathSignal,
    /// Laying out the child's descriptors.
    Descriptors,
    /// Changing to the working directory.
    Chdir(PathBuf),
    /// Applying its resource limits (`setrlimit`).
    Limits,
    /// Applying the first layers of its sandbox (no_new_privs, Landlock, seccomp; on Windows
    /// its AppContainer profile, its restricted token, its job's UI limits).
    Sandbox,
    /// Executing the program.
    Exec,
    /// Opening the descriptor that watches the new child: a pidfd on Linux, a kqueue with
    /// `EVFILT_PROC` on macOS.
    Pidfd,
}

impl fmt::Display for SpawnStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnStep::Lookup => f.write_str("looking the program up on PATH"),
            SpawnStep::Arguments => f.write_str("preparing its arguments and environment"),
            SpawnStep::Fork => f.write_str("creating the process"),
            SpawnStep::ProcessGroup => f.write_str("creating its process group"),
            SpawnStep::ParentDeathSignal => f.write_str("arming its parent-death signal"),
            SpawnStep::Descriptors => f.write_str("setting up its descriptors"),
            SpawnStep::Chdir(dir) => write!(f, "changing to the directory {}", dir.display()),
            SpawnStep::Limits => f.write_str("applying its resource limits"),
            SpawnStep::Sandbox => f.write_str("applying its sandbox"),
            SpawnStep::Exec => f.write_str("executing the program"),
            SpawnStep::Pidfd => f.write_str("opening a descriptor to watch it (pidfd or kqueue)"),
        }
    }
}

/// What a child did that broke the protocol (`docs/PROTOCOL.md`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// The bytes are not a valid frame: a length over the limit, an unknown kind, a malformed
    /// body.
    #[error(transparent)]
    Frame(#[from] utility_process_wire::Error),
    /// The first frame was not a `HELLO`.
    #[error("the first frame is not a HELLO")]
    MissingHello,
    /// A second `HELLO` arrived.
    #[error("a second HELLO")]
    DuplicateHello,
    /// A frame kind that this direction does not allow (a `PANIC` report from a parent).
    #[error("a {0} frame, which this side does not accept")]
    UnexpectedFrame(&'static str),
    /// Descriptors that do not match the messages: missing, unclaimed, truncated
    /// (`MSG_CTRUNC`), too many, or not the kind the message says.
    #[error("{0}")]
    Descriptors(&'static str),
    /// Reading the socket failed.
    #[error("reading the port failed: {0}")]
    Read(#[source] io::Error),
    /// It closed its port in the middle of a frame and went on living (a child that dies
    /// mid-send is not blamed: only one still alive after its kill grace period).
    #[error("it closed its port in the middle of a frame and did not exit")]
    CutShort,
    /// Its report pipe (through which a confined child's sandbox and limits report) broke
    /// the rules: more than a child's life of reports, or bytes that are no report.
    #[error("{0}")]
    Reports(&'static str),
}

/// A Rust child's panic: its message and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicInfo {
    /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
    pub message: String,
    /// Where the panic happened.
    pub location: Location,
    /// The name of the panicking thread, if it had one.
    pub thread: Option<String>,
}

impl fmt::Display for PanicInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' at {}", self.message, self.location)?;
        if let Some(thread) = &self.thread {
            write!(f, " in thread '{thread}'")?;
        }
        Ok(())
    }
}

/// A place in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: String,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

impl From<utility_process_wire::PanicReport> for PanicInfo {
    fn from(report: utility_process_wire::PanicReport) -> PanicInfo {
        PanicInfo {
            message: report.message,
            location: Location {
                file: report.file,
                line: report.line,
                column: report.column,
            },
            thread: report.thread,
        }
    }
}
