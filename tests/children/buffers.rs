//! Works with the shared buffers the parent sends: reports what it sees in them, writes into
//! writable ones and sends them back, or makes one of its own.

use utility_process::{parent_port, SharedBuffer, Transferable};
use utility_process_tests::{Ask, Seen};

fn main() {
    let port = parent_port().expect("started by fork");
    while let Some(mut message) = port.recv_blocking() {
        let ask: Ask = message.data().expect("an Ask");
        let buffers = message.take_buffers();
        match ask {
            Ask::Inspect => {
                let seen: Vec<Seen> = buffers
                    .iter()
                    .map(|b| Seen {
                        len: b.len(),
                        read_only: b.is_read_only(),
                        sum: b.iter().map(|&x| u64::from(x)).sum(),
                    })
                    .collect();
                port.post_message(&seen).expect("parent is listening");
            }
            Ask::FillAndReturn { byte } => {
                let mut back = Vec::new();
                for mut buffer in buffers {
                    if let Some(bytes) = buffer.as_mut_slice() {
                        bytes.fill(byte);
                    }
                    back.push(Transferable::Buffer(buffer));
                }
                port.post_message_with_transfer(&"filled", back)
                    .expect("parent is listening");
            }
            Ask::Make { len, byte } => {
                let mut buffer = SharedBuffer::new(len).expect("memory");
                buffer.as_mut_slice().expect("writable").fill(byte);
                let frozen = buffer.freeze().expect("sealed");
                port.post_message_with_transfer(&"made", vec![frozen.into()])
                    .expect("parent is listening");
            }
        }
    }
}
