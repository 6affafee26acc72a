//! Handing a child exactly the handles it should have, and no other.
//!
//! # The problem
//!
//! `CreateProcessW(bInheritHandles = TRUE)` copies into the child *every* inheritable handle
//! of the parent, at the same values: pipes another thread is setting up for its own child,
//! sockets, files the host application opened as inheritable. A child holding someone else's
//! pipe write end keeps that pipe from ever reaching end-of-file; a child holding a file keeps
//! it locked.
//!
//! # What we do
//!
//! `PROC_THREAD_ATTRIBUTE_HANDLE_LIST` (Windows Vista and later) restricts inheritance to a
//! list: the child receives the handles in the list and nothing else, even if other handles
//! of the parent are inheritable. A handle in the list must itself be inheritable, so ours
//! — all created non-inheritable — are made inheritable only for the call ([`InheritWindow`]),
//! and made non-inheritable again as soon as it returns.
//!
//! # What remains
//!
//! While the window is open (a few microseconds around `CreateProcessW`), our handles are
//! inheritable, and another thread of the parent that starts a process with
//! `bInheritHandles = TRUE` and *no* list — as `std::process::Command` does — copies them into
//! its child. That child then holds, say, the write end of our child's stdout pipe, which
//! delays our end-of-file until it exits. Windows gives no way to close this window fully:
//! inheritability is a property of the handle, seen by every thread. `std` serialises its own
//! spawns with a private lock we cannot take. Duplicating the handles just before the call
//! would only move the window, not close it.
//!
//! See "Programmatically controlling which handles are inherited by new processes in Win32"
//! (devblogs.microsoft.com/oldnewthing/20111216-00/?p=8873), `UpdateProcThreadAttribute`
//! (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-updateprocthreadattribute)
//! and `SetHandleInformation`
//! (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-sethandleinformation).

use std::io;
use std::marker::PhantomData;
use std::os::windows::io::{AsRawHandle, BorrowedHandle};

use windows_sys::Win32::Foundation::{SetHandleInformation, HANDLE, HANDLE_FLAG_INHERIT};
use windows_sys::Win32::Security::SECURITY_CAPABILITIES;
use windows_sys::Win32::System::Threading::{
    DeleteProcThreadAttributeList, InitializeProcThreadAttributeList, UpdateProcThreadAttribute,
    LPPROC_THREAD_ATTRIBUTE_LIST, PROC_THREAD_ATTRIBUTE_HANDLE_LIST,
    PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES,
};

/// Handles made inheritable for as long as this lives; non-inheritable again when dropped.
#[derive(Debug)]
pub(crate) struct InheritWindow<'a> {
    /// The handles marked inheritable so far.
    handles: Vec<HANDLE>,
    /// The handles are borrowed: they stay open while the window is.
    _borrowed: PhantomData<BorrowedHandle<'a>>,
}

impl<'a> InheritWindow<'a> {
    /// Marks each of `handles` inheritable; on a failure, restores those already marked.
    ///
    /// See `SetHandleInformation`
    /// (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-sethandleinformation).
    pub(crate) fn open(handles: &[BorrowedHandle<'a>]) -> io::Result<InheritWindow<'a>> {
        let mut window = InheritWindow {
            handles: Vec::with_capacity(handles.len()),
            _borrowed: PhantomData,
        };
        for handle in handles {
            let raw = handle.as_raw_handle();
            // SAFETY: `raw` is open for 'a (it is borrowed); this changes only its flag.
            let ok = unsafe { SetHandleInformation(raw, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT) };
            if ok == 0 {
                // Dropping `window` restores the ones already marked.
                return Err(io::Error::last_os_error());
            }
            window.handles.push(raw);
        }
        Ok(window)
    }
}

impl Drop for InheritWindow<'_> {
    fn drop(&mut self) {
        for &raw in &self.handles {
            // SAFETY: `raw` is still open (borrowed for 'a); this clears only its flag. A
            // failure cannot happen for a handle whose flag we just set.
            unsafe { SetHandleInformation(raw, HANDLE_FLAG_INHERIT, 0) };
        }
    }
}

/// A `PROC_THREAD_ATTRIBUTE_LIST` holding the handle list and, for a child in an
/// AppContainer, its `SECURITY_CAPABILITIES` (`super::app_container`).
///
/// It owns the list's buffer and the array of handle values the attribute points into; both
/// must stay put until `CreateProcessW` has returned, which borrowing `self` ensures. The
/// capabilities are borrowed for as long as the list.
#[derive(Debug)]
pub(crate) struct HandleList<'a> {
    /// The opaque list, in 8-byte units so that it is aligned for the pointers inside it.
    buffer: Vec<u64>,
    /// The handle values, pointed to by the attribute.
    handles: Box<[HANDLE]>,
    _borrowed: PhantomData<(BorrowedHandle<'a>, &'a SECURITY_CAPABILITIES)>,
}

impl<'a> HandleList<'a> {
    /// A list for `handles`, which must be non-empty and all distinct (Windows rejects
    /// duplicates with `ERROR_INVALID_PARAMETER`, so they are removed here).
    ///
    /// See `InitializeProcThreadAttributeList`
    /// (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-initializeprocthreadattributelist)
    /// and `UpdateProcThreadAttribute`.
    #[cfg(test)]
    pub(crate) fn new(handles: &[BorrowedHandle<'a>]) -> io::Result<HandleList<'a>> {
        HandleList::with_capabilities(handles, None)
    }

    /// A list for `handles` (as [`new`](Self::new)) and, when given, the
    /// `PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES` attribute that starts the child in an
    /// AppContainer. See `UpdateProcThreadAttribute`
    /// (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-updateprocthreadattribute).
    pub(crate) fn with_capabilities(
        handles: &[BorrowedHandle<'a>],
        capabilities: Option<&'a SECURITY_CAPABILITIES>,
    ) -> io::Result<HandleList<'a>> {
        let count = 1 + u32::from(capabilities.is_some());
        let mut values: Vec<HANDLE> = handles.iter().map(|h| h.as_raw_handle()).collect();
        values.sort_unstable();
        values.dedup();
        if values.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty handle list",
            ));
        }
        let mut size = 0usize;
        // SAFETY: with a null list the call only reports the size needed for `count`
        // attributes; it fails with ERROR_INSUFFICIENT_BUFFER by design.
        unsafe { InitializeProcThreadAttributeList(std::ptr::null_mut(), count, 0, &mut size) };
        if size == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut list = HandleList {
            buffer: vec![0u64; size.div_ceil(8)],
            handles: values.into_boxed_slice(),
            _borrowed: PhantomData,
        };
        // SAFETY: `buffer` has at least `size` bytes, aligned to 8.
        let ok = unsafe { InitializeProcThreadAttributeList(list.raw(), count, 0, &mut size) };
        if ok == 0 {
            // Not initialised: clear the buffer so Drop does not delete it.
            list.buffer.clear();
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the list is initialised for one attribute; the value points to the handle
        // array, which lives (boxed, never moved) as long as the list; its size is in bytes.
        let ok = unsafe {
            UpdateProcThreadAttribute(
                list.raw(),
                0,
                PROC_THREAD_ATTRIBUTE_HANDLE_LIST as usize,
                list.handles.as_ptr().cast(),
                std::mem::size_of_val(&*list.handles),
                std::ptr::null_mut(),
                std::ptr::null(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(capabilities) = capabilities {
            // SAFETY: the list was initialised for `count` = 2 attributes; the value is the
            // caller's SECURITY_CAPABILITIES, borrowed for 'a (as long as the list), with the
            // SIDs it points to owned by the caller for as long; its size is the structure's.
            let ok = unsafe {
                UpdateProcThreadAttribute(
                    list.raw(),
                    0,
                    PROC_THREAD_ATTRIBUTE_SECURITY_CAPABILITIES as usize,
                    (capabilities as *const SECURITY_CAPABILITIES).cast(),
                    std::mem::size_of::<SECURITY_CAPABILITIES>(),
                    std::ptr::null_mut(),
                    std::ptr::null(),
                )
            };
            if ok == 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(list)
    }

    /// The list, for `STARTUPINFOEXW.lpAttributeList`.
    pub(crate) fn raw(&mut self) -> LPPROC_THREAD_ATTRIBUTE_LIST {
        self.buffer.as_mut_ptr().cast()
    }
}

impl Drop for HandleList<'_> {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            // SAFETY: the list was initialised (the buffer is cleared otherwise) and is
            // deleted once, here.
            unsafe { DeleteProcThreadAttributeList(self.raw()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::windows::io::{AsHandle, OwnedHandle};
    use windows_sys::Win32::Foundation::GetHandleInformation;

    fn is_inheritable(handle: &OwnedHandle) -> bool {
        let mut flags = 0u32;
        // SAFETY: the handle is open; `flags` is a local.
        let ok = unsafe { GetHandleInformation(handle.as_raw_handle(), &mut flags) };
        assert_ne!(ok, 0);
        flags & HANDLE_FLAG_INHERIT != 0
    }

    #[test]
    fn the_window_makes_handles_inheritable_only_while_open() {
        let (read, write) = super::super::stdio_pipe::pipe().unwrap();
        assert!(!is_inheritable(&read));
        {
            let _window = InheritWindow::open(&[read.as_handle(), write.as_handle()]).unwrap();
            assert!(is_inheritable(&read) && is_inheritable(&write));
        }
        assert!(!is_inheritable(&read) && !is_inheritable(&write));
    }

    #[test]
    fn a_handle_list_accepts_duplicates_and_refuses_emptiness() {
        let (read, _write) = super::super::stdio_pipe::pipe().unwrap();
        let list = HandleList::new(&[read.as_handle(), read.as_handle()]).unwrap();
        assert_eq!(list.handles.len(), 1);
        assert_eq!(
            HandleList::new(&[]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
