//! Describes itself to its parent: the test child for stdio, environment, names and queueing.
//!
//! - `inspect [ARG...]` (any first argument but the ones below): connects with `parent_port()`,
//!   posts one [`Report`] (argv, cwd, environment, process name, stdin, descriptors 0–2),
//!   then reads until the parent closes the port and exits 0.
//! - `inspect --output OUT ERR`: writes the bytes of OUT to stdout and ERR to stderr, exactly
//!   (no newline added), posts one [`Written`] saying whether the writes succeeded, and exits.
//! - `inspect --spew N`: writes N bytes of the pattern `i % 251` to stdout and exits.
//! - `inspect --never-read`: connects, then sleeps forever without ever reading its port.
//!

use std::ffi::OsString;
use std::io::{Read, Write};

use utility_process::parent_port;
use utility_process_tests::{Report, Written};

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("--output") => output(&args[2], &args[3]),
        Some("--spew") => spew(args[2].to_str().and_then(|n| n.parse().ok()).expect("N")),
        Some("--never-read") => never_read(),
        _ => report(&args),
    }
}

fn report(args: &[OsString]) {
    let port = parent_port().expect("started by fork");
    let lossy = |s: &OsString| s.to_string_lossy().into_owned();
    let report = Report {
        argv0: args.first().map(lossy).unwrap_or_default(),
        args: args.iter().skip(1).map(lossy).collect(),
        cwd: std::env::current_dir()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("error: {e}")),
        env: std::env::vars_os()
            .map(|(k, v)| (lossy(&k), lossy(&v)))
            .collect(),
        comm: process_name(),
        service_name: port.service_name().to_owned(),
        pid: std::process::id(),
        stdin_eof: stdin_is_at_eof(),
        fds: std_fds(),
    };
    port.post_message(&report).expect("parent is listening");
    while port.recv_blocking().is_some() {}
}

fn output(out: &OsString, err: &OsString) {
    let port = parent_port().expect("started by fork");
    let write = |stream: &mut dyn Write, bytes: &[u8]| {
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .err()
            .map(|e| e.to_string())
    };
    let written = Written {
        stdout_error: write(&mut std::io::stdout().lock(), out.as_encoded_bytes()),
        stderr_error: write(&mut std::io::stderr().lock(), err.as_encoded_bytes()),
        fds: std_fds(),
    };
    port.post_message(&written).expect("parent is listening");
}

fn spew(len: usize) {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&bytes).expect("stdout is writable");
    stdout.flush().expect("stdout is writable");
}

fn never_read() {
    let _port = parent_port().expect("started by fork");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// The name the process shows: `/proc/self/comm` on Linux, the startup title
/// (`STARTUPINFOW.lpTitle`) on Windows.
#[cfg(unix)]
fn process_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|c| c.trim_end_matches('\n').to_owned())
        .unwrap_or_else(|e| format!("error: {e}"))
}

#[cfg(windows)]
fn process_name() -> String {
    use windows_sys::Win32::System::Threading::{GetStartupInfoW, STARTUPINFOW};
    // SAFETY: GetStartupInfoW fills the local; lpTitle, when not null, points to a
    // NUL-terminated string the process keeps for its whole life.
    unsafe {
        let mut info: STARTUPINFOW = std::mem::zeroed();
        info.cb = std::mem::size_of::<STARTUPINFOW>() as u32;
        GetStartupInfoW(&mut info);
        if info.lpTitle.is_null() {
            return String::new();
        }
        let len = (0..).take_while(|&i| *info.lpTitle.add(i) != 0).count();
        String::from_utf16_lossy(std::slice::from_raw_parts(info.lpTitle, len))
    }
}

/// Whether stdin is readable within a second and then reads end-of-file (so a stdin that is
/// not `/dev/null` makes the report say `false` instead of hanging the child).
#[cfg(unix)]
fn stdin_is_at_eof() -> bool {
    let mut poll = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `poll` is one valid pollfd, and the count says one.
    let ready = unsafe { libc::poll(&mut poll, 1, 1000) };
    if ready != 1 {
        return false;
    }
    matches!(std::io::stdin().lock().read(&mut [0u8; 16]), Ok(0))
}

#[cfg(windows)]
fn stdin_is_at_eof() -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(matches!(
            std::io::stdin().lock().read(&mut [0u8; 16]),
            Ok(0)
        ));
    });
    rx.recv_timeout(std::time::Duration::from_secs(1))
        .unwrap_or(false)
}

/// What the three standard streams lead to (see `utility_process_tests::std_stream`).
fn std_fds() -> Vec<String> {
    (0..3).map(utility_process_tests::std_stream).collect()
}
