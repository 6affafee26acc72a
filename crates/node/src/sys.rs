//! The addon's only `unsafe` code: JS buffers over shared memory, and writing the parent
//! port's descriptor directly for a `PANIC` frame.
#![allow(unsafe_code)]

use napi::{Env, JsUnknown, Result};
use utility_process::SharedBuffer;

/// Payloads up to this size are copied into a fresh JS buffer, which is cheaper than an
/// external buffer with a finalizer; larger ones hand their allocation over to JS.
const COPY_BELOW: usize = 4096;

/// A JS `Buffer` holding `bytes`.
pub(crate) fn buffer_from_vec(env: &Env, bytes: Vec<u8>) -> Result<JsUnknown> {
    let value = if bytes.len() < COPY_BELOW {
        env.create_buffer_copy(&bytes)?
    } else {
        env.create_buffer_with_data(bytes)?
    };
    Ok(value.into_raw().into_unknown())
}

/// A JS `Buffer` over a received shared buffer: the mapping itself when it is writable (JS
/// writes reach every holder; the mapping lives until the `Buffer` is collected), a copy when
/// it is read-only (a JS write into a read-only mapping would crash the process).
pub(crate) fn buffer_from_shared(env: &Env, mut buffer: SharedBuffer) -> Result<JsUnknown> {
    let Some(bytes) = buffer.as_mut_slice().filter(|b| !b.is_empty()) else {
        return Ok(env
            .create_buffer_copy(buffer.as_slice())?
            .into_raw()
            .into_unknown());
    };
    let (data, len) = (bytes.as_mut_ptr(), bytes.len());
    // SAFETY: `data` points to `len` writable bytes of `buffer`'s mapping, which stays mapped
    // for as long as `buffer` lives; the finalizer, which node runs once the JS `Buffer` is
    // unreachable, is what drops `buffer`. Moving `buffer` into the hint does not move the
    // mapping.
    let value = unsafe { env.create_buffer_with_borrowed_data(data, len, buffer, |b, _| drop(b)) }?;
    Ok(value.into_raw().into_unknown())
}

/// Writes all of `bytes` to descriptor `fd`, waiting while a non-blocking socket is full.
/// Gives up quietly on any other error: this is a best-effort report on the way out.
pub(crate) fn write_all(fd: i32, mut bytes: &[u8]) {
    // Only a socket can be the parent port: never write a report into a file or a terminal.
    // SAFETY: `stat` is plain data, and fstat only fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on any integer is safe; a closed descriptor only fails.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 || stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return;
    }
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length; MSG_NOSIGNAL turns a gone parent
        // into EPIPE instead of SIGPIPE.
        let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if n >= 0 {
            bytes = &bytes[n as usize..];
            continue;
        }
        match std::io::Error::last_os_error().kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => {
                let mut poll = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; waits at most a second per turn.
                if unsafe { libc::poll(&mut poll, 1, 1000) } <= 0 {
                    return;
                }
            }
            _ => return,
        }
    }
}
