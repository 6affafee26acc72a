//! Shared buffers as file mappings ("sections") backed by the paging file.
//!
//! A section handle is what travels; each process maps its own view. Read-only sharing is a
//! property of the HANDLE: [`freeze`] makes a handle with `FILE_MAP_READ` access only, and
//! the kernel refuses a writable view through it.
//!
//! Sections are created with an empty DACL (as Chromium does for its read-only regions):
//! the creator's handle has full access because it was granted at creation, but nobody can
//! later get more access than a handle already has, e.g. by duplicating a frozen handle with
//! `FILE_MAP_WRITE` (an access check against an empty DACL grants nothing). Unnamed, so no one
//! can open them by name either.

use std::fmt;
use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};

use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::Security::{
    InitializeAcl, InitializeSecurityDescriptor, SetSecurityDescriptorDacl, ACL, ACL_REVISION,
    SECURITY_ATTRIBUTES, SECURITY_DESCRIPTOR,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, VirtualQuery, FILE_MAP_READ,
    FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE,
    SEC_COMMIT,
};
use windows_sys::Win32::System::SystemServices::SECURITY_DESCRIPTOR_REVISION;

/// What a received section handle allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Only read-only views can be mapped.
    ReadOnly,
    /// Writable views can be mapped too.
    ReadWrite,
}

/// A new unnamed pagefile-backed section of `len` bytes, not inheritable, with an empty DACL
/// (see the module documentation). `InvalidInput` for `len == 0`.
///
/// See `CreateFileMappingW`
/// (learn.microsoft.com/windows/win32/api/memoryapi/nf-memoryapi-createfilemappingw) and
/// "Creating a Security Descriptor for a New Object"
/// (learn.microsoft.com/windows/win32/secauthz/creating-a-security-descriptor-for-a-new-object-in-c--).
pub(crate) fn create(len: usize) -> io::Result<OwnedHandle> {
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a section of zero bytes",
        ));
    }
    let mut acl: ACL = ACL {
        AclRevision: 0,
        Sbz1: 0,
        AclSize: 0,
        AceCount: 0,
        Sbz2: 0,
    };
    // SAFETY: SECURITY_DESCRIPTOR is plain data; InitializeSecurityDescriptor fills it in.
    let mut sd: SECURITY_DESCRIPTOR = unsafe { std::mem::zeroed() };
    // SAFETY: `acl` and `sd` are valid, writable, correctly sized and live until
    // CreateFileMappingW returns (which copies the descriptor into the new object).
    let ok = unsafe {
        InitializeAcl(&mut acl, std::mem::size_of::<ACL>() as u32, ACL_REVISION) != 0
            && InitializeSecurityDescriptor(
                (&mut sd as *mut SECURITY_DESCRIPTOR).cast(),
                SECURITY_DESCRIPTOR_REVISION,
            ) != 0
            && SetSecurityDescriptorDacl((&mut sd as *mut SECURITY_DESCRIPTOR).cast(), 1, &acl, 0)
                != 0
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    let attributes = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: (&mut sd as *mut SECURITY_DESCRIPTOR).cast(),
        bInheritHandle: 0,
    };
    let size = len as u64;
    // SAFETY: INVALID_HANDLE_VALUE asks for a pagefile-backed section; `attributes` points at
    // the descriptor above; no name. The result is checked.
    let raw = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            &attributes,
            PAGE_READWRITE | SEC_COMMIT,
            (size >> 32) as u32,
            size as u32,
            std::ptr::null(),
        )
    };
    if raw.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(raw) })
}

/// A handle to the same section that can only map it read-only (`FILE_MAP_READ` access); the
/// writable handle is closed.
///
/// See `DuplicateHandle`
/// (learn.microsoft.com/windows/win32/api/handleapi/nf-handleapi-duplicatehandle) and
/// "File Mapping Security and Access Rights"
/// (learn.microsoft.com/windows/win32/memory/file-mapping-security-and-access-rights).
pub(crate) fn freeze(handle: OwnedHandle) -> io::Result<OwnedHandle> {
    // Asking for less access than the handle has needs no access check, so the empty DACL
    // does not get in the way.
    let frozen = super::handle::duplicate_as(handle.as_handle(), Some(FILE_MAP_READ))?;
    drop(handle);
    Ok(frozen)
}

/// What a receiver checks before mapping: that `handle` is a section of at least `len` bytes
/// (`InvalidData` otherwise, also for `len == 0`), and whether it can be mapped writable (a
/// writable view is tried and never kept).
pub(crate) fn check(handle: BorrowedHandle<'_>, len: usize) -> io::Result<Access> {
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a shared buffer of zero bytes",
        ));
    }
    let view = map(handle, len, false).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not a section of the announced size",
        )
    })?;
    let mut info: MEMORY_BASIC_INFORMATION = MEMORY_BASIC_INFORMATION {
        BaseAddress: std::ptr::null_mut(),
        AllocationBase: std::ptr::null_mut(),
        AllocationProtect: 0,
        PartitionId: 0,
        RegionSize: 0,
        State: 0,
        Protect: 0,
        Type: 0,
    };
    // SAFETY: VirtualQuery writes at most the size we pass into `info`.
    let got = unsafe {
        VirtualQuery(
            view.as_ptr().cast(),
            &mut info,
            std::mem::size_of_val(&info),
        )
    };
    if got == 0 || info.RegionSize < len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a section smaller than announced",
        ));
    }
    drop(view);
    Ok(match map(handle, len, true) {
        Ok(_) => Access::ReadWrite,
        Err(_) => Access::ReadOnly,
    })
}

/// A view of a section: `len` bytes, writable or read-only; unmapped on drop.
pub(crate) struct Mapping {
    /// Start of the view.
    ptr: *mut u8,
    /// Bytes the caller asked for (the view may be larger: whole pages).
    len: usize,
    /// Whether the view is writable.
    writable: bool,
}

// SAFETY: a view is process-wide memory; the Mapping only hands out its address, and all
// reads and writes through it are the caller's to synchronise (as with any shared memory).
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` gives out nothing but the address and length.
unsafe impl Sync for Mapping {}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("writable", &self.writable)
            .finish()
    }
}

impl Mapping {
    /// Start of the view.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes of the view the caller asked for.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    /// See `UnmapViewOfFile`
    /// (learn.microsoft.com/windows/win32/api/memoryapi/nf-memoryapi-unmapviewoffile).
    fn drop(&mut self) {
        // SAFETY: `ptr` is the base address MapViewOfFile returned, unmapped only here.
        unsafe {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
                Value: self.ptr.cast(),
            })
        };
    }
}

/// Maps `len` bytes of `handle` from offset 0, writable or read-only. Fails (from the kernel)
/// if the handle is not a section, is smaller than `len`, or lacks the access.
///
/// See `MapViewOfFile`
/// (learn.microsoft.com/windows/win32/api/memoryapi/nf-memoryapi-mapviewoffile).
pub(crate) fn map(handle: BorrowedHandle<'_>, len: usize, writable: bool) -> io::Result<Mapping> {
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a mapping of zero bytes",
        ));
    }
    let access = if writable {
        FILE_MAP_WRITE
    } else {
        FILE_MAP_READ
    };
    // SAFETY: the handle is open (borrowed); a failure returns null, which is checked.
    let view = unsafe { MapViewOfFile(handle.as_raw_handle(), access, 0, 0, len) };
    if view.Value.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(Mapping {
        ptr: view.Value.cast(),
        len,
        writable,
    })
}

#[cfg(test)]
mod tests {
    use super::super::handle;
    use super::*;
    use windows_sys::Win32::Foundation::DuplicateHandle;
    use windows_sys::Win32::System::Threading::GetCurrentProcess;

    #[test]
    fn a_new_section_maps_writable_and_its_bytes_are_shared_between_views() {
        let section = create(4096).unwrap();
        assert_eq!(check(section.as_handle(), 4096).unwrap(), Access::ReadWrite);
        let a = map(section.as_handle(), 4096, true).unwrap();
        let b = map(section.as_handle(), 4096, false).unwrap();
        // SAFETY: both views are 4096 bytes of the same live section.
        unsafe {
            a.as_ptr().add(100).write(42);
            assert_eq!(b.as_ptr().add(100).read(), 42);
        }
    }

    #[test]
    fn a_frozen_handle_cannot_be_mapped_writable() {
        let frozen = freeze(create(4096).unwrap()).unwrap();
        assert_eq!(check(frozen.as_handle(), 4096).unwrap(), Access::ReadOnly);
        assert!(map(frozen.as_handle(), 4096, true).is_err());
        assert!(map(frozen.as_handle(), 4096, false).is_ok());
    }

    #[test]
    fn a_frozen_handle_cannot_be_duplicated_back_to_write_access() {
        let frozen = freeze(create(4096).unwrap()).unwrap();
        let mut out = std::ptr::null_mut();
        // SAFETY: asks for a new handle with more access; on success it is closed below.
        let ok = unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                frozen.as_raw_handle(),
                GetCurrentProcess(),
                &mut out,
                FILE_MAP_WRITE | FILE_MAP_READ,
                0,
                0,
            )
        };
        if ok != 0 {
            // SAFETY: a fresh handle we own.
            drop(unsafe { OwnedHandle::from_raw_handle(out) });
            if handle::running_under_wine() {
                eprintln!("skipped: under Wine because Wine does not check a section's DACL when DuplicateHandle asks for more access");
                return;
            }
            panic!("a frozen section handle was upgraded to write access");
        }
    }

    #[test]
    fn a_section_smaller_than_announced_is_refused() {
        let section = create(4096).unwrap();
        let err = check(section.as_handle(), 4096 * 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_handle_that_is_not_a_section_is_refused() {
        let event = handle::event().unwrap();
        assert_eq!(
            check(event.as_handle(), 16).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
