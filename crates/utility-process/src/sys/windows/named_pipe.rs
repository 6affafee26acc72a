//! Named-pipe plumbing for the channel: making a connected pair, and asking how much data
//! waits to be read.
//!
//! Windows has no anonymous pipe that supports overlapped I/O (`CreatePipe` makes synchronous
//! handles), so a channel is one instance of a named pipe with an unguessable name
//! (`\\.\pipe\utility-process-<pid>-<counter>-<128 random bits>`), connected before anyone
//! else could find it:
//!
//! - `FILE_FLAG_FIRST_PIPE_INSTANCE` makes creation fail if the name already exists (a
//!   squatter cannot pre-create it and get our data), one instance only makes a second
//!   client's open fail with `ERROR_PIPE_BUSY`, and `PIPE_REJECT_REMOTE_CLIENTS` keeps it off
//!   the network.
//! - Default security: the creator's token (full control to the owner, LocalSystem and
//!   administrators; Microsoft documents read access for Everyone and anonymous too, which is
//!   why the name is random and the only instance is connected at once).
//! - The client opens with `SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION`, so the server
//!   end, wherever it travels, can identify but never impersonate the opener.
//! - Both ends are overlapped, byte mode, and not inheritable (`bInheritHandle` false).

use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::sync::atomic::{AtomicU64, Ordering};

use windows_sys::Wdk::Storage::FileSystem::{
    FileModeInformation, NtQueryInformationFile, FILE_MODE_INFORMATION, FILE_SYNCHRONOUS_IO_ALERT,
    FILE_SYNCHRONOUS_IO_NONALERT,
};
use windows_sys::Win32::Foundation::{
    ERROR_IO_PENDING, ERROR_PIPE_CONNECTED, GENERIC_READ, GENERIC_WRITE, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Security::Cryptography::{
    BCryptGenRandom, BCRYPT_USE_SYSTEM_PREFERRED_RNG,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, GetFileType, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, FILE_TYPE_PIPE,
    OPEN_EXISTING, PIPE_ACCESS_DUPLEX, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, GetNamedPipeInfo, PeekNamedPipe, PIPE_READMODE_BYTE,
    PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE, PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::GetCurrentProcessId;
use windows_sys::Win32::System::IO::{GetOverlappedResult, IO_STATUS_BLOCK, OVERLAPPED};

use super::handle;

/// Buffer quota asked for in each direction. A bigger write is not refused: it stays pending
/// until the reader has taken the excess, which is what makes `send` report `WouldBlock`.
const BUFFER: u32 = 64 * 1024;

/// Distinguishes the pipes of one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// 128 bits from the system's preferred random number generator.
///
/// See `BCryptGenRandom`
/// (learn.microsoft.com/windows/win32/api/bcrypt/nf-bcrypt-bcryptgenrandom).
fn random() -> io::Result<u128> {
    let mut bytes = [0u8; 16];
    // SAFETY: the buffer is valid for writes of its length; a null algorithm handle is what
    // BCRYPT_USE_SYSTEM_PREFERRED_RNG requires.
    let status = unsafe {
        BCryptGenRandom(
            std::ptr::null_mut(),
            bytes.as_mut_ptr(),
            bytes.len() as u32,
            BCRYPT_USE_SYSTEM_PREFERRED_RNG,
        )
    };
    if status < 0 {
        return Err(io::Error::other(format!(
            "BCryptGenRandom failed: {status:#x}"
        )));
    }
    Ok(u128::from_le_bytes(bytes))
}

/// A fresh, unguessable pipe name, NUL-terminated UTF-16.
fn unique_name() -> io::Result<Vec<u16>> {
    // SAFETY: GetCurrentProcessId has no preconditions.
    let pid = unsafe { GetCurrentProcessId() };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(r"\\.\pipe\utility-process-{pid}-{n}-{:032x}", random()?);
    Ok(name.encode_utf16().chain(Some(0)).collect())
}

/// Both ends of a new connected pipe: (server end, client end); see the module docs.
///
/// See `CreateNamedPipeW`
/// (learn.microsoft.com/windows/win32/api/namedpipeapi/nf-namedpipeapi-createnamedpipew),
/// `CreateFileW` (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-createfilew) and
/// `ConnectNamedPipe`
/// (learn.microsoft.com/windows/win32/api/namedpipeapi/nf-namedpipeapi-connectnamedpipe).
pub(crate) fn pair() -> io::Result<(OwnedHandle, OwnedHandle)> {
    let name = unique_name()?;
    // SAFETY: `name` is NUL-terminated; null security attributes mean default security and a
    // non-inheritable handle. The result is checked.
    let server = unsafe {
        CreateNamedPipeW(
            name.as_ptr(),
            PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
            1,
            BUFFER,
            BUFFER,
            0,
            std::ptr::null(),
        )
    };
    if server == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle that nothing else owns.
    let server = unsafe { OwnedHandle::from_raw_handle(server) };
    // SAFETY: as above; OPEN_EXISTING of the instance we just made, no template.
    let client = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            std::ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
            std::ptr::null_mut(),
        )
    };
    if client == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle that nothing else owns.
    let client = unsafe { OwnedHandle::from_raw_handle(client) };
    connect(&server)?;
    Ok((server, client))
}

/// Completes the server side of the connection the client already made.
fn connect(server: &OwnedHandle) -> io::Result<()> {
    let event = handle::event()?;
    let mut overlapped = OVERLAPPED {
        hEvent: event.as_raw_handle(),
        ..Default::default()
    };
    // SAFETY: `overlapped` and its event live until the operation is reaped below.
    if unsafe { ConnectNamedPipe(server.as_raw_handle(), &mut overlapped) } != 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(code) if code == ERROR_PIPE_CONNECTED as i32 => Ok(()),
        Some(code) if code == ERROR_IO_PENDING as i32 => {
            let mut n = 0u32;
            // SAFETY: waits for the operation `overlapped` describes; it is then reaped.
            if unsafe { GetOverlappedResult(server.as_raw_handle(), &overlapped, &mut n, 1) } == 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
        _ => Err(err),
    }
}

/// Whether `handle` is a pipe end a channel can use: a pipe (`GetFileType`), a named pipe
/// rather than a socket, which `GetFileType` also calls a pipe (`GetNamedPipeInfo`), and
/// opened for overlapped I/O (`NtQueryInformationFile(FileModeInformation)` shows no
/// `FILE_SYNCHRONOUS_IO_*` flag). A synchronous handle, such as an end of an anonymous pipe from
/// `CreatePipe`, would make our "overlapped" reads block the calling thread: a peer could
/// stall us by sending one.
///
/// See `GetFileType` (learn.microsoft.com/windows/win32/api/fileapi/nf-fileapi-getfiletype),
/// `GetNamedPipeInfo`
/// (learn.microsoft.com/windows/win32/api/namedpipeapi/nf-namedpipeapi-getnamedpipeinfo) and
/// `NtQueryInformationFile`
/// (learn.microsoft.com/windows-hardware/drivers/ddi/ntifs/nf-ntifs-ntqueryinformationfile).
pub(crate) fn is_overlapped_pipe(handle: BorrowedHandle<'_>) -> bool {
    let raw = handle.as_raw_handle();
    // SAFETY: GetFileType only queries the open (borrowed) handle.
    if unsafe { GetFileType(raw) } != FILE_TYPE_PIPE {
        return false;
    }
    let mut flags = 0;
    // SAFETY: only queries the handle; the optional outputs we do not want are null.
    let named = unsafe {
        GetNamedPipeInfo(
            raw,
            &mut flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    } != 0;
    if !named {
        return false;
    }
    let mut status = IO_STATUS_BLOCK::default();
    let mut mode = FILE_MODE_INFORMATION::default();
    // SAFETY: writes at most `size_of::<FILE_MODE_INFORMATION>()` bytes into `mode` and the
    // status block into `status`.
    let queried = unsafe {
        NtQueryInformationFile(
            raw,
            &mut status,
            (&mut mode as *mut FILE_MODE_INFORMATION).cast(),
            std::mem::size_of::<FILE_MODE_INFORMATION>() as u32,
            FileModeInformation,
        )
    };
    queried >= 0 && mode.Mode & (FILE_SYNCHRONOUS_IO_ALERT | FILE_SYNCHRONOUS_IO_NONALERT) == 0
}

/// Copies up to `buf.len()` bytes from the front of the pipe without consuming them, and
/// returns (bytes copied, bytes available in total). Never blocks, on overlapped handles too.
///
/// See `PeekNamedPipe`
/// (learn.microsoft.com/windows/win32/api/namedpipeapi/nf-namedpipeapi-peeknamedpipe).
pub(crate) fn peek(pipe: HANDLE, buf: &mut [u8]) -> io::Result<(usize, usize)> {
    let (mut copied, mut avail) = (0u32, 0u32);
    let ptr = if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: `ptr` is null with size 0 or valid for writes of `buf.len()` bytes; the counts
    // are valid places.
    let ok = unsafe {
        PeekNamedPipe(
            pipe,
            ptr,
            buf.len() as u32,
            &mut copied,
            &mut avail,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((copied as usize, avail as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::windows::io::AsHandle;
    use windows_sys::Win32::System::Pipes::CreatePipe;

    #[test]
    fn names_are_unique_and_random() {
        let a = String::from_utf16_lossy(&unique_name().unwrap());
        let b = String::from_utf16_lossy(&unique_name().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(r"\\.\pipe\utility-process-"));
    }

    #[test]
    fn a_fresh_pair_is_connected_and_empty() {
        let (server, client) = pair().unwrap();
        assert_eq!(peek(server.as_raw_handle(), &mut []).unwrap(), (0, 0));
        assert_eq!(peek(client.as_raw_handle(), &mut [0; 4]).unwrap(), (0, 0));
    }

    #[test]
    fn both_ends_of_a_pair_are_overlapped_pipes() {
        let (server, client) = pair().unwrap();
        assert!(is_overlapped_pipe(server.as_handle()));
        assert!(is_overlapped_pipe(client.as_handle()));
    }

    #[test]
    fn a_synchronous_anonymous_pipe_is_not_a_channel() {
        let (mut read, mut write) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: CreatePipe writes two handles, which we own and close below.
        let created = unsafe { CreatePipe(&mut read, &mut write, std::ptr::null(), 0) };
        assert_ne!(created, 0);
        // SAFETY: fresh handles from CreatePipe, owned by nothing else.
        let (read, write) = unsafe {
            (
                OwnedHandle::from_raw_handle(read),
                OwnedHandle::from_raw_handle(write),
            )
        };
        assert!(!is_overlapped_pipe(read.as_handle()));
        assert!(!is_overlapped_pipe(write.as_handle()));
    }
}
