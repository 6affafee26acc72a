//! A hostile utility process: it speaks the wire protocol (`docs/PROTOCOL.md`) by hand on
//! descriptor 3 and breaks it in the way `argv[1]` names. Every mode but `no-hello`,
//! `short-hello`, `bad-magic`, `bad-flags` and `bad-version` first reads the parent's `HELLO`
//! and answers with a correct one. Unless the mode says otherwise it then waits, without
//! reading, to be killed.
//!
//! | mode | what it sends after the handshake |
//! | --- | --- |
//! | `huge-length` | a length prefix of `0xFFFFFFFF` |
//! | `max-plus-one` | a length prefix of the parent's `max_frame_len` + 1 |
//! | `zero-length` | a length prefix of 0 (smaller than a header: no kind byte) |
//! | `empty-message` | a `MESSAGE` with no body (not even the attachment count) |
//! | `unknown-kind` | a frame of kind `0x7f` |
//! | `no-hello` | a `MESSAGE` instead of its `HELLO` |
//! | `second-hello` | a second `HELLO` |
//! | `short-hello` / `bad-magic` / `bad-flags` / `bad-version` | a malformed `HELLO` instead of its own |
//! | `truncated-attachments` | a `MESSAGE` announcing 5 attachments with room for none |
//! | `unknown-attachment` | a `MESSAGE` with an attachment of kind `0x09` |
//! | `too-many-attachments` | a `MESSAGE` listing 254 ports (more than `SCM_MAX_FD`) |
//! | `bad-panic` | a `PANIC` whose body is not MessagePack |
//! | `panic-trailing-bytes` | a correct `PANIC` report with a byte after it |
//! | `payload-over-limit` | a `MESSAGE` whose frame fits `max_frame_len` but whose payload is over the message limit (`max_frame_len` − 4096) |
//! | `fds-without-attachment` | a `MESSAGE` without attachments, with a descriptor on its first byte |
//! | `fds-without-attachment-then-message` | as above, then a correct `MESSAGE` |
//! | `more-fds-than-declared` | a `MESSAGE` announcing 1 port, with 2 descriptors |
//! | `fewer-fds-than-declared` | a `MESSAGE` announcing 2 ports, with 1 descriptor |
//! | `fds-on-a-later-byte` | a `MESSAGE` announcing 1 port whose descriptor comes with its 4th byte, once the parent has read the first 3 |
//! | `port-is-a-pipe` | a `MESSAGE` announcing 1 port whose descriptor is a pipe |
//! | `port-is-a-datagram-socket` | … a Unix datagram socket |
//! | `port-is-a-seqpacket-socket` | … a Unix seqpacket socket |
//! | `port-is-a-file` | … a regular file (`/dev/null`) |
//! | `many-fds N` | a `MESSAGE` announcing N ports (at most 253), with N stream sockets (for a receiver short of descriptors: `MSG_CTRUNC`) |
//! | `fd-flood` | the first bytes of a large `MESSAGE`, one byte per `sendmsg`, each with 253 descriptors |
//! | `endless-prefix` | a `MESSAGE` carrying a port with a prefix (attachment `0x02`) whose prefix socket never ends: the child writes 64 KiB of zeros into it every 10 ms, for ever |
//! | `port-then-garbage` | a correct `MESSAGE` carrying a port, then a length prefix of `0xFFFFFFFF` on that port; then answers `"pong"` on the parent port as `bad-payloads` does |
//! | `port-is-a-listening-socket` | a `MESSAGE` carrying a "port" that is a listening Unix stream socket (the right type, but connected to nothing); then answers `"pong"` |
//! | `garbage-then-exit` | a length prefix of `0xFFFFFFFF` and some bytes, then exits with code 0 |
//! | `truncated-then-exit` | the first half of a `MESSAGE`, then exits with code 0 |
//! | `truncated-then-shutdown` | the first half of a `MESSAGE`, then shuts its end of the port down for writing (the parent reads end-of-file) and sleeps |
//! | `dies-mid-large-message` | 8 MiB of a 16 MiB `MESSAGE`, then kills itself (SIGKILL) |
//! | `bad-payloads` | well-formed `MESSAGE`s whose MessagePack payloads are hostile (`utility_process_tests::hostile_payloads`), then the string `"still here"`; then answers each message from the parent with the string `"pong"` until the port closes |
//! | `flood` | correct 4 KiB `MESSAGE`s (raw bytes: a little-endian `u64` sequence number, then zeros), as fast as the socket takes them, forever |
//! | `stdout-flood` | (through the library) writes to stdout without end on a thread, and echoes every message on the port |
//! | `post-until-full` | (through the library) posts 64 KiB raw messages (a little-endian `u64` sequence number, then zeros) without waiting until `post_bytes` fails with `QueueFull`, then writes `full <count> <queued> <limit>` and a newline to stdout, then `send`s 16 more (which wait for room) and the string `"done"`; then waits for the port to close |
//! | `flood-reports` | (needs a memory limit) writes out-of-memory reports into its report pipe (descriptor 4) without end |
//! | `impossible-report` | (needs limits without a sandbox) writes a denied-call report into its report pipe |
//! | `garble-reports` | (needs limits or a sandbox) writes a byte that starts no report into its report pipe |
//! | `sleep` | nothing more: a correct handshake, then waits to be killed |

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::Duration;

use utility_process_tests::hostile_payloads;

/// Frame kinds (`docs/PROTOCOL.md` section 3).
const HELLO: u8 = 0x01;
const MESSAGE: u8 = 0x02;
const PANIC: u8 = 0x03;
/// The attachment kind of a port.
const PORT: u8 = 0x01;

pub fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    if mode == "stdout-flood" {
        stdout_flood();
    }
    if mode == "post-until-full" {
        post_until_full();
    }
    // SAFETY: descriptor 3 is the parent port that `fork` gave this process (see
    // docs/PROTOCOL.md, section 1); nothing else in this program owns or closes it.
    let mut port = unsafe { UnixStream::from_raw_fd(3) };
    let handshake_modes = [
        "no-hello",
        "short-hello",
        "bad-magic",
        "bad-flags",
        "bad-version",
    ];
    let max_frame_len = read_hello(&mut port);
    if !handshake_modes.contains(&mode.as_str()) {
        send(&mut port, &hello_frame(max_frame_len));
    }
    match mode.as_str() {
        "huge-length" => send(&mut port, &[0xff, 0xff, 0xff, 0xff, MESSAGE, 0]),
        "max-plus-one" => {
            let mut bytes = (max_frame_len + 1).to_le_bytes().to_vec();
            bytes.extend_from_slice(&[MESSAGE, 0, 1, 2, 3]);
            send(&mut port, &bytes);
        }
        "zero-length" => send(&mut port, &[0, 0, 0, 0, MESSAGE, 0, 0xc0]),
        "empty-message" => send(&mut port, &frame(MESSAGE, &[])),
        "unknown-kind" => send(&mut port, &frame(0x7f, b"what")),
        "no-hello" => send(&mut port, &message(&[0xa2, b'h', b'i'])),
        "second-hello" => send(&mut port, &hello_frame(max_frame_len)),
        "short-hello" => send(&mut port, &frame(HELLO, &hello_body(max_frame_len)[..11])),
        "bad-magic" => {
            let mut body = hello_body(max_frame_len);
            body[..4].copy_from_slice(b"EVIL");
            send(&mut port, &frame(HELLO, &body));
        }
        "bad-flags" => {
            let mut body = hello_body(max_frame_len);
            body[7] = 0x80; // a flag no version defines (bit 0 of byte 6 is SANDBOXED)
            send(&mut port, &frame(HELLO, &body));
        }
        "bad-version" => {
            let mut body = hello_body(max_frame_len);
            body[4..6].copy_from_slice(&2u16.to_le_bytes());
            send(&mut port, &frame(HELLO, &body));
        }
        "truncated-attachments" => send(&mut port, &frame(MESSAGE, &[5, PORT, 0, 0])),
        "unknown-attachment" => {
            let mut body = vec![1, 0x09];
            body.extend_from_slice(&7u64.to_le_bytes());
            body.push(0xc0);
            send(&mut port, &frame(MESSAGE, &body));
        }
        "too-many-attachments" => {
            // The count byte says 254; the list is all there, so only the count is wrong.
            send(&mut port, &frame(MESSAGE, &envelope(254, &[0xc0])));
        }
        "bad-panic" => send(&mut port, &frame(PANIC, &[0xc1, 0xc1, 0xc1])),
        "panic-trailing-bytes" => {
            // fixmap of 5: message, file, line, column, thread; then one stray byte.
            let mut body = vec![0x85];
            for (key, value) in [("message", "boom"), ("file", "hostile.rs")] {
                body.extend_from_slice(&mp_str(key));
                body.extend_from_slice(&mp_str(value));
            }
            body.extend_from_slice(&mp_str("line"));
            body.push(7);
            body.extend_from_slice(&mp_str("column"));
            body.push(9);
            body.extend_from_slice(&mp_str("thread"));
            body.push(0xc0);
            body.push(0xc0);
            send(&mut port, &frame(PANIC, &body));
        }
        "payload-over-limit" => {
            // A frame of exactly max_frame_len: attachment count, then max_frame_len - 2
            // payload bytes, which is more than the message limit of max_frame_len - 4096.
            let len = max_frame_len as usize;
            let mut body = vec![0u8; len - 1];
            body[0] = 0;
            send(&mut port, &frame(MESSAGE, &body));
        }
        "fds-without-attachment" => {
            let (a, _b) = UnixStream::pair().expect("socketpair");
            send_with_fds(&port, &message(&[0xc0]), &[a.as_raw_fd()]);
        }
        "fds-without-attachment-then-message" => {
            let (a, _b) = UnixStream::pair().expect("socketpair");
            send_with_fds(&port, &message(&[0xc0]), &[a.as_raw_fd()]);
            send(&mut port, &message(&[0xc0]));
        }
        "more-fds-than-declared" => {
            let (a, b) = UnixStream::pair().expect("socketpair");
            let body = envelope(1, &[0xc0]);
            send_with_fds(
                &port,
                &frame(MESSAGE, &body),
                &[a.as_raw_fd(), b.as_raw_fd()],
            );
        }
        "fewer-fds-than-declared" => {
            let (a, _b) = UnixStream::pair().expect("socketpair");
            let body = envelope(2, &[0xc0]);
            send_with_fds(&port, &frame(MESSAGE, &body), &[a.as_raw_fd()]);
        }
        "fds-on-a-later-byte" => {
            let (a, _b) = UnixStream::pair().expect("socketpair");
            let bytes = frame(MESSAGE, &envelope(1, &[0xc0]));
            send(&mut port, &bytes[..3]);
            // Wait until the parent has read the first three bytes on their own: a read that
            // took them together with the rest would find the descriptors on the first byte.
            while unread(&port) > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            send_with_fds(&port, &bytes[3..], &[a.as_raw_fd()]);
        }
        "port-is-a-pipe" => {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors pipe writes.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
            send_with_fds(&port, &frame(MESSAGE, &envelope(1, &[0xc0])), &[fds[0]]);
        }
        "port-is-a-datagram-socket" => {
            let (a, _b) = UnixDatagram::pair().expect("socketpair");
            send_with_fds(
                &port,
                &frame(MESSAGE, &envelope(1, &[0xc0])),
                &[a.as_raw_fd()],
            );
        }
        "port-is-a-seqpacket-socket" => {
            let (a, _b) = socketpair(libc::SOCK_SEQPACKET);
            send_with_fds(
                &port,
                &frame(MESSAGE, &envelope(1, &[0xc0])),
                &[a.as_raw_fd()],
            );
        }
        "port-is-a-file" => {
            let file = std::fs::File::open("/dev/null").expect("open /dev/null");
            send_with_fds(
                &port,
                &frame(MESSAGE, &envelope(1, &[0xc0])),
                &[file.as_raw_fd()],
            );
        }
        "many-fds" => {
            let count: usize = std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .expect("many-fds takes a count");
            let count = count.min(253);
            let (a, _b) = UnixStream::pair().expect("socketpair");
            let fds = vec![a.as_raw_fd(); count];
            send_with_fds(&port, &frame(MESSAGE, &envelope(count, &[0xc0])), &fds);
        }
        "fd-flood" => {
            let (a, _b) = UnixStream::pair().expect("socketpair");
            let fds = vec![a.as_raw_fd(); 253];
            // The header of a 1 MiB message without attachments; each byte carries 253
            // descriptors, so more arrive than any frame could claim.
            let mut header = (1u32 << 20).to_le_bytes().to_vec();
            header.extend_from_slice(&[MESSAGE, 0, 0xc0, 0xc0, 0xc0, 0xc0]);
            for byte in &header {
                if !try_send_with_fds(&port, std::slice::from_ref(byte), &fds) {
                    break;
                }
            }
        }
        "endless-prefix" => {
            let (mut prefix, prefix_theirs) = UnixStream::pair().expect("socketpair");
            let (_port, port_theirs) = UnixStream::pair().expect("socketpair");
            let mut body = vec![1, 0x02];
            body.extend_from_slice(&77u64.to_le_bytes());
            body.push(0xc0);
            let fds = [prefix_theirs.as_raw_fd(), port_theirs.as_raw_fd()];
            send_with_fds(&port, &frame(MESSAGE, &body), &fds);
            drop((prefix_theirs, port_theirs));
            let zeros = vec![0u8; 64 * 1024];
            while prefix.write_all(&zeros).is_ok() {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::process::exit(0);
        }
        "port-then-garbage" => {
            let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
            send_with_fds(
                &port,
                &frame(MESSAGE, &envelope(1, &[0xc0])),
                &[theirs.as_raw_fd()],
            );
            drop(theirs);
            ours.write_all(&[0xff, 0xff, 0xff, 0xff, MESSAGE, 0])
                .expect("write on the port");
            answer_pong(&mut port);
            return;
        }
        "port-is-a-listening-socket" => {
            let dir = std::env::temp_dir().join(format!("hostile-{}", std::process::id()));
            let _ = std::fs::remove_file(&dir);
            let listener = std::os::unix::net::UnixListener::bind(&dir).expect("bind");
            let _ = std::fs::remove_file(&dir);
            send_with_fds(
                &port,
                &frame(MESSAGE, &envelope(1, &[0xc0])),
                &[listener.as_raw_fd()],
            );
            answer_pong(&mut port);
            return;
        }
        "garbage-then-exit" => {
            send(
                &mut port,
                &[0xff, 0xff, 0xff, 0xff, 0x02, 0, 0xde, 0xad, 0xbe, 0xef],
            );
            std::process::exit(0);
        }
        "truncated-then-exit" => {
            let bytes = message(b"this message never arrives whole");
            send(&mut port, &bytes[..bytes.len() / 2]);
            std::process::exit(0);
        }
        "truncated-then-shutdown" => {
            let bytes = message(b"this message never arrives whole");
            send(&mut port, &bytes[..bytes.len() / 2]);
            port.shutdown(std::net::Shutdown::Write).expect("shutdown");
        }
        "dies-mid-large-message" => {
            const LEN: usize = 16 << 20;
            let mut bytes = ((LEN + 2) as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&[MESSAGE, 0]);
            bytes.resize(6 + LEN / 2, 0x5a);
            // The parent reads as it comes; if it stops, this write blocks and the parent's
            // kill (or the test's timeout) ends it.
            send(&mut port, &bytes);
            // SAFETY: raising a signal on this process runs no code of ours.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        "bad-payloads" => {
            for (_, payload) in hostile_payloads() {
                send(&mut port, &message(&payload));
            }
            send(&mut port, &message(&mp_str("still here")));
            answer_pong(&mut port);
            return;
        }
        "flood" => {
            let mut payload = vec![0u8; 4096];
            for seq in 0u64.. {
                payload[..8].copy_from_slice(&seq.to_le_bytes());
                if port.write_all(&message(&payload)).is_err() {
                    return;
                }
            }
        }
        "flood-reports" => {
            // Out-of-memory reports (one byte each), more than a life's worth; the pipe is
            // non-blocking, so keep it full.
            let reports = [b'M'; 4096];
            loop {
                // SAFETY: writes from a local array to descriptor 4.
                if unsafe { libc::write(4, reports.as_ptr().cast(), reports.len()) } < 0 {
                    std::thread::yield_now();
                }
            }
        }
        "impossible-report" => {
            // A denied-call report from a child that has no sandbox to deny anything.
            let report = [b'S', 0, 0, 0, 0];
            // SAFETY: writes 5 bytes from a local array to descriptor 4.
            unsafe { libc::write(4, report.as_ptr().cast(), report.len()) };
        }
        "garble-reports" => {
            // SAFETY: writes 1 byte from a local array to descriptor 4.
            unsafe { libc::write(4, b"Z".as_ptr().cast(), 1) };
        }
        "sleep" => {}
        other => panic!("unknown mode {other:?}"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Reads the parent's 17-byte `HELLO` and returns its `max_frame_len`.
fn read_hello(port: &mut UnixStream) -> u32 {
    let mut hello = [0u8; 17];
    if port.read_exact(&mut hello).is_err() {
        std::process::exit(0);
    }
    assert_eq!(&hello[..5], &[13, 0, 0, 0, HELLO], "the parent's HELLO");
    u32::from_le_bytes([hello[13], hello[14], hello[15], hello[16]])
}

/// A `HELLO` body: magic, version 1, no flags, `max_frame_len`.
fn hello_body(max_frame_len: u32) -> Vec<u8> {
    let mut body = b"UPRC".to_vec();
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&max_frame_len.to_le_bytes());
    body
}

fn hello_frame(max_frame_len: u32) -> Vec<u8> {
    frame(HELLO, &hello_body(max_frame_len))
}

/// A frame: the length of kind and body, the kind, the body.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 1).expect("a frame under 4 GiB");
    let mut bytes = len.to_le_bytes().to_vec();
    bytes.push(kind);
    bytes.extend_from_slice(body);
    bytes
}

/// A `MESSAGE` frame without attachments.
fn message(payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(payload);
    frame(MESSAGE, &body)
}

/// A `MESSAGE` body: a count byte of `count` (truncated to a byte), `count` port attachments
/// (channel ids 1, 2, ...), then `payload`.
fn envelope(count: usize, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![count as u8];
    for channel in 1..=count as u64 {
        body.push(PORT);
        body.extend_from_slice(&channel.to_le_bytes());
    }
    body.extend_from_slice(payload);
    body
}

/// A MessagePack string (fixstr or str8).
fn mp_str(text: &str) -> Vec<u8> {
    let mut bytes = if text.len() < 32 {
        vec![0xa0 | text.len() as u8]
    } else {
        vec![0xd9, text.len() as u8]
    };
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

fn send(port: &mut UnixStream, bytes: &[u8]) {
    if port.write_all(bytes).is_err() {
        // The parent closed the port (it killed us for an earlier violation, or is gone).
        std::process::exit(0);
    }
}

/// Reads frames until the port closes, answering each `MESSAGE` with the string `"pong"`.
fn answer_pong(port: &mut UnixStream) {
    loop {
        let mut len = [0u8; 4];
        if port.read_exact(&mut len).is_err() {
            return;
        }
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        if port.read_exact(&mut body).is_err() {
            return;
        }
        if body.first() == Some(&MESSAGE) {
            send(port, &message(&mp_str("pong")));
        }
    }
}

/// Bytes written to `port` that the peer has not read yet (`SIOCOUTQ`).
fn unread(port: &UnixStream) -> usize {
    let mut unread: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int through the pointer, to `unread`.
    let done = unsafe { libc::ioctl(port.as_raw_fd(), libc::TIOCOUTQ, &mut unread) };
    assert_eq!(done, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    unread as usize
}

fn socketpair(kind: libc::c_int) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let done = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) };
    assert_eq!(done, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: socketpair succeeded, so both are new descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Sends `bytes` with `fds` (`SCM_RIGHTS`) on the ancillary data of one `sendmsg`.
fn send_with_fds(port: &UnixStream, bytes: &[u8], fds: &[RawFd]) {
    if !try_send_with_fds(port, bytes, fds) {
        std::process::exit(0);
    }
}

/// As [`send_with_fds`]; `false` when the port is closed. Whatever the first `sendmsg` does
/// not take is written without descriptors.
fn try_send_with_fds(port: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> bool {
    assert!(fds.len() <= 253 && !bytes.is_empty());
    let data_len = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
    // u64 elements: aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer is `space` = CMSG_SPACE(data_len) bytes, aligned for
    // cmsghdr, so CMSG_FIRSTHDR is non-null and the header and `fds.len()` ints written at
    // CMSG_DATA lie inside it. `iov` points at `bytes`, which sendmsg only reads, and both
    // outlive the call.
    let sent = unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(data_len) as _;
        let data = libc::CMSG_DATA(header).cast::<libc::c_int>();
        for (i, fd) in fds.iter().enumerate() {
            data.add(i).write_unaligned(*fd);
        }
        libc::sendmsg(port.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return false;
    }
    let rest = &bytes[sent as usize..];
    rest.is_empty() || (&*port).write_all(rest).is_ok()
}

/// `stdout-flood`: a well-behaved echo child whose stdout never stops.
fn stdout_flood() -> ! {
    let port = utility_process::parent_port().expect("started by fork");
    std::thread::spawn(|| {
        let line = [b'x'; 1023];
        let mut stdout = std::io::stdout().lock();
        loop {
            // Blocks once the pipe is full and nobody reads it; ends when it is closed.
            if stdout
                .write_all(&line)
                .and_then(|()| stdout.write_all(b"\n"))
                .is_err()
            {
                return;
            }
        }
    });
    while let Some(message) = port.recv_blocking() {
        port.post_bytes(message.bytes())
            .expect("the parent is listening");
    }
    std::process::exit(0);
}

/// `post-until-full`: the child's side of back-pressure.
fn post_until_full() -> ! {
    let port = utility_process::parent_port().expect("started by fork");
    let numbered = |seq: u64| {
        let mut bytes = vec![0u8; 64 * 1024];
        bytes[..8].copy_from_slice(&seq.to_le_bytes());
        bytes
    };
    let mut seq = 0u64;
    let (queued, limit) = loop {
        match port.post_bytes(&numbered(seq)) {
            Ok(()) => seq += 1,
            Err(utility_process::Error::QueueFull { queued, limit, .. }) => break (queued, limit),
            Err(other) => panic!("post {seq}: expected Ok or QueueFull, got {other}"),
        }
    };
    println!("full {seq} {queued} {limit}");
    std::io::stdout().flush().expect("flush stdout");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        for _ in 0..16 {
            port.send_bytes(&numbered(seq))
                .await
                .expect("send waits for room");
            seq += 1;
        }
        port.send(&"done").await.expect("send waits for room");
    });
    while port.recv_blocking().is_some() {}
    std::process::exit(0);
}
