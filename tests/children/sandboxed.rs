//! The Windows sandbox's test child: it tries what a sandbox must stop and reports what
//! happened, as a map of words (`BTreeMap<String, String>`), then echoes until its port
//! closes. Builds everywhere; the tests that start it are Windows's (`sandbox_windows.rs`).
//!
//! - `sandboxed marker PATH`: before anything else, creates the file PATH (a child that
//!   never ran leaves none), then reports `marker` (`ok` or `denied: …`).
//! - `sandboxed probe FILE PORT`: reports `status`, `app_container`, `low_integrity`,
//!   `ui_limits` (from `sandbox::status()`), `read` (opening FILE), `connect` (a TCP
//!   connection to 127.0.0.1:PORT), `channel` (a `MessageChannel` made in the child) and
//!   `spawn` (starting `cmd.exe /c exit 0`), each `ok` or the error.
//!
//! Then, for every message: the ports it carries each get the message `"pong"`, and the
//! message itself goes back.

use std::collections::BTreeMap;

use utility_process::parent_port;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut report = BTreeMap::new();
    match args.get(1).map(String::as_str) {
        Some("marker") => {
            let written = std::fs::write(&args[2], b"this child ran");
            report.insert("marker".to_owned(), outcome(written));
        }
        Some("probe") => {
            let status = utility_process::sandbox::status();
            report.insert("status".to_owned(), format!("{}", status.is_some()));
            let status = status.unwrap_or_default();
            report.insert("app_container".to_owned(), status.app_container.to_string());
            report.insert("low_integrity".to_owned(), status.low_integrity.to_string());
            report.insert("ui_limits".to_owned(), status.ui_limits.to_string());
            report.insert(
                "read".to_owned(),
                outcome(std::fs::File::open(&args[2]).map(drop)),
            );
            let address = format!("127.0.0.1:{}", args[3]);
            report.insert(
                "connect".to_owned(),
                outcome(std::net::TcpStream::connect(address).map(drop)),
            );
            // A port made here is a named pipe this child creates and opens itself.
            report.insert(
                "channel".to_owned(),
                outcome(
                    utility_process::MessageChannel::new()
                        .map(drop)
                        .map_err(std::io::Error::other),
                ),
            );
            report.insert(
                "spawn".to_owned(),
                outcome(
                    std::process::Command::new("cmd.exe")
                        .args(["/c", "exit", "0"])
                        .status()
                        .map(drop),
                ),
            );
        }
        other => panic!("unknown mode {other:?}"),
    }
    let port = parent_port().expect("started by fork");
    port.post_message(&report).expect("parent is listening");
    while let Some(mut message) = port.recv_blocking() {
        for peer in message.take_ports() {
            peer.post_message(&"pong")
                .expect("the port pushed into us works");
        }
        let echo: String = message.data().unwrap_or_default();
        port.post_message(&echo).expect("parent is listening");
    }
}

/// `ok`, or `denied: ` and the error.
fn outcome(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("denied: {e}"),
    }
}
