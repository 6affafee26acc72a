//! Does what the parent asks with the ports it sends: echo on them, send them back, ping
//! through them, collect from them, forward them, post on them, close them, or just hold
//! them (see `PortCommand`). It can also report its own descriptors.

use utility_process::{parent_port, MessagePort};
#[cfg(unix)]
use utility_process_tests::{fd_flags, open_fds};
use utility_process_tests::{pattern, Numbered, PortCommand, PortReply};

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
            #[cfg(windows)]
            PortCommand::Fds | PortCommand::FdFlags => panic!("descriptors are Unix's"),
            #[cfg(unix)]
            PortCommand::Fds => parent
                .post_message(&PortReply::Fds {
                    fds: open_fds(std::process::id()),
                })
                .expect("parent is listening"),
            #[cfg(unix)]
            PortCommand::FdFlags => parent
                .post_message(&PortReply::FdFlags {
                    fds: fd_flags(std::process::id()),
                })
                .expect("parent is listening"),
            PortCommand::Forward => {
                assert!(ports.len() >= 2, "a link and a port to forward");
                let link = ports.remove(0);
                link.post_message_with_ports(&"forwarded", ports)
                    .expect("the link is open");
            }
            PortCommand::EchoArrivals => {
                let link = ports.pop().expect("a link");
                tokio::spawn(async move {
                    while let Some(mut arrival) = link.recv().await {
                        for port in arrival.take_ports() {
                            tokio::spawn(echo(port));
                        }
                    }
                });
            }
            PortCommand::PostNumbers { from, count } => {
                let port = ports.pop().expect("a port to post on");
                for seq in from..from + count {
                    port.post_message(&Numbered {
                        seq,
                        padding: String::new(),
                    })
                    .expect("peer is open");
                }
            }
            PortCommand::CollectNumbers { count } => {
                let port = ports.pop().expect("a port to collect from");
                let mut numbers = Vec::with_capacity(count.min(1 << 16));
                while numbers.len() < count {
                    match port.recv().await {
                        Some(message) => {
                            numbers.push(message.data::<Numbered>().expect("a Numbered").seq)
                        }
                        None => break,
                    }
                }
                parent
                    .post_message(&PortReply::Numbers { numbers })
                    .expect("parent is listening");
            }
            PortCommand::PostPattern { len } => {
                let port = ports.pop().expect("a port to post on");
                port.post_bytes(&pattern(len)).expect("peer is open");
                held.push(port);
                parent
                    .post_message(&PortReply::Posted)
                    .expect("parent is listening");
            }
            PortCommand::Close => {
                let count = ports.len();
                drop(ports);
                parent
                    .post_message(&PortReply::Closed { count })
                    .expect("parent is listening");
            }
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
