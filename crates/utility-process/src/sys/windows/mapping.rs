//! A view of a shared buffer, fitted to the contract of `sys/mod.rs`: `Mapping::new`,
//! `populate`, `as_slice`, `as_mut_slice`, unmapped on drop.

use std::io;
use std::os::windows::io::BorrowedHandle;

use super::section;

/// A view of `len` bytes of a section (none for an empty buffer).
#[derive(Debug)]
pub(crate) struct Mapping {
    view: Option<section::Mapping>,
    writable: bool,
}

impl Mapping {
    /// Maps `len` bytes of `handle`, writable or read-only. `populate` asks nothing more of
    /// Windows: a view's pages are faulted in as they are first touched.
    pub(crate) fn new(
        handle: BorrowedHandle<'_>,
        len: usize,
        writable: bool,
        _populate: bool,
    ) -> io::Result<Mapping> {
        let view = match len {
            0 => None,
            len => Some(section::map(handle, len, writable)?),
        };
        Ok(Mapping { view, writable })
    }

    /// Whether the pages were faulted in ahead of use: never on Windows (see [`new`](Self::new)).
    pub(crate) fn populate(&self) -> bool {
        false
    }

    /// The mapped bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.view {
            Some(view) => {
                // SAFETY: the view maps `len` readable bytes for as long as it lives, and the
                // slice borrows `self`, which owns the view.
                unsafe { std::slice::from_raw_parts(view.as_ptr(), view.len()) }
            }
            None => &[],
        }
    }

    /// The mapped bytes, writable; `None` for a read-only mapping.
    pub(crate) fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if !self.writable {
            return None;
        }
        match &mut self.view {
            Some(view) => {
                // SAFETY: a writable view of `len` bytes, borrowed mutably through `self`.
                Some(unsafe { std::slice::from_raw_parts_mut(view.as_ptr(), view.len()) })
            }
            None => Some(&mut []),
        }
    }
}
