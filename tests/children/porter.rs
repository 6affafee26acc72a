//! Does what the parent asks with the ports it sends: echo on them, send them back, ping
//! through them, collect from them, or just hold them (see `PortCommand`).

use utility_process::{parent_port, MessagePort};
use utility_process_tests::{open_fds, PortCommand, PortReply};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let parent = parent_port().expect("started by fork");
    let mut held = Vec::new();
    while let Some(mut message) = parent.recv().await {
        let command: PortCommand = message.data().expect("a PortCommand");
        let mut ports = message.take_ports();
        match command {
            PortCommand::Echo => {
                for port in ports {
                    tokio::spawn(echo(port));
                }
            }
            PortCommand::Bounce => parent
                .post_message_with_ports(&"bounced", ports)
                .expect("parent is listening"),
            PortCommand::Ping { count } => {
                let port = ports.pop().expect("a port to ping through");
                for seq in 0..count {
                    port.post_message(&seq).expect("peer is open");
                    let answer = port.recv().await.expect("an answer");
                    assert_eq!(answer.data::<u64>().expect("a number"), seq);
                }
                parent
                    .post_message(&PortReply::Pinged { count })
                    .expect("parent is listening");
            }
            PortCommand::Collect { count } => {
                let port = ports.pop().expect("a port to collect from");
                let mut messages = Vec::new();
                while messages.len() < count {
                    match port.recv().await {
                        Some(message) => messages.push(message.into_bytes()),
                        None => break,
                    }
                }
                parent
                    .post_message(&PortReply::Received { messages })
                    .expect("parent is listening");
            }
            PortCommand::Hold => held.extend(ports),
            PortCommand::Fds => parent
                .post_message(&PortReply::Fds {
                    fds: open_fds(std::process::id()),
                })
                .expect("parent is listening"),
        }
    }
}

async fn echo(port: MessagePort) {
    while let Some(message) = port.recv().await {
        if port.post_bytes(message.bytes()).is_err() {
            break;
        }
    }
}
