//! Shared memory: sealed memfds, mapped into each process that holds one.
//!
//! A buffer is a `memfd` whose size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW`) from the start:
//! no holder can truncate it under another's mapping, which would turn the other's reads into
//! SIGBUS. Freezing a buffer removes its writable mapping and adds `F_SEAL_WRITE`: from then
//! on no process can change it, so a receiver may trust what it reads.
//!
//! Every mapping is `MADV_DONTFORK`: a fork made by this process (for a child, before its
//! exec, or for the guardian) does not copy it, so no other process ends up holding it.
//!
//! A received descriptor is checked before it is mapped: it must be a memfd (it answers
//! `F_GET_SEALS`), its size must be the announced one and sealed, and a buffer announced as
//! frozen must carry the write seal.
//!
//! # Populating in bulk
//!
//! Touching a fresh mapping page by page costs a fault per 4 KiB page (16,384 for 64 MiB;
//! shmem gets no huge pages at fault time while
//! `/sys/kernel/mm/transparent_hugepage/shmem_enabled` says `never`, and `MFD_HUGETLB` needs
//! pages reserved by the administrator). A new buffer gets huge pages all the same, by
//! collapse ([`populate_new`]). [`populate`]
//! asks the kernel to fill the page table in one call instead (`MADV_POPULATE_WRITE` or
//! `_READ`, Linux 5.14); a kernel without them answers `EINVAL` and the mapping is simply
//! faulted in on use, as before. Measured on a 2-vCPU VM (Linux 6.18), 64 MiB: a fresh buffer
//! written by faults 15–27 ms, `MAP_POPULATE` then writing 19–21 ms (a shared mapping is
//! populated for reading, and the writes fault again), `MADV_POPULATE_WRITE` then writing
//! 13–16 ms; an allocated buffer read by faults 3.5–7 ms, `MADV_POPULATE_READ` then reading
//! 3.2 ms. `fallocate` before mapping bought nothing (the pages are zeroed at the first fault
//! anyway).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::sys::mapping::Mapping;
use crate::sys::unix::cvt;

/// Seals every buffer carries from birth.
const SIZE_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
/// Seals a frozen buffer adds.
const FROZEN_SEALS: libc::c_int = libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// A memfd of fixed size, sealed against resizing.
pub(crate) fn create(len: usize) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let raw = unsafe {
        libc::memfd_create(
            c"utility-process-buffer".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    let raw = cvt(raw)?;
    // SAFETY: memfd_create succeeded: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let size = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer too large"))?;
    // SAFETY: ftruncate and fcntl act on the descriptor we own.
    unsafe {
        cvt(libc::ftruncate(fd.as_raw_fd(), size))?;
        cvt(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SIZE_SEALS))?;
    }
    Ok(fd)
}

/// Makes a buffer immutable: adds the write seal (which needs every writable mapping gone).
/// The same descriptor comes back, now naming a buffer nobody can write. Whether another
/// process had it writable (`_shared`) does not matter here: the seal fails (`EBUSY`) while
/// any process maps it writable, and once added it binds every descriptor, theirs too.
pub(crate) fn freeze(fd: OwnedFd, _shared: bool) -> io::Result<OwnedFd> {
    // SAFETY: F_ADD_SEALS on a descriptor we own.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, FROZEN_SEALS) })?;
    Ok(fd)
}

/// Checks a received descriptor: a memfd of exactly `len` bytes, size sealed, and write-sealed
/// if `frozen`. Returns a reason for the protocol violation otherwise.
pub(crate) fn check(fd: BorrowedFd<'_>, len: u64, frozen: bool) -> Result<(), &'static str> {
    // SAFETY: F_GET_SEALS only reads; it fails on anything but a memfd (or shmem file).
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 {
        return Err("a shared buffer that is not a memfd");
    }
    if seals & SIZE_SEALS != SIZE_SEALS {
        return Err("a shared buffer whose size is not sealed");
    }
    if frozen && seals & libc::F_SEAL_WRITE == 0 {
        return Err("a read-only shared buffer that is not sealed against writes");
    }
    // SAFETY: fstat writes into the zeroed stat we own.
    let stat = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut stat) != 0 {
            return Err("a shared buffer that cannot be inspected");
        }
        stat
    };
    if u64::try_from(stat.st_size).ok() != Some(len) {
        return Err("a shared buffer whose size is not the announced one");
    }
    Ok(())
}

/// A memfd's identity: its device and inode numbers.
pub(crate) type Identity = (u64, u64);

/// Which memory object a descriptor refers to. Two descriptors with the same identity, both
/// open, refer to the same memory.
pub(crate) fn identity(fd: BorrowedFd<'_>) -> io::Result<Identity> {
    // SAFETY: fstat writes into the zeroed stat we own.
    let stat = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        cvt(libc::fstat(fd.as_raw_fd(), &mut stat))?;
        stat
    };
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    Ok((u64::from(stat.st_dev), u64::from(stat.st_ino)))
}

/// Which of the `parked` buffers (their identities and mappings) is the memory of `fd`, a
/// buffer that has just come back mapped at `back`: the one with the same identity.
pub(crate) fn recognise<'a>(
    fd: BorrowedFd<'_>,
    #[cfg_attr(not(test), allow(unused_variables))] back: &mut Mapping,
    mut parked: impl Iterator<Item = (&'a Identity, &'a Mapping)>,
) -> Option<usize> {
    #[cfg(test)]
    if RECOGNISE_BY_CONTENT.get() {
        return crate::sys::unix::probe::find(back, parked.map(|(_, map)| map));
    }
    let identity = identity(fd).ok()?;
    parked.position(|(parked, _)| *parked == identity)
}

#[cfg(test)]
thread_local! {
    /// Makes [`recognise`] work as on macOS, by what the memory shows (`probe.rs`), so that
    /// the unit tests of `BufferPool` run that way too where they can run.
    pub(crate) static RECOGNISE_BY_CONTENT: std::cell::Cell<bool> = const {
        std::cell::Cell::new(false)
    };
}

/// Keeps a mapping out of every process this one forks: a fork (of a child about to exec, or
/// of the guardian, which never does) would otherwise copy a writable mapping into a process
/// that keeps it, and the write seal of `freeze` would then fail with EBUSY for as long as
/// that process lives (`madvise(2)` `MADV_DONTFORK`).
///
/// # Safety
///
/// `ptr` and `len` are a mapping this process made and still holds.
pub(crate) unsafe fn keep_from_forks(ptr: *mut libc::c_void, len: usize) {
    // SAFETY: advice on a region the caller vouches for; it changes no byte of it.
    unsafe { libc::madvise(ptr, len, libc::MADV_DONTFORK) };
}

/// Where a mapping of `len` bytes should start: on a huge-page boundary when it spans at
/// least one huge page, so that the huge pages of the buffer (see [`populate_new`]) are
/// mapped whole, one page-table entry per 2 MiB, in every process that maps it. The kernel
/// aligns shmem mappings only when shmem huge pages are enabled (`shmem_get_unmapped_area`
/// in `mm/shmem.c`), so [`Mapping`](crate::sys::mapping::Mapping) aligns them itself.
/// `1` means "wherever the kernel likes".
pub(crate) fn alignment(len: usize) -> usize {
    if len >= HUGE_PAGE {
        HUGE_PAGE
    } else {
        1
    }
}

/// The size of a huge page mapped by one page-middle-directory entry with 4 KiB base pages
/// (x86_64, and aarch64's usual granule; with larger granules the collapse below is refused
/// and the buffer keeps small pages).
const HUGE_PAGE: usize = 2 << 20;

/// `MADV_COLLAPSE` (Linux 6.1, `include/uapi/asm-generic/mman-common.h`; musl's `libc`
/// bindings lack it). The value is the generic one, shared by x86_64 and aarch64.
const MADV_COLLAPSE: libc::c_int = 25;

/// Gives a new, empty writable buffer all its memory in bulk, in huge pages where the kernel
/// will make them: then filling it costs no page fault, another process maps each 2 MiB with
/// one page-table entry, and unmapping and freeing it take microseconds instead of
/// milliseconds. Best effort; returns whether every page is now mapped.
///
/// Shmem gets huge pages at fault time only when `shmem_enabled` allows it (`advise`, after
/// `MADV_HUGEPAGE`, which is asked for here too); it is `never` on most systems. But
/// `madvise(2)` `MADV_COLLAPSE` (Linux 6.1) makes huge pages whatever that setting says,
/// short of `deny`: it replaces the small pages of each 2 MiB extent by one huge page,
/// zero-filling the holes. It refuses a range with no page at all (`EINVAL`, measured), so
/// the first byte of each extent is touched first. Then `MADV_POPULATE_WRITE` maps whatever
/// is left: the tail beyond the last whole huge page, and everything on a kernel that
/// refused the collapse (too old, THP compiled out, `deny`, or no free huge page: `EINVAL`,
/// `EAGAIN`, `ENOMEM`), which then costs what it cost before.
///
/// Measured for 64 MiB on a 2-vCPU VM (Linux 6.18, `shmem_enabled` = `never`): populating
/// page by page 11–13 ms, touching and collapsing 2.9 ms; a receiver then populates its
/// mapping in 0.02 ms instead of 1.4–2.9 ms, and unmapping and freeing both mappings take
/// 0.1 ms instead of 3.5 ms. Filling and reading cost the same either way.
///
/// # Safety
///
/// `ptr` and `len` are a writable mapping of a new buffer, made by this process and still
/// held, that no Rust value refers to yet (its bytes are zero and are written here).
pub(crate) unsafe fn populate_new(ptr: *mut libc::c_void, len: usize) -> bool {
    // SAFETY: advice on a region the caller vouches for; it changes no byte of it.
    unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
    let whole = if ptr as usize % HUGE_PAGE == 0 {
        len - len % HUGE_PAGE
    } else {
        0
    };
    if whole > 0 {
        for offset in (0..whole).step_by(HUGE_PAGE) {
            // SAFETY: `offset < len`: inside the writable mapping, which nothing else
            // borrows; the byte is a zero of a new buffer, written as a zero.
            unsafe { ptr.cast::<u8>().add(offset).write_volatile(0) };
        }
        // SAFETY: as the advice above; collapsing changes how the bytes are backed, not
        // what they are.
        unsafe { libc::madvise(ptr, whole, MADV_COLLAPSE) };
    }
    // SAFETY: as the advice above.
    unsafe { populate(ptr, len, true) }
}

/// Fills the page table of a whole mapping in one system call (allocating the pages the
/// memfd does not have yet), so that using it costs no page faults. Best effort: on a kernel
/// older than 5.14 (`EINVAL`), or without the memory, the pages are faulted in on use
/// instead. Returns whether the kernel did it.
///
/// # Safety
///
/// As [`keep_from_forks`].
pub(crate) unsafe fn populate(ptr: *mut libc::c_void, len: usize, writable: bool) -> bool {
    let advice = if writable {
        libc::MADV_POPULATE_WRITE
    } else {
        libc::MADV_POPULATE_READ
    };
    // SAFETY: advice on a region the caller vouches for. Populating changes no byte of it.
    unsafe { libc::madvise(ptr, len, advice) == 0 }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sys::mapping::Mapping;

    /// Two whole huge pages and a tail that is not even a whole small page.
    const LEN: usize = 2 * HUGE_PAGE + 4096 + 100;

    /// Why this kernel will not collapse shmem into huge pages, if it will not: THP compiled
    /// out, shmem huge pages denied, or a kernel older than 6.1 (no `MADV_COLLAPSE`).
    fn collapse_refused() -> Option<String> {
        let setting = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
        match std::fs::read_to_string(setting) {
            Err(e) => {
                return Some(format!(
                    "{setting} unreadable ({e}): no transparent huge pages"
                ))
            }
            Ok(text) if text.contains("[deny]") => return Some(format!("{setting} says deny")),
            Ok(_) => {}
        }
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit());
        let major: u32 = numbers.next()?.parse().ok()?;
        let minor: u32 = numbers.next()?.parse().ok()?;
        (major, minor)
            .lt(&(6, 1))
            .then(|| format!("kernel {} has no MADV_COLLAPSE (6.1)", release.trim()))
    }

    /// The `/proc/self/smaps` record of the mapping that starts at `start`: its permissions
    /// and its `ShmemPmdMapped` in KiB.
    fn smaps_of(start: usize) -> (String, u64) {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("reading smaps");
        let head = format!("{start:x}-");
        let record = smaps
            .split_inclusive('\n')
            .skip_while(|line| !line.starts_with(&head))
            .take_while(|line| !line.starts_with("VmFlags"))
            .collect::<String>();
        let perms = record
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let pmd = record
            .lines()
            .find_map(|line| line.strip_prefix("ShmemPmdMapped:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no ShmemPmdMapped for {head}:\n{record}"));
        (perms, pmd)
    }

    #[test]
    fn a_new_buffer_is_backed_by_huge_pages_and_every_mapping_of_it_maps_them_whole() {
        if let Some(why) = collapse_refused() {
            eprintln!("skipped: {why}");
            return;
        }
        let fd = create(LEN).unwrap();
        let mut owner = Mapping::new(fd.as_fd(), LEN, true, true).unwrap();
        let bytes = owner.as_mut_slice().unwrap();
        assert!(bytes.iter().all(|&b| b == 0), "a new buffer is zero-filled");
        bytes[0] = 1;
        bytes[LEN - 1] = 2;
        // A receiver maps the same memory read-only and populates it, as `adopt` does.
        let reader = Mapping::new(fd.as_fd(), LEN, false, false).unwrap();
        assert!(reader.populate());
        assert_eq!((reader.as_slice()[0], reader.as_slice()[LEN - 1]), (1, 2));
        for (who, mapping) in [("owner", owner.as_slice()), ("reader", reader.as_slice())] {
            let start = mapping.as_ptr() as usize;
            assert_eq!(start % HUGE_PAGE, 0, "the {who}'s mapping is aligned");
            let (_, pmd_kib) = smaps_of(start);
            assert_eq!(
                pmd_kib,
                (2 * HUGE_PAGE / 1024) as u64,
                "the {who} maps both huge pages whole"
            );
        }
    }

    #[test]
    fn an_aligned_mapping_gives_back_the_address_space_it_reserved_around_itself() {
        let fd = create(LEN).unwrap();
        let mapping = Mapping::new(fd.as_fd(), LEN, false, false).unwrap();
        let start = mapping.as_slice().as_ptr() as usize;
        let end = (start + LEN).next_multiple_of(4096);
        assert_eq!(start % HUGE_PAGE, 0);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next().unwrap(), fields.next().unwrap());
            let (from, to) = range.split_once('-').unwrap();
            let from = usize::from_str_radix(from, 16).unwrap();
            let to = usize::from_str_radix(to, 16).unwrap();
            let touches = to == start || from == end;
            assert!(
                !(touches && perms == "---p"),
                "a piece of the reservation is left beside the mapping: {line}"
            );
        }
        // The whole buffer is mapped, its unaligned tail included.
        assert_eq!(mapping.as_slice()[LEN - 1], 0);
        let (perms, _) = smaps_of(start);
        assert_eq!(perms, "r--s");
    }

    #[test]
    fn a_buffer_smaller_than_a_huge_page_keeps_small_pages_wherever_the_kernel_maps_it() {
        assert_eq!(alignment(HUGE_PAGE - 1), 1);
        let fd = create(64 << 10).unwrap();
        let mut mapping = Mapping::new(fd.as_fd(), 64 << 10, true, true).unwrap();
        mapping.as_mut_slice().unwrap().fill(7);
        let (perms, pmd_kib) = smaps_of(mapping.as_slice().as_ptr() as usize);
        assert_eq!((perms.as_str(), pmd_kib), ("rw-s", 0));
    }
}
