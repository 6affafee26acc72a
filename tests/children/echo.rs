//! Replies to every message with the same bytes: the default test child.
//!
//! With `--blocking` it uses the blocking API instead of tokio.

use utility_process::parent_port;

fn main() {
    let port = parent_port().expect("started by fork");
    if std::env::args().any(|a| a == "--blocking") {
        while let Some(message) = port.recv_blocking() {
            port.post_bytes(message.bytes())
                .expect("parent is listening");
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        while let Some(message) = port.recv().await {
            port.post_bytes(message.bytes())
                .expect("parent is listening");
        }
    });
}
