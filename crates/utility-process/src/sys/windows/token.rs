//! Access tokens: what a process's token says about its confinement ([`facts`]), and the
//! restricted low-integrity token of the best-effort fallback ([`restricted_low`]).
//!
//! The facts are read by the parent from a suspended child (`OpenProcessToken` on the handle
//! `CreateProcessW` returned, which has every access right) and by a sandboxed child from its
//! own token, for `sandbox::status()`. A query Windows refuses leaves its fact unknown
//! (`None`), which the verification in `confine` treats as not holding.
//!
//! See "Access Tokens" (learn.microsoft.com/windows/win32/secauthz/access-tokens),
//! `GetTokenInformation`
//! (learn.microsoft.com/windows/win32/api/securitybaseapi/nf-securitybaseapi-gettokeninformation)
//! and `TOKEN_INFORMATION_CLASS`
//! (learn.microsoft.com/windows/win32/api/winnt/ne-winnt-token_information_class).

use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};

use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, HANDLE};
use windows_sys::Win32::Security::{
    CreateRestrictedToken, GetLengthSid, GetSidSubAuthority, GetSidSubAuthorityCount,
    GetTokenInformation, SetTokenInformation, TokenAppContainerSid, TokenCapabilities,
    TokenIntegrityLevel, TokenIsAppContainer, DISABLE_MAX_PRIVILEGE, SID_AND_ATTRIBUTES,
    TOKEN_ACCESS_MASK, TOKEN_ADJUST_DEFAULT, TOKEN_APPCONTAINER_INFORMATION, TOKEN_ASSIGN_PRIMARY,
    TOKEN_DUPLICATE, TOKEN_GROUPS, TOKEN_INFORMATION_CLASS, TOKEN_MANDATORY_LABEL, TOKEN_QUERY,
};
use windows_sys::Win32::System::SystemServices::SE_GROUP_INTEGRITY;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

use super::app_container::{sid_text, Sid, LOW_INTEGRITY};

/// What a token says about confinement; `None` where Windows would not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TokenFacts {
    /// `TokenIsAppContainer`.
    pub(crate) app_container: Option<bool>,
    /// `TokenAppContainerSid`, as text (`None` too for a token in no AppContainer).
    pub(crate) app_container_sid: Option<String>,
    /// The integrity level's RID (`0x1000` low, `0x2000` medium, `0x3000` high).
    pub(crate) integrity: Option<u32>,
    /// `TokenCapabilities`, as text.
    pub(crate) capabilities: Option<Vec<String>>,
}

/// Opens the token of `process` with `access`.
///
/// See `OpenProcessToken`
/// (learn.microsoft.com/windows/win32/api/processthreadsapi/nf-processthreadsapi-openprocesstoken).
pub(crate) fn open(
    process: BorrowedHandle<'_>,
    access: TOKEN_ACCESS_MASK,
) -> io::Result<OwnedHandle> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the process handle is open for the call (borrowed); `token` is a local.
    if unsafe { OpenProcessToken(process.as_raw_handle(), access, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new token handle, ours alone.
    Ok(unsafe { OwnedHandle::from_raw_handle(token) })
}

/// This process's own token, for queries.
pub(crate) fn own() -> io::Result<OwnedHandle> {
    // SAFETY: the pseudo handle of the current process is always valid and needs no closing.
    let me = unsafe { BorrowedHandle::borrow_raw(GetCurrentProcess()) };
    open(me, TOKEN_QUERY)
}

/// Reads the confinement facts of `token` (opened with `TOKEN_QUERY`).
pub(crate) fn facts(token: BorrowedHandle<'_>) -> TokenFacts {
    TokenFacts {
        app_container: query(token, TokenIsAppContainer)
            .ok()
            .and_then(|b| b.first().copied())
            .map(|word| {
                // A DWORD at the start of the buffer.
                let bytes = word.to_ne_bytes();
                u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != 0
            }),
        app_container_sid: query(token, TokenAppContainerSid).ok().and_then(|b| {
            // SAFETY: the buffer holds a TOKEN_APPCONTAINER_INFORMATION (aligned: u64 units),
            // whose SID, if any, points inside the same buffer, alive for the block.
            unsafe {
                let info = &*(b.as_ptr() as *const TOKEN_APPCONTAINER_INFORMATION);
                sid_text(info.TokenAppContainer).ok()
            }
        }),
        integrity: query(token, TokenIntegrityLevel).ok().and_then(|b| {
            // SAFETY: the buffer holds a TOKEN_MANDATORY_LABEL whose SID points inside it.
            unsafe {
                let label = &*(b.as_ptr() as *const TOKEN_MANDATORY_LABEL);
                last_sub_authority(label.Label.Sid)
            }
        }),
        capabilities: query(token, TokenCapabilities).ok().and_then(|b| {
            // SAFETY: the buffer holds a TOKEN_GROUPS of `GroupCount` entries (the array
            // continues past the declared one), whose SIDs point inside the same buffer.
            unsafe {
                let groups = &*(b.as_ptr() as *const TOKEN_GROUPS);
                let first = std::ptr::addr_of!(groups.Groups).cast::<SID_AND_ATTRIBUTES>();
                (0..groups.GroupCount as usize)
                    .map(|i| sid_text((*first.add(i)).Sid).ok())
                    .collect()
            }
        }),
    }
}

/// The RID at the end of `sid` (an integrity level's SID is `S-1-16-<rid>`).
///
/// # Safety
///
/// `sid` must be null or point to a readable SID.
unsafe fn last_sub_authority(sid: windows_sys::Win32::Security::PSID) -> Option<u32> {
    if sid.is_null() {
        return None;
    }
    // SAFETY: the caller gives a readable SID; both calls return pointers into it. See
    // `GetSidSubAuthorityCount`
    // (learn.microsoft.com/windows/win32/api/securitybaseapi/nf-securitybaseapi-getsidsubauthoritycount).
    unsafe {
        let count = *GetSidSubAuthorityCount(sid);
        if count == 0 {
            return None;
        }
        Some(*GetSidSubAuthority(sid, u32::from(count) - 1))
    }
}

/// `GetTokenInformation(token, class)` into a buffer of the size Windows asks for, aligned
/// for the structures it holds.
fn query(token: BorrowedHandle<'_>, class: TOKEN_INFORMATION_CLASS) -> io::Result<Vec<u64>> {
    let mut size = 0u32;
    // SAFETY: with a null buffer of length 0 the call only writes the size it needs.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            class,
            std::ptr::null_mut(),
            0,
            &mut size,
        )
    };
    let error = io::Error::last_os_error();
    if ok == 0 && error.raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32) {
        return Err(error);
    }
    let mut buffer = vec![0u64; (size as usize).div_ceil(8).max(1)];
    let capacity = (buffer.len() * 8) as u32;
    // SAFETY: the buffer has `capacity` writable bytes, aligned to 8; the token is open.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            class,
            buffer.as_mut_ptr().cast(),
            capacity,
            &mut size,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buffer)
}

/// A primary token for a child: ours, with every privilege but `SeChangeNotifyPrivilege`
/// removed (`DISABLE_MAX_PRIVILEGE`) and the integrity level lowered to low. A process with it
/// cannot write to anything of medium integrity (the user's files, registry, other
/// processes), but can still read what the user can and use the network: the best-effort
/// fallback when there is no AppContainer, and weaker than one.
///
/// See `CreateRestrictedToken`
/// (learn.microsoft.com/windows/win32/api/securitybaseapi/nf-securitybaseapi-createrestrictedtoken),
/// `SetTokenInformation`
/// (learn.microsoft.com/windows/win32/api/securitybaseapi/nf-securitybaseapi-settokeninformation)
/// and "Mandatory Integrity Control"
/// (learn.microsoft.com/windows/win32/secauthz/mandatory-integrity-control).
pub(crate) fn restricted_low() -> io::Result<OwnedHandle> {
    // SAFETY: the pseudo handle of the current process is always valid.
    let me = unsafe { BorrowedHandle::borrow_raw(GetCurrentProcess()) };
    let ours = open(
        me,
        TOKEN_DUPLICATE | TOKEN_QUERY | TOKEN_ASSIGN_PRIMARY | TOKEN_ADJUST_DEFAULT,
    )?;
    let mut raw: HANDLE = std::ptr::null_mut();
    // SAFETY: `ours` is open with TOKEN_DUPLICATE; no SIDs to disable, no privileges listed,
    // no restricting SIDs (null arrays of length 0); `raw` is a local.
    let ok = unsafe {
        CreateRestrictedToken(
            ours.as_raw_handle(),
            DISABLE_MAX_PRIVILEGE,
            0,
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            std::ptr::null(),
            &mut raw,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new token handle, ours alone (with all access, as its creator).
    let token = unsafe { OwnedHandle::from_raw_handle(raw) };
    let low = Sid::parse(LOW_INTEGRITY)?;
    let label = TOKEN_MANDATORY_LABEL {
        Label: SID_AND_ATTRIBUTES {
            Sid: low.as_psid(),
            Attributes: SE_GROUP_INTEGRITY as u32,
        },
    };
    // SAFETY: `low` is a valid SID that outlives the call.
    let sid_len = unsafe { GetLengthSid(low.as_psid()) };
    let size = std::mem::size_of::<TOKEN_MANDATORY_LABEL>() as u32 + sid_len;
    // SAFETY: the label and the SID it points to live past the call; the size counts both, as
    // the documentation's example does.
    let ok = unsafe {
        SetTokenInformation(
            token.as_raw_handle(),
            TokenIntegrityLevel,
            (&label as *const TOKEN_MANDATORY_LABEL).cast(),
            size,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::windows::io::AsHandle;

    #[test]
    fn our_own_token_is_no_app_container_and_has_an_integrity_level() {
        let token = own().unwrap();
        let facts = facts(token.as_handle());
        eprintln!("our token: {facts:?}");
        assert_ne!(facts.app_container, Some(true));
        assert_eq!(facts.app_container_sid, None);
        if !super::super::handle::running_under_wine() {
            assert!(
                facts.integrity.is_some_and(|rid| rid >= 0x2000),
                "{facts:?}"
            );
        }
    }

    #[test]
    fn a_restricted_token_is_made_and_reads_as_low_integrity_on_windows() {
        let token = restricted_low().unwrap();
        let facts = facts(token.as_handle());
        eprintln!("restricted token: {facts:?}");
        if super::super::handle::running_under_wine() {
            eprintln!("skipped: the low-integrity check of a restricted token under Wine because Wine ignores token integrity");
            return;
        }
        assert_eq!(facts.integrity, Some(0x1000));
    }
}
