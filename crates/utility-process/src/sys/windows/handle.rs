//! Small handle utilities shared by the channel and shared-memory modules.
//!
//! Windows hands out every kernel object (pipe, section, event, process) as a `HANDLE`: an index
//! into the owning process's handle table. Moving one to another process is always a
//! `DuplicateHandle` call made by someone who holds a handle to both processes; here live the
//! three shapes of that call the broker needs ([`duplicate_into`], [`take_from`],
//! [`close_in`]), plus same-process duplication, inheritance control, manual-reset events, a
//! wait with a timeout, and the Wine probe the tests use.

use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_CLOSE_SOURCE, DUPLICATE_SAME_ACCESS, HANDLE, WAIT_OBJECT_0,
    WAIT_TIMEOUT,
};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcess, WaitForSingleObject, INFINITE,
};

/// Duplicates `handle` within this process: same access, not inheritable.
pub(crate) fn duplicate(handle: BorrowedHandle<'_>) -> io::Result<OwnedHandle> {
    duplicate_as(handle, None)
}

/// Duplicates `handle` within this process, not inheritable, with `access` (`None`: the
/// same access; asking for less access than the handle has needs no access check).
///
/// See `DuplicateHandle`
/// (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-duplicatehandle).
pub(crate) fn duplicate_as(
    handle: BorrowedHandle<'_>,
    access: Option<u32>,
) -> io::Result<OwnedHandle> {
    let (rights, options) = match access {
        Some(rights) => (rights, 0),
        None => (0, DUPLICATE_SAME_ACCESS),
    };
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: `handle` is open for the duration of the call (borrowed); the pseudo handle of
    // the current process is always valid; `out` is a valid place for the new value.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            handle.as_raw_handle(),
            GetCurrentProcess(),
            &mut out,
            rights,
            0,
            options,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: DuplicateHandle succeeded: `out` is a fresh handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(out) })
}

/// Copies `handle` into the handle table of `process` (which must have been opened with
/// `PROCESS_DUP_HANDLE`), same access, not inheritable, and returns the value it has there.
/// Nothing in this process changes; the copy is the other process's to close.
///
/// See `DuplicateHandle`
/// (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-duplicatehandle).
pub(crate) fn duplicate_into(
    process: BorrowedHandle<'_>,
    handle: BorrowedHandle<'_>,
) -> io::Result<u64> {
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: both handles are open for the call (borrowed); `out` receives a value that is
    // only meaningful in `process`, so we never use it as a handle here.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            handle.as_raw_handle(),
            process.as_raw_handle(),
            &mut out,
            0,
            0,
            DUPLICATE_SAME_ACCESS,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(out as usize as u64)
}

/// Moves the handle that has value `value` in `process` into this process: the kernel looks
/// the value up in THAT process's table (so a value it does not own fails), duplicates it here
/// with the same access, and closes it there (`DUPLICATE_CLOSE_SOURCE`).
///
/// See `DuplicateHandle`
/// (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-duplicatehandle).
pub(crate) fn take_from(process: BorrowedHandle<'_>, value: u64) -> io::Result<OwnedHandle> {
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is open (borrowed); `value` is only interpreted by the kernel in the
    // table of `process`, where an invalid value makes the call fail. `out` is a valid place.
    let ok = unsafe {
        DuplicateHandle(
            process.as_raw_handle(),
            value as usize as HANDLE,
            GetCurrentProcess(),
            &mut out,
            0,
            0,
            DUPLICATE_SAME_ACCESS | DUPLICATE_CLOSE_SOURCE,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: DuplicateHandle succeeded: `out` is a fresh handle of this process that nothing
    // else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(out) })
}

/// Closes the handle that has value `value` in `process` (an undo of [`duplicate_into`]).
/// Errors are ignored: the value may already be gone along with the process.
///
/// See `DuplicateHandle` with a null target process
/// (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-duplicatehandle).
pub(crate) fn close_in(process: BorrowedHandle<'_>, value: u64) {
    // SAFETY: with a null target process and DUPLICATE_CLOSE_SOURCE the call only closes
    // `value` in `process`'s table; it creates nothing and touches nothing of ours.
    unsafe {
        DuplicateHandle(
            process.as_raw_handle(),
            value as usize as HANDLE,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
            0,
            DUPLICATE_CLOSE_SOURCE,
        );
    }
}

/// A new unnamed, manual-reset, non-signalled event, not inheritable.
///
/// See `CreateEventW`
/// (learn.microsoft.com/windows/win32/api/synchapi/nf-synchapi-createeventw).
pub(crate) fn event() -> io::Result<OwnedHandle> {
    // SAFETY: null attributes and name are allowed; the result is checked for null.
    let raw = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    if raw.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CreateEventW succeeded: a fresh handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(raw) })
}

/// Milliseconds for a Win32 wait: `None` is `INFINITE`; longer waits are capped just below it
/// (some 49 days); a nonzero wait under one millisecond rounds up so it is not a poll.
pub(crate) fn millis(timeout: Option<Duration>) -> u32 {
    match timeout {
        None => INFINITE,
        Some(d) => {
            let ms = d.as_millis().min(u128::from(INFINITE - 1)) as u32;
            if ms == 0 && !d.is_zero() {
                1
            } else {
                ms
            }
        }
    }
}

/// Waits until `handle` is signalled: `Ok(true)`, or `Ok(false)` when `timeout` passes first.
///
/// See `WaitForSingleObject`
/// (learn.microsoft.com/windows/win32/api/synchapi/nf-synchapi-waitforsingleobject).
pub(crate) fn wait_for(handle: BorrowedHandle<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    // SAFETY: the handle is open for the whole wait (borrowed).
    match unsafe { WaitForSingleObject(handle.as_raw_handle(), millis(timeout)) } {
        WAIT_OBJECT_0 => Ok(true),
        WAIT_TIMEOUT => Ok(false),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether this process runs under Wine rather than Windows: Wine's `ntdll` exports
/// `wine_get_version`, Windows' does not. Tests use it to skip what Wine does not implement,
/// and the sandbox to refuse an AppContainer before calling Wine's aborting stub of it.
///
/// See `GetModuleHandleW`
/// (learn.microsoft.com/windows/win32/api/libloaderapi/nf-libloaderapi-getmodulehandlew) and
/// `GetProcAddress`
/// (learn.microsoft.com/windows/win32/api/libloaderapi/nf-libloaderapi-getprocaddress).
pub(crate) fn running_under_wine() -> bool {
    let name: Vec<u16> = "ntdll.dll".encode_utf16().chain(Some(0)).collect();
    // SAFETY: `name` is a NUL-terminated UTF-16 string; ntdll is loaded in every process, and
    // GetModuleHandleW does not add a reference we would have to release.
    let ntdll = unsafe { GetModuleHandleW(name.as_ptr()) };
    if ntdll.is_null() {
        return false;
    }
    // SAFETY: `ntdll` is a loaded module and the name is a NUL-terminated ANSI string; we
    // only test the result for presence and never call it.
    unsafe { GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()) }.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::windows::io::AsHandle;

    #[test]
    fn duplicate_gives_a_distinct_handle_to_the_same_object() {
        let event = event().unwrap();
        let copy = duplicate(event.as_handle()).unwrap();
        assert_ne!(copy.as_raw_handle(), event.as_raw_handle());
        // SAFETY: `copy` is an open event handle.
        unsafe { windows_sys::Win32::System::Threading::SetEvent(copy.as_raw_handle()) };
        assert!(wait_for(event.as_handle(), Some(Duration::ZERO)).unwrap());
    }

    #[test]
    fn wait_for_times_out_on_an_unsignalled_event() {
        let event = event().unwrap();
        assert!(!wait_for(event.as_handle(), Some(Duration::from_millis(20))).unwrap());
    }

    #[test]
    fn take_from_refuses_a_value_this_process_does_not_own() {
        // SAFETY: the pseudo handle of the current process needs no closing.
        let me = unsafe { BorrowedHandle::borrow_raw(GetCurrentProcess()) };
        assert!(take_from(me, 0x7fff_fff0).is_err());
    }

    #[test]
    fn millis_rounds_sub_millisecond_waits_up() {
        assert_eq!(millis(Some(Duration::from_micros(10))), 1);
        assert_eq!(millis(Some(Duration::ZERO)), 0);
        assert_eq!(millis(None), INFINITE);
    }

    #[test]
    fn running_under_wine_agrees_with_the_wine_registry_key() {
        use windows_sys::Win32::System::Registry::{
            RegCloseKey, RegOpenKeyExW, HKEY_CURRENT_USER, KEY_READ,
        };
        let name: Vec<u16> = r"Software\Wine".encode_utf16().chain(Some(0)).collect();
        let mut key = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; the key, if opened, is closed below.
        let opened =
            unsafe { RegOpenKeyExW(HKEY_CURRENT_USER, name.as_ptr(), 0, KEY_READ, &mut key) } == 0;
        if opened {
            // SAFETY: a key we opened.
            unsafe { RegCloseKey(key) };
            assert!(
                running_under_wine(),
                "HKCU\\Software\\Wine exists, yet no Wine was seen"
            );
        }
        eprintln!("running under Wine: {}", running_under_wine());
    }
}
