//! One job object per child: the child and everything it starts, held together.
//!
//! # What the job guarantees
//!
//! - `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`: when the last handle to the job closes, every
//!   process in it is terminated. The parent holds the only handle (it is never inheritable,
//!   and the child's handle list never names it), so when the parent drops the [`Job`] — or
//!   dies in any way, since Windows closes a dead process's handles — the child and its whole
//!   tree die with it. There is no orphan to clean up.
//! - `JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION`: a crashing process ends at once with its
//!   exception code instead of waiting behind a Windows Error Reporting dialog. This is why the
//!   backend never touches the child's `SetErrorMode`.
//! - No `JOB_OBJECT_LIMIT_BREAKAWAY_OK`: nothing in the job can start a process outside it.
//! - The limits of [`JobLimits`]: `JOB_OBJECT_LIMIT_PROCESS_MEMORY` (committed memory of each
//!   process: an allocation beyond it fails, which a Rust child turns into an abort),
//!   `JOB_OBJECT_LIMIT_PROCESS_TIME` (user-mode CPU time of each process: the system
//!   terminates a process that uses more) and `JOB_OBJECT_LIMIT_ACTIVE_PROCESS` (processes
//!   alive at once in the job, the child included: starting one more fails).
//!
//! - For a sandboxed child, the UI limits ([`UI_LIMITS`], set by [`Job::restrict_ui`] before
//!   the child's first instruction): no other desktop, no display settings, no logging off,
//!   no global atoms, no USER handles (windows, hooks) of processes outside the job, no
//!   clipboard either way, no system parameters (`SystemParametersInfo`). Chromium's
//!   renderers have the same set (`JOB_OBJECT_UILIMIT_ALL` less the IME limit, which only
//!   matters to a process with windows).
//!
//! Since Windows 8 jobs nest, so all of this works when the parent itself runs inside a job
//! (a CI runner, a terminal, another instance of this library); on older Windows assigning
//! the child fails and `spawn` reports it.
//!
//! # Which limit was hit
//!
//! The job posts notifications to an I/O completion port
//! (`JobObjectAssociateCompletionPortInformation`):
//! `JOB_OBJECT_MSG_PROCESS_MEMORY_LIMIT`, `JOB_OBJECT_MSG_END_OF_PROCESS_TIME` and
//! `JOB_OBJECT_MSG_ACTIVE_PROCESS_LIMIT` are the three we record. We chose these over
//! `JobObjectLimitViolationInformation`, which reports only the job-wide and notification
//! limits, not the per-process memory, per-process time and process-count limits we set.
//!
//! One port and one thread serve every job of the process ([`Watcher`]): the thread drains
//! the port as messages arrive, so the kernel's queue stays short even when a child starts
//! and ends processes in a loop (each posts two messages), and no job needs a thread of its
//! own. The completion key of each job is a number naming it in the watcher's table; a
//! message for a job already dropped is ignored. Only job notifications are ever posted to
//! this port: no file handle is associated with it.
//!
//! Microsoft documents that these messages are notifications whose delivery "is not
//! guaranteed", so [`Job::limit_hit`] is best effort: `Some` is certain, `None` is not proof.
//! A message may also arrive a moment after the process it is about has ended.
//!
//! See `JOBOBJECT_BASIC_LIMIT_INFORMATION`
//! (learn.microsoft.com/windows/win32/api/winnt/ns-winnt-jobobject_basic_limit_information),
//! `JOBOBJECT_ASSOCIATE_COMPLETION_PORT`
//! (learn.microsoft.com/windows/win32/api/winnt/ns-winnt-jobobject_associate_completion_port)
//! and "Nested Jobs" (learn.microsoft.com/windows/win32/procthread/nested-jobs).

use std::collections::HashMap;
use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use windows_sys::Win32::Foundation::{HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectAssociateCompletionPortInformation,
    JobObjectBasicLimitInformation, JobObjectBasicUIRestrictions,
    JobObjectExtendedLimitInformation, QueryInformationJobObject, SetInformationJobObject,
    TerminateJobObject, JOBOBJECT_ASSOCIATE_COMPLETION_PORT, JOBOBJECT_BASIC_LIMIT_INFORMATION,
    JOBOBJECT_BASIC_UI_RESTRICTIONS, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JOB_OBJECT_LIMIT_ACTIVE_PROCESS, JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION,
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, JOB_OBJECT_LIMIT_PROCESS_MEMORY,
    JOB_OBJECT_LIMIT_PROCESS_TIME, JOB_OBJECT_UILIMIT_DESKTOP, JOB_OBJECT_UILIMIT_DISPLAYSETTINGS,
    JOB_OBJECT_UILIMIT_EXITWINDOWS, JOB_OBJECT_UILIMIT_GLOBALATOMS, JOB_OBJECT_UILIMIT_HANDLES,
    JOB_OBJECT_UILIMIT_READCLIPBOARD, JOB_OBJECT_UILIMIT_SYSTEMPARAMETERS,
    JOB_OBJECT_UILIMIT_WRITECLIPBOARD,
};
use windows_sys::Win32::System::Threading::INFINITE;
use windows_sys::Win32::System::IO::{CreateIoCompletionPort, GetQueuedCompletionStatus};

use super::spawn::{JobLimit, JobLimits};

/// `JOB_OBJECT_MSG_END_OF_PROCESS_TIME` (winnt.h): a process used up its CPU time.
const MSG_END_OF_PROCESS_TIME: u32 = 2;
/// `JOB_OBJECT_MSG_ACTIVE_PROCESS_LIMIT` (winnt.h): a process could not start in the job.
const MSG_ACTIVE_PROCESS_LIMIT: u32 = 3;
/// `JOB_OBJECT_MSG_PROCESS_MEMORY_LIMIT` (winnt.h): a process tried to commit too much.
const MSG_PROCESS_MEMORY_LIMIT: u32 = 9;

/// A job object holding one child's process tree, killed when dropped.
#[derive(Debug)]
pub(crate) struct Job {
    /// The job; the only handle to it anywhere.
    handle: OwnedHandle,
    /// This job's number in the watcher's table, and its completion key.
    key: usize,
    /// The first limit hit: 0 for none, else [`limit_code`]. The watcher writes it.
    hit: Arc<AtomicU8>,
}

impl Job {
    /// A new, empty job with kill-on-close, die-on-unhandled-exception and `limits`.
    ///
    /// `InvalidInput` for a memory limit of 0 or larger than the address space, or a process
    /// limit of 0. See `CreateJobObjectW`
    /// (learn.microsoft.com/windows/win32/api/jobapi2/nf-jobapi2-createjobobjectw) and
    /// `SetInformationJobObject`
    /// (learn.microsoft.com/windows/win32/api/jobapi2/nf-jobapi2-setinformationjobobject).
    pub(crate) fn new(limits: &JobLimits) -> io::Result<Job> {
        let info = limit_information(limits)?;
        let watcher = watcher()?;
        // SAFETY: no security attributes (so the handle is not inheritable) and no name.
        let raw = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if raw.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new job handle that nothing else owns.
        let handle = unsafe { OwnedHandle::from_raw_handle(raw) };
        set_information(&handle, JobObjectExtendedLimitInformation, &info)?;

        let key = watcher.next_key.fetch_add(1, Ordering::Relaxed);
        let hit = Arc::new(AtomicU8::new(0));
        lock(&watcher.jobs).insert(key, hit.clone());
        let job = Job { handle, key, hit };
        let port = JOBOBJECT_ASSOCIATE_COMPLETION_PORT {
            CompletionKey: key as *mut core::ffi::c_void,
            CompletionPort: watcher.port.as_raw_handle(),
        };
        set_information(
            &job.handle,
            JobObjectAssociateCompletionPortInformation,
            &port,
        )?;
        Ok(job)
    }

    /// The job handle, for tests that read the limits back.
    #[cfg(test)]
    pub(crate) fn handle(&self) -> BorrowedHandle<'_> {
        // SAFETY: `self.handle` is open for as long as the borrow of `self`.
        unsafe { BorrowedHandle::borrow_raw(self.handle.as_raw_handle()) }
    }

    /// Puts `process` (a suspended child, normally) into this job.
    ///
    /// See `AssignProcessToJobObject`
    /// (learn.microsoft.com/windows/win32/api/jobapi2/nf-jobapi2-assignprocesstojobobject).
    pub(crate) fn assign(&self, process: BorrowedHandle<'_>) -> io::Result<()> {
        // SAFETY: both handles are open for the duration of the call.
        let ok = unsafe {
            AssignProcessToJobObject(self.handle.as_raw_handle(), process.as_raw_handle())
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Terminates every process in the job with exit code `code`. Succeeds on an empty job.
    ///
    /// Termination is asynchronous: wait on a process handle to know it has ended. See
    /// `TerminateJobObject`
    /// (learn.microsoft.com/windows/win32/api/jobapi2/nf-jobapi2-terminatejobobject).
    pub(crate) fn terminate(&self, code: u32) -> io::Result<()> {
        // SAFETY: the job handle is open; it has JOB_OBJECT_ALL_ACCESS as its creator's.
        let ok = unsafe { TerminateJobObject(self.handle.as_raw_handle(), code) };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sets the UI limits of a sandboxed child ([`UI_LIMITS`]).
    ///
    /// See `JOBOBJECT_BASIC_UI_RESTRICTIONS`
    /// (learn.microsoft.com/windows/win32/api/winnt/ns-winnt-jobobject_basic_ui_restrictions).
    pub(crate) fn restrict_ui(&self) -> io::Result<()> {
        let ui = JOBOBJECT_BASIC_UI_RESTRICTIONS {
            UIRestrictionsClass: UI_LIMITS,
        };
        set_information(&self.handle, JobObjectBasicUIRestrictions, &ui)
    }

    /// The UI limits the job has, as Windows reads them back.
    pub(crate) fn ui_restrictions(&self) -> io::Result<u32> {
        ui_restrictions_of(self.handle.as_raw_handle())
    }

    /// The active-process limit the job has, as Windows reads it back (`None`: no limit).
    ///
    /// See `QueryInformationJobObject`
    /// (learn.microsoft.com/windows/win32/api/jobapi2/nf-jobapi2-queryinformationjobobject).
    pub(crate) fn active_process_limit(&self) -> io::Result<Option<u32>> {
        let mut info = JOBOBJECT_BASIC_LIMIT_INFORMATION::default();
        query_information(
            self.handle.as_raw_handle(),
            JobObjectBasicLimitInformation,
            &mut info,
        )?;
        Ok((info.LimitFlags & JOB_OBJECT_LIMIT_ACTIVE_PROCESS != 0)
            .then_some(info.ActiveProcessLimit))
    }

    /// The first limit the job reported as hit, if any (best effort: see the module docs).
    pub(crate) fn limit_hit(&self) -> Option<JobLimit> {
        limit_from_code(self.hit.load(Ordering::Acquire))
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Ok(watcher) = watcher() {
            lock(&watcher.jobs).remove(&self.key);
        }
        // Closing `handle` (after this) kills whatever is still in the job.
    }
}

/// The UI limits of a sandboxed child's job (see the module docs).
pub(crate) const UI_LIMITS: u32 = JOB_OBJECT_UILIMIT_DESKTOP
    | JOB_OBJECT_UILIMIT_DISPLAYSETTINGS
    | JOB_OBJECT_UILIMIT_EXITWINDOWS
    | JOB_OBJECT_UILIMIT_GLOBALATOMS
    | JOB_OBJECT_UILIMIT_HANDLES
    | JOB_OBJECT_UILIMIT_READCLIPBOARD
    | JOB_OBJECT_UILIMIT_WRITECLIPBOARD
    | JOB_OBJECT_UILIMIT_SYSTEMPARAMETERS;

/// The UI limits of the job this process runs in (its innermost one), for a sandboxed
/// child's `sandbox::status()`: a null job handle means the caller's own job.
pub(crate) fn own_ui_restrictions() -> io::Result<u32> {
    ui_restrictions_of(std::ptr::null_mut())
}

/// The UI limits of `job` (null: the caller's own job).
fn ui_restrictions_of(job: HANDLE) -> io::Result<u32> {
    let mut ui = JOBOBJECT_BASIC_UI_RESTRICTIONS::default();
    query_information(job, JobObjectBasicUIRestrictions, &mut ui)?;
    Ok(ui.UIRestrictionsClass)
}

/// `QueryInformationJobObject(job, class)` into `value`.
///
/// See `QueryInformationJobObject`
/// (learn.microsoft.com/windows/win32/api/jobapi2/nf-jobapi2-queryinformationjobobject).
fn query_information<T>(job: HANDLE, class: i32, value: &mut T) -> io::Result<()> {
    let size = u32::try_from(std::mem::size_of::<T>()).map_err(|_| invalid("too large"))?;
    // SAFETY: `value` is a writable `T` of `size` bytes, the structure `class` names (each
    // caller pairs them); `job` is an open job handle of ours, or null for our own job.
    let ok = unsafe {
        QueryInformationJobObject(
            job,
            class,
            (value as *mut T).cast(),
            size,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The extended limit information for `limits`, with our fixed flags.
fn limit_information(limits: &JobLimits) -> io::Result<JOBOBJECT_EXTENDED_LIMIT_INFORMATION> {
    // SAFETY: the structure is plain data; all zeroes means "no limit, no flag".
    let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
    let basic = &mut info.BasicLimitInformation;
    basic.LimitFlags =
        JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION;
    if let Some(bytes) = limits.memory {
        let bytes = usize::try_from(bytes)
            .ok()
            .filter(|&b| b > 0)
            .ok_or_else(|| invalid("the memory limit must be between 1 and usize::MAX"))?;
        info.ProcessMemoryLimit = bytes;
        info.BasicLimitInformation.LimitFlags |= JOB_OBJECT_LIMIT_PROCESS_MEMORY;
    }
    if let Some(time) = limits.cpu_time {
        // In 100-nanosecond ticks; a limit beyond i64 ticks (29 000 years) is no limit.
        let ticks = i64::try_from(time.as_nanos() / 100)
            .unwrap_or(i64::MAX)
            .max(1);
        info.BasicLimitInformation.PerProcessUserTimeLimit = ticks;
        info.BasicLimitInformation.LimitFlags |= JOB_OBJECT_LIMIT_PROCESS_TIME;
    }
    if let Some(count) = limits.processes {
        if count == 0 {
            return Err(invalid(
                "the process limit must be at least 1 (the child itself)",
            ));
        }
        info.BasicLimitInformation.ActiveProcessLimit = count;
        info.BasicLimitInformation.LimitFlags |= JOB_OBJECT_LIMIT_ACTIVE_PROCESS;
    }
    Ok(info)
}

/// `SetInformationJobObject(job, class, value)`.
fn set_information<T>(job: &OwnedHandle, class: i32, value: &T) -> io::Result<()> {
    let size = u32::try_from(std::mem::size_of::<T>()).map_err(|_| invalid("too large"))?;
    // SAFETY: `value` points to a `T` of `size` bytes, which is the structure `class` names
    // (each caller pairs them), and outlives the call; the job handle is open.
    let ok = unsafe {
        SetInformationJobObject(job.as_raw_handle(), class, (value as *const T).cast(), size)
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The completion port every job reports to, and the table of live jobs.
#[derive(Debug)]
struct Watcher {
    /// The port; never closed (the watcher lives as long as the process).
    port: OwnedHandle,
    /// Live jobs by completion key: where to record a limit hit.
    jobs: Mutex<HashMap<usize, Arc<AtomicU8>>>,
    /// The next completion key to hand out.
    next_key: AtomicUsize,
}

/// The process-wide watcher, created (with its thread) on first use.
///
/// A failure to create it is remembered, and every later [`Job::new`] fails the same way.
fn watcher() -> io::Result<&'static Watcher> {
    static WATCHER: OnceLock<Result<Watcher, i32>> = OnceLock::new();
    match WATCHER.get_or_init(start_watcher) {
        Ok(watcher) => Ok(watcher),
        Err(code) => Err(io::Error::from_raw_os_error(*code)),
    }
}

/// Creates the port and starts the thread that drains it.
///
/// See `CreateIoCompletionPort`
/// (learn.microsoft.com/windows/win32/fileio/createiocompletionport).
fn start_watcher() -> Result<Watcher, i32> {
    let os_error = |e: io::Error| e.raw_os_error().unwrap_or(0);
    // SAFETY: INVALID_HANDLE_VALUE with no existing port creates a new port, not associated
    // with any file; one concurrent thread.
    let raw = unsafe { CreateIoCompletionPort(INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, 1) };
    if raw.is_null() {
        return Err(os_error(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a new port handle nothing else owns.
    let port = unsafe { OwnedHandle::from_raw_handle(raw) };
    // The thread only borrows the port: it is owned by the static watcher, which is never
    // dropped. It reaches the table through `watcher()` once initialisation has finished.
    let port_value = PortValue(port.as_raw_handle());
    std::thread::Builder::new()
        .name("job-notifications".into())
        .spawn(move || drain(port_value))
        .map_err(os_error)?;
    Ok(Watcher {
        port,
        jobs: Mutex::new(HashMap::new()),
        next_key: AtomicUsize::new(1),
    })
}

/// The port's raw handle, to move into the watcher thread.
struct PortValue(HANDLE);

// SAFETY: a completion port handle may be used from any thread; the handle stays open for the
// life of the process (see `start_watcher`).
unsafe impl Send for PortValue {}

/// The watcher thread: records each limit message in its job's slot, forever.
///
/// See `GetQueuedCompletionStatus`
/// (learn.microsoft.com/windows/win32/api/ioapiset/nf-ioapiset-getqueuedcompletionstatus).
fn drain(port: PortValue) {
    loop {
        let mut message = 0u32;
        let mut key = 0usize;
        let mut overlapped = std::ptr::null_mut();
        // SAFETY: the port stays open (see `start_watcher`); the out-pointers are locals. For
        // job notifications `overlapped` receives a process id, never a real OVERLAPPED, and
        // is never dereferenced.
        let ok = unsafe {
            GetQueuedCompletionStatus(port.0, &mut message, &mut key, &mut overlapped, INFINITE)
        };
        if ok == 0 {
            // Only a broken port fails an infinite wait: nothing more will come.
            return;
        }
        let limit = match message {
            MSG_PROCESS_MEMORY_LIMIT => JobLimit::Memory,
            MSG_END_OF_PROCESS_TIME => JobLimit::CpuTime,
            MSG_ACTIVE_PROCESS_LIMIT => JobLimit::Processes,
            _ => continue,
        };
        let Ok(watcher) = watcher() else { return };
        if let Some(slot) = lock(&watcher.jobs).get(&key) {
            // The first limit hit is the one that matters; later ones follow from it.
            let code = limit_code(limit);
            let _ = slot.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// A limit as the number stored in a job's slot.
fn limit_code(limit: JobLimit) -> u8 {
    match limit {
        JobLimit::Memory => 1,
        JobLimit::CpuTime => 2,
        JobLimit::Processes => 3,
    }
}

/// The limit a slot's number stands for.
fn limit_from_code(code: u8) -> Option<JobLimit> {
    match code {
        1 => Some(JobLimit::Memory),
        2 => Some(JobLimit::CpuTime),
        3 => Some(JobLimit::Processes),
        _ => None,
    }
}

/// Locks `mutex`, ignoring poisoning: the table stays consistent whatever panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An `InvalidInput` error saying `what`.
fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use windows_sys::Win32::System::JobObjects::{
        JobObjectExtendedLimitInformation, QueryInformationJobObject,
    };
    use windows_sys::Win32::System::IO::PostQueuedCompletionStatus;

    /// Whether the job's limits can be read back; Wine answers the query with zeroes.
    fn limits_readable() -> bool {
        if super::super::handle::running_under_wine() {
            eprintln!(
                "skipped: reading job limits back under Wine because its \
                 QueryInformationJobObject(JobObjectExtendedLimitInformation) returns zeroes"
            );
            return false;
        }
        true
    }

    fn query(job: &Job) -> JOBOBJECT_EXTENDED_LIMIT_INFORMATION {
        // SAFETY: plain data.
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is the structure this class fills, with its exact size.
        let ok = unsafe {
            QueryInformationJobObject(
                job.handle().as_raw_handle(),
                JobObjectExtendedLimitInformation,
                (&mut info as *mut JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                std::mem::size_of_val(&info) as u32,
                std::ptr::null_mut(),
            )
        };
        assert_ne!(ok, 0, "{}", io::Error::last_os_error());
        info
    }

    #[test]
    fn a_new_job_kills_on_close_and_carries_the_limits() {
        let limits = JobLimits {
            memory: Some(64 << 20),
            cpu_time: Some(Duration::from_millis(1500)),
            processes: Some(3),
        };
        let job = Job::new(&limits).unwrap();
        assert_eq!(job.limit_hit(), None);
        if !limits_readable() {
            return;
        }
        let info = query(&job);
        let flags = info.BasicLimitInformation.LimitFlags;
        assert_ne!(flags & JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE, 0);
        assert_ne!(flags & JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION, 0);
        assert_ne!(flags & JOB_OBJECT_LIMIT_PROCESS_MEMORY, 0);
        assert_ne!(flags & JOB_OBJECT_LIMIT_PROCESS_TIME, 0);
        assert_ne!(flags & JOB_OBJECT_LIMIT_ACTIVE_PROCESS, 0);
        assert_eq!(info.ProcessMemoryLimit, 64 << 20);
        assert_eq!(
            info.BasicLimitInformation.PerProcessUserTimeLimit,
            15_000_000
        );
        assert_eq!(info.BasicLimitInformation.ActiveProcessLimit, 3);
    }

    #[test]
    fn without_limits_only_the_fixed_flags_are_set() {
        let job = Job::new(&JobLimits::default()).unwrap();
        if !limits_readable() {
            return;
        }
        let flags = query(&job).BasicLimitInformation.LimitFlags;
        assert_eq!(
            flags,
            JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE | JOB_OBJECT_LIMIT_DIE_ON_UNHANDLED_EXCEPTION
        );
    }

    #[test]
    fn zero_limits_are_invalid_input() {
        for limits in [
            JobLimits {
                memory: Some(0),
                ..JobLimits::default()
            },
            JobLimits {
                processes: Some(0),
                ..JobLimits::default()
            },
        ] {
            assert_eq!(
                Job::new(&limits).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn terminating_an_empty_job_succeeds() {
        let job = Job::new(&JobLimits::default()).unwrap();
        job.terminate(1).unwrap();
    }

    /// Waits a moment for the watcher thread to record something for `job`.
    fn recorded(job: &Job) -> Option<JobLimit> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while job.limit_hit().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        job.limit_hit()
    }

    /// Posts a job message to the shared port, as the kernel would.
    fn post(job: &Job, message: u32) {
        let port = watcher().unwrap().port.as_raw_handle();
        // SAFETY: the port is open for the life of the process; no OVERLAPPED is passed.
        let ok = unsafe { PostQueuedCompletionStatus(port, message, job.key, std::ptr::null()) };
        assert_ne!(ok, 0, "{}", io::Error::last_os_error());
    }

    #[test]
    fn a_limit_message_is_recorded_for_its_own_job_and_the_first_one_sticks() {
        // Wine never sends these (it enforces none of the limits), so the kernel's part is
        // played by hand: this proves the watcher, not the kernel.
        let job = Job::new(&JobLimits::default()).unwrap();
        let other = Job::new(&JobLimits::default()).unwrap();
        post(&job, 4); // JOB_OBJECT_MSG_ACTIVE_PROCESS_ZERO: not a limit.
        post(&job, MSG_ACTIVE_PROCESS_LIMIT);
        post(&job, MSG_PROCESS_MEMORY_LIMIT);
        assert_eq!(recorded(&job), Some(JobLimit::Processes));
        post(&other, MSG_END_OF_PROCESS_TIME);
        assert_eq!(recorded(&other), Some(JobLimit::CpuTime));
        assert_eq!(job.limit_hit(), Some(JobLimit::Processes));
    }

    #[test]
    fn dropped_jobs_leave_the_watcher_table() {
        let job = Job::new(&JobLimits::default()).unwrap();
        let key = job.key;
        assert!(lock(&watcher().unwrap().jobs).contains_key(&key));
        drop(job);
        assert!(!lock(&watcher().unwrap().jobs).contains_key(&key));
    }
}
