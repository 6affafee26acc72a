//! The AppContainer a sandboxed child runs in: its profile (one per parent executable), its
//! SID, the capability SIDs, and whether this Windows has AppContainers at all.
//!
//! # The profile
//!
//! An AppContainer is named by a profile, registered per user with
//! `CreateAppContainerProfile`; its SID is derived from the name. Every sandboxed child of one
//! parent executable runs in the same profile, named `utility-process.<16 hex digits>`: the
//! 64-bit FNV-1a hash of the parent's full executable path, lowercased (Windows paths are
//! case-insensitive), as UTF-16 ([`profile_name`]). The name fits the documented pattern
//! (`[-_. A-Za-z0-9]+`, at most 64 characters), is stable across runs and library versions,
//! and keeps two applications (or two installations of one) from sharing a container, so a
//! file one of them granted to its container is not open to the other.
//!
//! The profile is created the first time a process forks a sandboxed child (an existing one
//! is reused: `ERROR_ALREADY_EXISTS`, then `DeriveAppContainerSidFromAppContainerName`) and
//! is **never deleted by the library**: a profile is a registry key and a folder under
//! `%LOCALAPPDATA%\Packages`, and deleting it while another instance of the application has
//! children in it would pull their folder away. An uninstaller removes it with
//! `DeleteAppContainerProfile(name)`; `utility_process::sandbox::app_container_name()` gives
//! the name for the running executable.
//!
//! # Capabilities
//!
//! None by default: no network, no user files, no devices. `allow_network` adds
//! `internetClient` (S-1-15-3-1) and `privateNetworkClientServer` (S-1-15-3-3), nothing else
//! ([`capabilities`]). Loopback stays closed to an AppContainer in any case (Windows'
//! loopback isolation), unless the machine's administrator exempts the profile.
//!
//! # Availability, and Wine
//!
//! AppContainers exist from Windows 8. The two `userenv.dll` functions are looked up at run
//! time ([`api`]), never imported, so a Windows without them still loads the program. Wine
//! (8.0) exports `CreateAppContainerProfile` as a stub that aborts its caller, so the Wine
//! check comes first and nothing of this module is ever called there.
//!
//! See "AppContainer isolation"
//! (learn.microsoft.com/windows/win32/secauthz/appcontainer-isolation),
//! `CreateAppContainerProfile`
//! (learn.microsoft.com/windows/win32/api/userenv/nf-userenv-createappcontainerprofile),
//! `DeriveAppContainerSidFromAppContainerName`
//! (learn.microsoft.com/windows/win32/api/userenv/nf-userenv-deriveappcontainersidfromappcontainername)
//! and "Well-known SIDs" (learn.microsoft.com/windows/win32/secauthz/well-known-sids).

use std::io;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use windows_sys::core::{HRESULT, PCWSTR};
use windows_sys::Win32::Foundation::{LocalFree, HLOCAL};
use windows_sys::Win32::Security::Authorization::{ConvertSidToStringSidW, ConvertStringSidToSidW};
use windows_sys::Win32::Security::{FreeSid, IsValidSid, PSID, SID_AND_ATTRIBUTES};
use windows_sys::Win32::System::LibraryLoader::LOAD_LIBRARY_SEARCH_SYSTEM32;
use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LoadLibraryExW};

use super::cmdline::wide_nul;

/// `ALL APPLICATION PACKAGES`: every AppContainer. What installers grant read and execute on
/// an installation directory, so that sandboxed processes can load the program. Named in
/// errors' words and in the tests.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const ALL_APPLICATION_PACKAGES: &str = "S-1-15-2-1";
/// The `internetClient` capability: outbound connections to the internet.
pub(crate) const INTERNET_CLIENT: &str = "S-1-15-3-1";
/// The `privateNetworkClientServer` capability: the home and work networks, both ways.
pub(crate) const PRIVATE_NETWORK_CLIENT_SERVER: &str = "S-1-15-3-3";
/// The low mandatory level (`SECURITY_MANDATORY_LOW_RID`, 0x1000).
pub(crate) const LOW_INTEGRITY: &str = "S-1-16-4096";

/// `HRESULT_FROM_WIN32(ERROR_ALREADY_EXISTS)`: the profile was created before.
const ALREADY_EXISTS: HRESULT = 0x8007_00B7_u32 as HRESULT;

/// The capability SIDs a child gets: none, or the two network ones.
pub(crate) fn capabilities(network: bool) -> &'static [&'static str] {
    if network {
        &[INTERNET_CLIENT, PRIVATE_NETWORK_CLIENT_SERVER]
    } else {
        &[]
    }
}

/// The profile name for children of the executable at `exe` (see the module docs).
pub(crate) fn profile_name(exe: &Path) -> String {
    // FNV-1a, 64 bits: stable forever, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for unit in exe.to_string_lossy().to_lowercase().encode_utf16() {
        for byte in unit.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("utility-process.{hash:016x}")
}

/// How a [`Sid`]'s memory goes back.
#[derive(Debug, Clone, Copy)]
enum Free {
    /// `LocalFree` (`ConvertStringSidToSidW`).
    Local,
    /// `FreeSid` (the userenv functions).
    FreeSid,
}

/// A SID this process allocated, freed as its allocator requires.
#[derive(Debug)]
pub(crate) struct Sid {
    ptr: PSID,
    free: Free,
}

// SAFETY: a SID is plain memory owned by this value alone, never written after creation; the
// Win32 calls that read it may run on any thread.
unsafe impl Send for Sid {}
// SAFETY: as above: shared references only read it.
unsafe impl Sync for Sid {}

impl Sid {
    /// The SID written `text` (`S-1-15-3-1`).
    ///
    /// See `ConvertStringSidToSidW`
    /// (learn.microsoft.com/windows/win32/api/sddl/nf-sddl-convertstringsidtosidw).
    pub(crate) fn parse(text: &str) -> io::Result<Sid> {
        let wide = wide_nul(text.as_ref())?;
        let mut ptr: PSID = std::ptr::null_mut();
        // SAFETY: `wide` is NUL-terminated; `ptr` receives a LocalAlloc'd SID, ours to free.
        if unsafe { ConvertStringSidToSidW(wide.as_ptr(), &mut ptr) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Sid {
            ptr,
            free: Free::Local,
        })
    }

    /// The SID, for a Win32 structure that borrows it while `self` lives.
    pub(crate) fn as_psid(&self) -> PSID {
        self.ptr
    }

    /// Its string form (`S-1-15-2-…`).
    pub(crate) fn to_text(&self) -> io::Result<String> {
        // SAFETY: `self.ptr` is a valid SID for as long as `self`.
        unsafe { sid_text(self.ptr) }
    }
}

impl Drop for Sid {
    fn drop(&mut self) {
        // SAFETY: the pointer came from the allocator `free` names and is freed once, here.
        // See `LocalFree` (learn.microsoft.com/windows/win32/api/winbase/nf-winbase-localfree)
        // and `FreeSid` (learn.microsoft.com/windows/win32/api/securitybaseapi/nf-securitybaseapi-freesid).
        unsafe {
            match self.free {
                Free::Local => {
                    LocalFree(self.ptr as HLOCAL);
                }
                Free::FreeSid => {
                    FreeSid(self.ptr);
                }
            }
        }
    }
}

/// The string form of the SID at `sid`.
///
/// See `ConvertSidToStringSidW`
/// (learn.microsoft.com/windows/win32/api/sddl/nf-sddl-convertsidtostringsidw).
///
/// # Safety
///
/// `sid` must point to memory that stays readable for the call; it need not be valid (the
/// call checks, with `IsValidSid` first).
pub(crate) unsafe fn sid_text(sid: PSID) -> io::Result<String> {
    // SAFETY: the caller keeps `sid` readable; IsValidSid reads only what a SID header says.
    if sid.is_null() || unsafe { IsValidSid(sid) } == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a valid SID",
        ));
    }
    let mut text: windows_sys::core::PWSTR = std::ptr::null_mut();
    // SAFETY: `sid` is valid (checked); `text` receives a LocalAlloc'd string we free below.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut len = 0;
    // SAFETY: the string is NUL-terminated; we read up to the NUL, then free it once.
    let out = unsafe {
        while *text.add(len) != 0 {
            len += 1;
        }
        let out = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text as HLOCAL);
        out
    };
    Ok(out)
}

/// `CreateAppContainerProfile`'s signature.
type CreateProfile = unsafe extern "system" fn(
    PCWSTR,
    PCWSTR,
    PCWSTR,
    *const SID_AND_ATTRIBUTES,
    u32,
    *mut PSID,
) -> HRESULT;
/// `DeriveAppContainerSidFromAppContainerName`'s signature.
type DeriveSid = unsafe extern "system" fn(PCWSTR, *mut PSID) -> HRESULT;

/// The userenv functions, found at run time.
#[derive(Debug, Clone, Copy)]
struct Api {
    create: CreateProfile,
    derive: DeriveSid,
}

/// The AppContainer functions of this Windows, or why there are none.
///
/// See `LoadLibraryExW`
/// (learn.microsoft.com/windows/win32/api/libloaderapi/nf-libloaderapi-loadlibraryexw) and
/// `GetProcAddress`
/// (learn.microsoft.com/windows/win32/api/libloaderapi/nf-libloaderapi-getprocaddress).
fn api() -> Result<Api, &'static str> {
    static API: OnceLock<Result<Api, &'static str>> = OnceLock::new();
    *API.get_or_init(|| {
        if super::handle::running_under_wine() {
            return Err(
                "Wine implements no AppContainer (its CreateAppContainerProfile is a \
                        stub that aborts the caller)",
            );
        }
        let name: Vec<u16> = "userenv.dll".encode_utf16().chain(Some(0)).collect();
        // SAFETY: a NUL-terminated name, loaded from System32 only; the module stays loaded
        // for the life of the process (we never free it), so the addresses stay valid.
        let module = unsafe {
            LoadLibraryExW(
                name.as_ptr(),
                std::ptr::null_mut(),
                LOAD_LIBRARY_SEARCH_SYSTEM32,
            )
        };
        if module.is_null() {
            return Err("userenv.dll cannot be loaded");
        }
        // SAFETY: `module` is loaded; the names are NUL-terminated.
        let (create, derive) = unsafe {
            (
                GetProcAddress(module, c"CreateAppContainerProfile".as_ptr().cast()),
                GetProcAddress(
                    module,
                    c"DeriveAppContainerSidFromAppContainerName".as_ptr().cast(),
                ),
            )
        };
        match (create, derive) {
            // SAFETY: these exports have exactly these signatures (userenv.h); a function
            // pointer is transmuted to another function pointer type of the same size.
            (Some(create), Some(derive)) => unsafe {
                Ok(Api {
                    create: std::mem::transmute::<
                        unsafe extern "system" fn() -> isize,
                        CreateProfile,
                    >(create),
                    derive: std::mem::transmute::<unsafe extern "system" fn() -> isize, DeriveSid>(
                        derive,
                    ),
                })
            },
            _ => Err("this Windows has no AppContainer (Windows 8 or later is needed)"),
        }
    })
}

/// Whether AppContainers can be used here, and if not why.
pub(crate) fn available() -> Result<(), &'static str> {
    api().map(|_| ())
}

/// The SID (as text) of this executable's profile, created on first use (see the module
/// docs). A failure is not remembered: the next fork tries again.
pub(crate) fn profile_sid() -> io::Result<String> {
    static SID: Mutex<Option<String>> = Mutex::new(None);
    let mut cached = SID.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sid) = cached.as_ref() {
        return Ok(sid.clone());
    }
    let api = api().map_err(|why| io::Error::new(io::ErrorKind::Unsupported, why))?;
    let exe = std::env::current_exe()?;
    let name = wide_nul(profile_name(&exe).as_ref())?;
    let file = exe
        .file_name()
        .map_or_else(|| "a program".into(), |f| f.to_string_lossy().into_owned());
    let display = wide_nul(format!("utility-process: children of {file}").as_ref())?;
    let description = wide_nul(
        format!(
            "Sandboxed child processes of {} (the utility-process library)",
            exe.display()
        )
        .as_ref(),
    )?;
    let mut sid: PSID = std::ptr::null_mut();
    // SAFETY: every string is NUL-terminated and outlives the call; no capabilities (a null
    // array of length 0); `sid` receives a SID to free with FreeSid.
    let mut result = unsafe {
        (api.create)(
            name.as_ptr(),
            display.as_ptr(),
            description.as_ptr(),
            std::ptr::null(),
            0,
            &mut sid,
        )
    };
    if result == ALREADY_EXISTS {
        // SAFETY: as above.
        result = unsafe { (api.derive)(name.as_ptr(), &mut sid) };
    }
    if result < 0 {
        return Err(hresult_error(result));
    }
    let sid = Sid {
        ptr: sid,
        free: Free::FreeSid,
    };
    let text = sid.to_text()?;
    *cached = Some(text.clone());
    Ok(text)
}

/// An `HRESULT` failure as an `io::Error`: the Win32 error inside a `FACILITY_WIN32` one, so
/// it prints as Windows' message.
fn hresult_error(result: HRESULT) -> io::Error {
    let bits = result as u32;
    if bits & 0xFFFF_0000 == 0x8007_0000 {
        io::Error::from_raw_os_error((bits & 0xFFFF) as i32)
    } else {
        io::Error::other(format!("HRESULT {bits:#010x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_name_is_stable_case_blind_and_fits_the_documented_pattern() {
        let a = profile_name(Path::new(r"C:\Program Files\App\app.exe"));
        let b = profile_name(Path::new(r"c:\program files\APP\App.EXE"));
        let c = profile_name(Path::new(r"C:\Program Files\Other\app.exe"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() <= 64, "{a}");
        assert!(a
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_. ".contains(ch)));
        // Pinned: a change would orphan every user's existing profile.
        assert_eq!(
            profile_name(Path::new("")),
            "utility-process.cbf29ce484222325"
        );
    }

    #[test]
    fn no_capability_without_network_and_exactly_two_with_it() {
        assert!(capabilities(false).is_empty());
        assert_eq!(capabilities(true), ["S-1-15-3-1", "S-1-15-3-3"]);
    }

    #[test]
    fn well_known_sids_parse_and_print_back() {
        for text in [
            ALL_APPLICATION_PACKAGES,
            INTERNET_CLIENT,
            PRIVATE_NETWORK_CLIENT_SERVER,
            LOW_INTEGRITY,
        ] {
            assert_eq!(Sid::parse(text).unwrap().to_text().unwrap(), text);
        }
        assert!(Sid::parse("not a sid").is_err());
    }

    #[test]
    fn under_wine_the_app_container_is_unavailable_and_never_called() {
        if super::super::handle::running_under_wine() {
            let why = available().unwrap_err();
            assert!(why.contains("Wine"), "{why}");
            assert_eq!(
                profile_sid().unwrap_err().kind(),
                io::ErrorKind::Unsupported
            );
        } else {
            eprintln!("not under Wine: AppContainer available: {:?}", available());
        }
    }
}
