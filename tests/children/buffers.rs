//! Works with the shared buffers the parent sends: reports what it sees in them, writes into
//! writable ones and sends them back, or makes one of its own.
//!
//! `argv[1]` picks how it treats them:
//! - none: plainly, as received;
//! - `pool`: adopts each into a `BufferPool` of its own first (the cooperative borrower);
//! - `forge`: answers `FillAndReturn` with a new buffer of its own instead of the parent's;
//! - `keep-map` / `keep-fd`: a hostile borrower that, before sending a buffer back, reopens
//!   its memfd through `/proc/self/fd` and keeps a writable mapping of it (or only the
//!   descriptor); a later `Make { byte, .. }` then means "write `byte` into what you kept",
//!   answered with `"scribbled"` or `"refused"`. On Windows, `keep-map` keeps the writable
//!   view its own pool parks when the buffer goes back (there is no `/proc` to reopen a
//!   section through), and `keep-fd` does not exist.

#[cfg(unix)]
use std::fs::{File, OpenOptions};
#[cfg(unix)]
use std::os::fd::AsRawFd;

use utility_process::{parent_port, BufferPool, SharedBuffer, Transferable};
use utility_process_tests::{Ask, Seen};

/// What a hostile borrower kept of a buffer it sent back.
#[cfg(unix)]
struct Kept {
    file: File,
    len: usize,
    map: Option<*mut u8>,
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let pool = BufferPool::new();
    let mut kept: Vec<Kept> = Vec::new();
    let port = parent_port().expect("started by fork");
    while let Some(mut message) = port.recv_blocking() {
        let ask: Ask = message.data().expect("an Ask");
        let mut buffers = message.take_buffers();
        if mode == "pool" || (cfg!(windows) && mode == "keep-map") {
            buffers = buffers.into_iter().map(|b| pool.adopt(b)).collect();
        }
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
                    if mode == "forge" {
                        buffer = SharedBuffer::from_slice(&buffer).expect("memory");
                    }
                    if mode == "keep-map" || mode == "keep-fd" {
                        kept.push(keep(&mut buffer, mode == "keep-map"));
                    }
                    back.push(Transferable::Buffer(buffer));
                }
                port.post_message_with_transfer(&"filled", back)
                    .expect("parent is listening");
            }
            Ask::Make { byte, .. } if !kept.is_empty() => {
                let all = kept.iter().all(|k| scribble(k, byte));
                port.post_message(&if all { "scribbled" } else { "refused" })
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

/// What the hostile borrower kept on Windows: where its pool's view of the buffer is, which
/// stays mapped (parked) after the buffer is sent back.
#[cfg(windows)]
struct Kept {
    ptr: *mut u8,
    len: usize,
}

#[cfg(windows)]
fn keep(buffer: &mut SharedBuffer, map: bool) -> Kept {
    assert!(
        map,
        "keep-fd is a Unix mode: it reopens a memfd through /proc/self/fd"
    );
    let bytes = buffer.as_mut_slice().expect("a lent buffer is writable");
    Kept {
        ptr: bytes.as_mut_ptr(),
        len: bytes.len(),
    }
}

#[cfg(windows)]
fn scribble(kept: &Kept, byte: u8) -> bool {
    // SAFETY: deliberately hostile, as a borrower may be: the view was this process's pool's,
    // and the pool keeps it mapped (parked, writable) after the buffer went back; nothing in
    // this process refers to it any more.
    unsafe { std::ptr::write_bytes(kept.ptr, byte, kept.len) };
    true
}

/// Reopens the memfd of the buffer of `len` bytes this process holds, read-write, through
/// `/proc/self/fd` (what any process holding a descriptor can do), and maps it if `map`.
#[cfg(unix)]
fn keep(buffer: &mut SharedBuffer, map: bool) -> Kept {
    let len = buffer.len();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc is mounted") {
        let path = entry.expect("an fd entry").path();
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        if !target.to_string_lossy().contains("memfd:utility-process") {
            continue;
        }
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        if file.metadata().map(|m| m.len()).ok() != Some(len as u64) {
            continue;
        }
        let map = map.then(|| {
            // SAFETY: a fresh shared mapping of a file we hold, at an address the kernel
            // picks; never unmapped (the process keeps it on purpose).
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED, "mapping the kept memfd");
            ptr.cast::<u8>()
        });
        return Kept { file, len, map };
    }
    panic!("no memfd of {len} bytes in /proc/self/fd");
}

/// Writes `byte` over all of a kept buffer: through the kept mapping, or else through a new
/// mapping of the kept descriptor. Whether it could.
#[cfg(unix)]
fn scribble(kept: &Kept, byte: u8) -> bool {
    let ptr = match kept.map {
        Some(ptr) => ptr,
        None => {
            // SAFETY: as in `keep`.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    kept.len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    kept.file.as_raw_fd(),
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return false;
            }
            ptr.cast::<u8>()
        }
    };
    // SAFETY: a live writable mapping of `len` bytes that this process made and never unmaps.
    unsafe { std::ptr::write_bytes(ptr, byte, kept.len) };
    true
}
