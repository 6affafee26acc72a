//! What the test children and the integration tests share: message types and helpers.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utility_process::{Error, Event, ExitStatus, Limit, UtilityProcess};

/// How long a test waits for an event before it fails instead of hanging.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A request the echo child answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub seq: u64,
    pub body: String,
}

/// The next event, or a panic naming the child if none comes within [`EVENT_TIMEOUT`].
pub async fn next_event(child: &mut UtilityProcess) -> Option<Event> {
    match tokio::time::timeout(EVENT_TIMEOUT, child.next_event()).await {
        Ok(event) => event,
        Err(_) => panic!(
            "no event from {} (pid {:?}) within {EVENT_TIMEOUT:?}",
            child.service_name(),
            child.pid()
        ),
    }
}

/// The child's next message, skipping its `Spawn`; anything else fails the test.
pub async fn next_message(child: &mut UtilityProcess) -> utility_process::Message {
    loop {
        match next_event(child).await {
            Some(Event::Message(message)) => return message,
            Some(Event::Spawn) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// What this process's standard stream `n` (0, 1 or 2) leads to: on Unix the target of
/// `/proc/self/fd/<n>` (or the error reading it), on Windows the kind of its standard handle
/// — `NUL`, `console`, `file`, `pipe`, `unknown` or `none`.
#[cfg(unix)]
pub fn std_stream(n: usize) -> String {
    std::fs::read_link(format!("/proc/self/fd/{n}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("error: {e}"))
}

/// What this process's standard stream `n` (0, 1 or 2) leads to: on Unix the target of
/// `/proc/self/fd/<n>` (or the error reading it), on Windows the kind of its standard handle
/// — `NUL`, `console`, `file`, `pipe`, `unknown` or `none`.
#[cfg(windows)]
pub fn std_stream(n: usize) -> String {
    use windows_sys::Win32::Storage::FileSystem::{
        GetFileType, FILE_TYPE_CHAR, FILE_TYPE_DISK, FILE_TYPE_PIPE,
    };
    use windows_sys::Win32::System::Console::{
        GetConsoleMode, GetStdHandle, STD_ERROR_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
    };
    let which = [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE][n];
    // SAFETY: queries of this process's standard handles, into locals.
    unsafe {
        let handle = GetStdHandle(which);
        if handle.is_null() || handle as isize == -1 {
            return "none".to_owned();
        }
        let mut mode = 0;
        match GetFileType(handle) {
            FILE_TYPE_CHAR if GetConsoleMode(handle, &mut mode) != 0 => "console",
            FILE_TYPE_CHAR => "NUL",
            FILE_TYPE_DISK => "file",
            FILE_TYPE_PIPE => "pipe",
            _ => "unknown",
        }
        .to_owned()
    }
}

/// Every event up to the end (`None`), each within [`EVENT_TIMEOUT`]; a child that never ends
/// its stream of events fails the test rather than filling memory.
pub async fn all_events(child: &mut UtilityProcess) -> Vec<Event> {
    let mut events = Vec::new();
    while let Some(event) = next_event(child).await {
        events.push(event);
        assert!(events.len() < 1000, "endless events: {events:?}");
    }
    events
}

/// Runs `child` to its end and checks that it was stopped for `limit`: exactly one error,
/// `LimitExceeded { limit }`, and an exit last; returns that exit's status.
pub async fn ended_by_limit(mut child: UtilityProcess, limit: Limit) -> ExitStatus {
    let events = all_events(&mut child).await;
    let reported: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Error(Error::LimitExceeded { limit, .. }) => Some(*limit),
            Event::Error(other) => panic!("another error: {other}"),
            _ => None,
        })
        .collect();
    assert_eq!(reported, vec![limit], "{events:?}");
    match events.last() {
        Some(Event::Exit(status)) => *status,
        other => panic!("the last event is not Exit: {other:?}"),
    }
}

/// Asks an echo child for an answer and waits for it: a bystander that must keep answering
/// while another child misbehaves.
pub async fn still_answers(echo: &mut UtilityProcess) {
    echo.post_bytes(b"still there?").expect("post");
    loop {
        match next_event(echo).await {
            Some(Event::Spawn) => {}
            Some(Event::Message(m)) => {
                assert_eq!(m.bytes(), b"still there?");
                return;
            }
            other => panic!("the bystander: {other:?}"),
        }
    }
}

#[cfg(unix)]
/// The descriptors open in process `pid`, from `/proc/<pid>/fd`.
pub fn open_fds(pid: u32) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

#[cfg(unix)]
/// Whether a process with this pid exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// What the `porter` child does with the ports the parent sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortCommand {
    /// Echo everything that arrives on the attached port back on it, until it closes.
    Echo,
    /// Send the attached ports straight back to the parent.
    Bounce,
    /// Send `count` numbered pings over the attached port, each after the answer to the
    /// previous one, then tell the parent `PortReply::Pinged`.
    Ping { count: u64 },
    /// Receive `count` messages on the attached port and report them to the parent in one
    /// `PortReply::Received`.
    Collect { count: usize },
    /// Keep the attached port without reading it, until the parent closes.
    Hold,
    /// Report this process's open descriptors.
    Fds,
    /// Report this process's descriptors with their flags, as `PortReply::FdFlags`.
    FdFlags,
    /// The first attached port is a link: post the other attached ports over it (in one
    /// message, `"forwarded"`), then drop the link.
    Forward,
    /// The attached port is a link: take the ports of every message that arrives on it and
    /// echo on each of them (as `Echo` does), until the link closes.
    EchoArrivals,
    /// Post `Numbered { seq, padding: "" }` for `seq` in `from..from + count` on the attached
    /// port, then drop it (which writes them all, then closes it).
    PostNumbers { from: u64, count: u64 },
    /// Receive `count` `Numbered` messages on the attached port (fewer if it closes first) and
    /// report their numbers to the parent in one `PortReply::Numbers`.
    CollectNumbers { count: usize },
    /// Drop the attached ports at once, then tell the parent `PortReply::Closed`.
    Close,
    /// Post one message of `len` bytes (`pattern(len)`) on the attached port, keep the port,
    /// and tell the parent `PortReply::Posted`.
    PostPattern { len: usize },
}

/// The bytes of a `PostPattern` message of `len` bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// What the `porter` child tells the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortReply {
    /// Every ping was answered, in order.
    Pinged { count: u64 },
    /// The messages received on a port, as raw bytes, in order.
    Received { messages: Vec<Vec<u8>> },
    /// Open descriptors.
    Fds { fds: Vec<i32> },
    /// Open descriptors and their flags.
    FdFlags { fds: Vec<FdFlags> },
    /// The numbers of the `Numbered` messages received on a port, in order.
    Numbers { numbers: Vec<u64> },
    /// This many attached ports were dropped.
    Closed { count: usize },
    /// The message was posted (and the port is kept).
    Posted,
}

/// A message that knows its place in a sequence, padded to any size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbered {
    pub seq: u64,
    pub padding: String,
}

/// One open descriptor of a process: what it is and its open flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdFlags {
    pub fd: i32,
    /// Where `/proc/<pid>/fd/<fd>` points, such as `socket:[1234]`.
    pub target: String,
    /// The `flags:` line of `/proc/<pid>/fdinfo/<fd>` (octal there), e.g. `O_CLOEXEC`.
    pub flags: u32,
}

#[cfg(unix)]
impl FdFlags {
    /// Whether the descriptor is closed on exec (`O_CLOEXEC`, octal 02000000, in its flags).
    pub fn is_cloexec(&self) -> bool {
        self.flags & libc::O_CLOEXEC as u32 != 0
    }
}

#[cfg(unix)]
/// The descriptors open in process `pid` with their targets and flags, from `/proc`.
/// Descriptors that close while they are being read are left out.
pub fn fd_flags(pid: u32) -> Vec<FdFlags> {
    open_fds(pid)
        .into_iter()
        .filter_map(|fd| {
            let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let flags = info
                .lines()
                .find_map(|line| line.strip_prefix("flags:"))
                .and_then(|octal| u32::from_str_radix(octal.trim(), 8).ok())?;
            Some(FdFlags {
                fd,
                target: target.display().to_string(),
                flags,
            })
        })
        .collect()
}

#[cfg(unix)]
/// How many descriptors this process has open.
pub fn fd_count() -> usize {
    open_fds(std::process::id()).len()
}

#[cfg(unix)]
/// This process's descriptors and what each one is, one a line.
pub fn describe_fds() -> String {
    open_fds(std::process::id())
        .into_iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map_or_else(|e| format!("({e})"), |t| t.display().to_string());
            format!("{fd} -> {target}\n")
        })
        .collect()
}

/// Whether a process with this pid exists and has not ended.
#[cfg(windows)]
pub fn is_alive(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    // SAFETY: OpenProcess takes integers; the handle it returns is checked, used for one
    // query into a local, and closed.
    unsafe {
        let process = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if process.is_null() {
            return false;
        }
        let mut code = 0u32;
        let ok = GetExitCodeProcess(process, &mut code) != 0;
        CloseHandle(process);
        ok && code == STILL_ACTIVE as u32
    }
}

/// Ends process `pid` at once, from outside (SIGKILL on Unix, `TerminateProcess` with exit
/// code 1 on Windows). Returns whether it was done. Use it only on a pid that cannot have been
/// reused: a child not yet reaped (Unix), or one whose handle someone still holds (Windows).
pub fn kill_pid(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) == 0 }
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::Foundation::CloseHandle;
        use windows_sys::Win32::System::Threading::{
            OpenProcess, TerminateProcess, PROCESS_TERMINATE,
        };
        // SAFETY: OpenProcess takes integers; the handle it returns is checked, used once and
        // closed.
        unsafe {
            let process = OpenProcess(PROCESS_TERMINATE, 0, pid);
            if process.is_null() {
                return false;
            }
            let done = TerminateProcess(process, 1) != 0;
            CloseHandle(process);
            done
        }
    }
}

/// The processes whose parent is `pid` (on Windows: that `pid` started, by the snapshot's
/// parent pid), with their program names.
#[cfg(windows)]
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    use windows_sys::Win32::Foundation::{CloseHandle, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W,
        TH32CS_SNAPPROCESS,
    };
    let mut children = Vec::new();
    // SAFETY: the snapshot handle is checked and closed; each entry is a local whose dwSize
    // is set as the API asks, and only read after a call that filled it succeeded.
    unsafe {
        let snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
        if snapshot == INVALID_HANDLE_VALUE {
            return children;
        }
        let mut entry: PROCESSENTRY32W = std::mem::zeroed();
        entry.dwSize = std::mem::size_of::<PROCESSENTRY32W>() as u32;
        let mut more = Process32FirstW(snapshot, &mut entry) != 0;
        while more {
            if entry.th32ParentProcessID == pid && entry.th32ProcessID != pid {
                let len = entry.szExeFile.iter().position(|&c| c == 0).unwrap_or(0);
                let name = String::from_utf16_lossy(&entry.szExeFile[..len]);
                children.push((entry.th32ProcessID, name));
            }
            more = Process32NextW(snapshot, &mut entry) != 0;
        }
        CloseHandle(snapshot);
    }
    children
}

/// How many handles this process has open (`GetProcessHandleCount`): what Windows has for
/// [`fd_count`] on Unix.
#[cfg(windows)]
pub fn fd_count() -> usize {
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessHandleCount};
    let mut count = 0u32;
    // SAFETY: the pseudo-handle of this process and a local to write the count into.
    let ok = unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut count) };
    assert_ne!(
        ok,
        0,
        "GetProcessHandleCount: {}",
        std::io::Error::last_os_error()
    );
    count as usize
}

/// This process's handle count: Windows cannot list them by name.
#[cfg(windows)]
pub fn describe_fds() -> String {
    format!("{} handles (not listed on Windows)\n", fd_count())
}

/// Whether `status` is how a child ends after [`UtilityProcess::kill`]: on Unix by a signal
/// (SIGTERM, or SIGKILL after the grace period); on Windows, where `kill` asks through the
/// port, by returning once its port closed (code 0) or by its job's termination after the
/// grace period (code 1).
pub fn ended_by_kill(status: &utility_process::ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use utility_process::unix::ExitStatusExt as _;
        status.signal().is_some()
    }
    #[cfg(windows)]
    {
        matches!(status.code(), Some(0 | 1))
    }
}

/// Stops process `pid` (SIGSTOP on Unix, `NtSuspendProcess` on Windows) until
/// [`continue_process`]: it runs no code, so reads nothing from its port.
pub fn stop_process(pid: u32) {
    #[cfg(unix)]
    // SAFETY: kill has no memory effects; the caller names its own live child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGSTOP);
    }
    #[cfg(windows)]
    nt_process_call(pid, c"NtSuspendProcess");
}

/// Lets a process stopped by [`stop_process`] run again.
pub fn continue_process(pid: u32) {
    #[cfg(unix)]
    // SAFETY: as in `stop_process`.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGCONT);
    }
    #[cfg(windows)]
    nt_process_call(pid, c"NtResumeProcess");
}

/// Calls ntdll's `NtSuspendProcess` or `NtResumeProcess` (`NTSTATUS f(HANDLE)`) on `pid`.
#[cfg(windows)]
fn nt_process_call(pid: u32, name: &std::ffi::CStr) {
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    use windows_sys::Win32::System::Threading::{OpenProcess, PROCESS_SUSPEND_RESUME};
    type NtProcessCall = unsafe extern "system" fn(*mut std::ffi::c_void) -> i32;
    // SAFETY: ntdll is loaded in every process and exports both functions with the signature
    // `NtProcessCall` (documented by their use in the Windows driver kit); the process handle
    // is checked, used once and closed.
    unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        let call = GetProcAddress(ntdll, name.as_ptr().cast()).expect("ntdll exports it");
        let call: NtProcessCall = std::mem::transmute(call);
        let process = OpenProcess(PROCESS_SUSPEND_RESUME, 0, pid);
        assert!(
            !process.is_null(),
            "OpenProcess({pid}): {}",
            std::io::Error::last_os_error()
        );
        let status = call(process);
        CloseHandle(process);
        assert!(status >= 0, "{name:?}({pid}): NTSTATUS {status:#x}");
    }
}

/// Whether this process runs under Wine (its ntdll exports `wine_get_version`); always
/// `false` off Windows.
pub fn under_wine() -> bool {
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
        // SAFETY: both names are NUL-terminated literals; ntdll is loaded in every process,
        // and the address returned is only compared with null, never called.
        unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }
    #[cfg(not(windows))]
    {
        false
    }
}

/// For a test Wine cannot run: under Wine, prints `skipped: TEST under Wine because WHY` and
/// returns `true` (the test then returns); elsewhere, including real Windows, `false`.
pub fn skip_under_wine(test: &str, why: &str) -> bool {
    if under_wine() {
        eprintln!("skipped: {test} under Wine because {why}");
        true
    } else {
        false
    }
}

/// The environment variable naming the one test a re-executed test binary should run.
const ISOLATED_TEST: &str = "UTILITY_PROCESS_ISOLATED_TEST";

/// Runs `body` in a process of its own, for a test that counts this process's descriptors or
/// children and so must not share the process with tests running in other threads: the test
/// binary runs again with only the test `name` of `module` (pass `module_path!()`) selected,
/// and there `body` runs on a current-thread runtime. Fails if that run fails or does not run
/// exactly one test.
pub fn in_own_process<F, Fut>(module: &str, name: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let module = module.split_once("::").map_or(module, |(_, module)| module);
    let test = format!("{module}::{name}");
    if std::env::var_os(ISOLATED_TEST).as_deref() == Some(OsStr::new(&test)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(body());
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        // `--include-ignored`: an ignored test, run on purpose, runs in its own process too.
        .args([
            test.as_str(),
            "--exact",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(ISOLATED_TEST, &test)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} failed in its own process ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// What the `inspect` child sees of itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// `argv[0]`.
    pub argv0: String,
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// The whole environment, after `parent_port()` removed the library's variables.
    pub env: BTreeMap<String, String>,
    /// `/proc/self/comm`, without its newline; on Windows the startup title (`lpTitle`).
    pub comm: String,
    /// `ParentPort::service_name()`.
    pub service_name: String,
    /// `std::process::id()`.
    pub pid: u32,
    /// Whether a read of stdin returns end-of-file at once.
    pub stdin_eof: bool,
    /// Where descriptors 0, 1 and 2 lead (`readlink /proc/self/fd/N`); on Windows what the
    /// standard handles are (`NUL`, `console`, `file`, `pipe`).
    pub fds: Vec<String>,
}

/// What `inspect --output` did.
#[derive(Debug, Serialize, Deserialize)]
pub struct Written {
    /// The error writing stdout, if any.
    pub stdout_error: Option<String>,
    /// The error writing stderr, if any.
    pub stderr_error: Option<String>,
    /// Where descriptors 0, 1 and 2 lead.
    pub fds: Vec<String>,
}

/// What the parent asks the `buffers` child to do with the shared buffers it sends.
#[derive(Debug, Serialize, Deserialize)]
pub enum Ask {
    /// Report the length, read-only flag and byte sum of each attached buffer.
    Inspect,
    /// Fill each attached (writable) buffer with `byte` and send them back.
    FillAndReturn { byte: u8 },
    /// Make a frozen buffer of `len` bytes of `byte` and send it.
    Make { len: usize, byte: u8 },
}

/// What the `buffers` child reports about one buffer.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub len: usize,
    pub read_only: bool,
    pub sum: u64,
}

/// What the `escape` child got when it tried a way out of its sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Attempt {
    /// The call went through.
    Succeeded,
    /// The call failed with this errno.
    Failed(i32),
    /// A computation's result: the child still works.
    Computed(u64),
    /// The sweep: the numbers of the calls that were not denied.
    Swept(Vec<u32>),
    /// `sandbox::status()`, as `Debug` text.
    Status(String),
    /// The child does not know this attempt.
    Unknown(String),
}

/// Hostile MessagePack payloads, each sent by the `hostile bad-payloads` child in a
/// well-formed `MESSAGE`, with what it is. None of them decodes as an [`Any`] except
/// `"wrong type"`, a string, which fails as a number.
pub fn hostile_payloads() -> Vec<(&'static str, Vec<u8>)> {
    // One-element arrays nested a million levels deep, around a nil.
    let mut deep = vec![0x91; 1_000_000];
    deep.push(0xc0);
    vec![
        ("nesting 10^6 deep", deep),
        // A str32 announcing 0xFFFFFFFF bytes, with four present.
        (
            "str32 of 2^32-1 bytes",
            vec![0xdb, 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c', b'd'],
        ),
        (
            "bin32 of 2^32-1 bytes",
            vec![0xc6, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        ),
        (
            "array32 of 2^32-1 elements",
            vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0],
        ),
        (
            "map32 of 2^32-1 entries",
            vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0],
        ),
        (
            "ext32 of 2^32-1 bytes",
            vec![0xc9, 0xff, 0xff, 0xff, 0xff, 1, 2],
        ),
        ("bad UTF-8", vec![0xa3, 0xff, 0xfe, 0xfd]),
        ("wrong type", vec![0xa3, b'a', b'b', b'c']),
        ("the reserved marker 0xc1", vec![0xc1]),
        ("trailing bytes", vec![0xc0, 0xc0]),
        ("empty", vec![]),
    ]
}

/// Any MessagePack value, decoded through `deserialize_any`: what a receiver that accepts
/// anything (a `serde_json::Value`-like type) would decode into. Recursive, so nesting
/// reaches the codec's depth limit.
#[derive(Debug, Clone, PartialEq)]
pub enum Any {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Array(Vec<Any>),
    Map(Vec<(Any, Any)>),
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Any, D::Error> {
        deserializer.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> serde::de::Visitor<'de> for AnyVisitor {
    type Value = Any;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any MessagePack value")
    }
    fn visit_unit<E>(self) -> Result<Any, E> {
        Ok(Any::Nil)
    }
    fn visit_none<E>(self) -> Result<Any, E> {
        Ok(Any::Nil)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Any, D::Error> {
        Any::deserialize(d)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Any, D::Error> {
        Any::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Any, E> {
        Ok(Any::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Any, E> {
        Ok(Any::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Any, E> {
        Ok(Any::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Any, E> {
        Ok(Any::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Any, E> {
        Ok(Any::Str(v.to_owned()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Any, E> {
        Ok(Any::Bytes(v.to_vec()))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
        // Grows as elements arrive: the announced length is not trusted.
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Any::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Any::Map(entries))
    }
}

#[cfg(unix)]
/// A line of `/proc/self/status` in kibibytes (`VmRSS`, `VmHWM`, ...), or a count
/// (`Threads`).
pub fn proc_status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[cfg(unix)]
/// This process's children that are zombies (ended, not reaped), as pids.
pub fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let mut zombies = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{me}/task")).expect("/proc/self/task");
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            if state == Some("Z") {
                zombies.push(pid);
            }
        }
    }
    zombies
}

/// The README's examples, compiled (and, unless marked `no_run`, run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The Python interpreter, or `None` after printing why `test` skips what needs it.
pub fn python_or_skip(test: &str) -> Option<String> {
    match python() {
        Ok(python) => Some(python),
        Err(why) => {
            eprintln!("{test}: what needs Python is skipped: {why}");
            None
        }
    }
}

/// Bytes that travel as MessagePack bin (a JS `Buffer`, Python `bytes`), as
/// `serde_bytes::ByteBuf` writes them, not as an array of integers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin(pub Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bin;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// The Python interpreter that tests run their Python children under (its real path, not a
/// shell shim in front of it), or why none can be used here: no `python3` on `PATH`, or one
/// that this user cannot run, or child scripts this user cannot read (the unprivileged re-run
/// of the sandbox tests, in a checkout closed to others).
pub fn python() -> Result<String, String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .map_err(|e| format!("python3 does not start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python3 fails: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/children/echo.py");
    std::fs::File::open(script).map_err(|e| format!("cannot read {script}: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(target_os = "linux")]
/// Makes this process's kernel look as if it lacked a feature: from now on, system call `nr`
/// (when `arg0` is given, only with that first argument) fails with `errno`, in this process
/// and in every process it starts. For tests of what the library does on older kernels; use
/// it only in a process of the test's own ([`in_own_process`]): it cannot be undone.
pub fn pretend_the_kernel_lacks(nr: u32, arg0: Option<u32>, errno: i32) {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let fail = libc::SECCOMP_RET_ERRNO | errno as u32;
    // nr at offset 0, the low half of argument 0 at offset 16 of `struct seccomp_data`.
    let mut program = vec![insn(LD_W_ABS, 0, 0, 0)];
    match arg0 {
        None => program.extend([insn(JEQ, 0, 1, nr), insn(RET, 0, 0, fail)]),
        Some(arg) => program.extend([
            insn(JEQ, 0, 3, nr),
            insn(LD_W_ABS, 0, 0, 16),
            insn(JEQ, 0, 1, arg),
            insn(RET, 0, 0, fail),
        ]),
    }
    program.push(insn(RET, 0, 0, libc::SECCOMP_RET_ALLOW));
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: prctl with integer arguments; seccomp reads `fprog`, which points into
    // `program`, both alive for the call (the kernel copies the program).
    let installed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            ) == 0
    };
    assert!(
        installed,
        "install the filter: {}",
        std::io::Error::last_os_error()
    );
}

/// Waits, on a supervisor's event stream, for a child's crash with exit code `code` and the
/// next life's `Ready`; returns that life's pid. Fails if a heartbeat goes unanswered on the
/// way, or nothing comes within [`EVENT_TIMEOUT`].
pub async fn next_life_after_exit(
    events: &mut utility_process_supervisor::Events,
    code: i32,
) -> u32 {
    use utility_process_supervisor::{ExitReason, SupervisorEvent};
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(EVENT_TIMEOUT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no restart; events: {seen:#?}"))
            .expect("the supervisor is running");
        match &event {
            SupervisorEvent::HeartbeatMissed { .. } => {
                panic!("a heartbeat went unanswered: {event:?}")
            }
            SupervisorEvent::Exited { reason, .. }
                if !seen
                    .iter()
                    .any(|e| matches!(e, SupervisorEvent::Exited { .. })) =>
            {
                assert!(
                    matches!(reason, ExitReason::Exited { status, .. } if status.code() == Some(code)),
                    "{reason:?}"
                );
            }
            SupervisorEvent::Ready {
                pid, restarts: 1, ..
            } => return *pid,
            _ => {}
        }
        seen.push(event);
    }
}
