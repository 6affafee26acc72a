//! Tries one thing per message from inside a macOS Seatbelt sandbox, and answers with what
//! happened (an `Attempt`): `"compute"`, `"status"`, `"read <path>"`, `"write <path>"`,
//! `"connect <host:port>"`, `"channel"` (a new `MessageChannel`, and a message across it),
//! `"spawn <program>"`, `"signal the parent"`. It is written for macOS; it builds everywhere
//! so that the workspace does, and any errno it reports is the OS's own.

use utility_process::{parent_port, MessageChannel};
use utility_process_tests::Attempt;

fn io(result: std::io::Result<()>) -> Attempt {
    match result {
        Ok(()) => Attempt::Succeeded,
        Err(e) => Attempt::Failed(e.raw_os_error().unwrap_or(-1)),
    }
}

fn attempt(what: &str) -> Attempt {
    let (verb, rest) = what.split_once(' ').unwrap_or((what, ""));
    match verb {
        "compute" => Attempt::Computed((1..=1_000_000u64).sum()),
        "status" => Attempt::Status(format!("{:?}", utility_process::sandbox::status())),
        "read" => io(std::fs::read(rest).map(drop)),
        "write" => io(std::fs::write(rest, b"written from the sandbox")),
        "connect" => io(std::net::TcpStream::connect(rest).map(drop)),
        "channel" => io((|| {
            let channel = MessageChannel::new().map_err(std::io::Error::other)?;
            channel
                .port1
                .post_message(&7u32)
                .map_err(std::io::Error::other)?;
            match channel.port2.recv_blocking() {
                Some(m) if m.data::<u32>().ok() == Some(7) => Ok(()),
                _ => Err(std::io::Error::other("the message did not cross")),
            }
        })()),
        "spawn" => io(std::process::Command::new(rest).status().and_then(|s| {
            s.success()
                .then_some(())
                .ok_or_else(|| std::io::Error::other(format!("{s}")))
        })),
        "signal" if rest == "the parent" => signal_parent(),
        _ => Attempt::Unknown(what.to_owned()),
    }
}

/// SIGCONT to the parent: harmless if it goes through (the parent is not stopped).
#[cfg(unix)]
fn signal_parent() -> Attempt {
    // SAFETY: getppid has no preconditions; kill sends a signal that changes nothing for a
    // running process.
    let ret = unsafe { libc::kill(libc::getppid(), libc::SIGCONT) };
    if ret == 0 {
        Attempt::Succeeded
    } else {
        Attempt::Failed(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    }
}

#[cfg(not(unix))]
fn signal_parent() -> Attempt {
    Attempt::Unknown("signal the parent".to_owned())
}

fn main() {
    let port = parent_port().expect("started by fork");
    while let Some(message) = port.recv_blocking() {
        let what: String = message.data().expect("a string");
        port.post_message(&attempt(&what))
            .expect("parent is listening");
    }
}
