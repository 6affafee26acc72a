//! The integration tests: one binary (it links faster on two cores than one per file), one
//! module per area. The same tests run on Linux, macOS and Windows (under Wine too); a test
//! whose promise differs on Windows has a Windows variant of the same name.
//!
//! Unix only, and why (one line each):
//! - `hostile`: the child speaks the Unix transport by hand (descriptor 3, SCM_RIGHTS, the report pipe).
//! - `limits`: rlimits, cgroups, SIGXCPU/SIGXFSZ; Windows has `limits_windows.rs` (job limits) as `limits`.
//! - `node`, `python`: their bindings speak the Unix transport; node and python are not in Wine either.
//! - `sandbox`: seccomp and Landlock (Linux); macOS has `sandbox_macos.rs` (Seatbelt) and Windows
//!   `sandbox_windows.rs` (AppContainer, job limits) as `sandbox`.
//! - `lifecycle::a_signal_the_parent_sent_is_not_a_crash_but_one_it_did_not_send_is`: signals.
//! - `lifecycle::detached_child_can_still_connect_after_its_handle_is_gone`: the child polls descriptor 3 and renames itself in /proc.
//! - `lifecycle::a_child_that_clears_its_parent_death_signal_and_leaves_its_group_still_dies_with_its_parent`: PR_SET_PDEATHSIG and process groups.
//! - `lifecycle::child_holds_only_stdio_and_its_port`: descriptors inherited across exec.
//! - `lifecycle::the_library_never_reaps_a_child_it_did_not_start`: waitpid reaping.
//! - `lifecycle::a_blocked_sigterm_in_the_parent_does_not_reach_the_child`: signal masks.
//! - `lifecycle::posting_to_a_closed_peer_never_raises_sigpipe`: SIGPIPE.
//! - `messages::the_python_child_round_trips_serde_values_and_raw_bytes`: the Python child speaks the Unix transport.
//! - `ports::received_port_descriptors_are_close_on_exec`: O_CLOEXEC.
//! - `ports::a_message_with_ports_buffered_by_a_port_that_travels_still_brings_its_ports`,
//!   `ports::a_message_with_ports_cut_short_by_a_read_still_brings_them_when_its_port_travels`,
//!   `ports::closing_a_port_closes_the_ports_in_the_messages_it_had_not_read`,
//!   `ports::a_message_whose_ports_are_never_taken_closes_them`: ports sent over MessageChannel
//!   ports, which carry messages only on Windows (`ports::attachments_on_a_message_channel_port_are_refused_and_the_port_goes_on`).
//! - `buffers::a_shared_buffer_that_lies_about_itself_is_a_protocol_violation`: a Python child forging memfds.
//! - `buffers::a_child_that_kept_only_the_descriptor_cannot_change_a_buffer_frozen_since`: memfd
//!   seals and /proc/self/fd; on Windows a lent buffer cannot be frozen at all (the unit test
//!   `a_buffer_that_arrived_writable_is_frozen_only_where_a_seal_binds_every_holder`).
//!
//! Differently on Windows (same name, `#[cfg(windows)]`): crashes report `exception()`
//! (access violation, `__fastfail` for abort) instead of a signal; `kill` closes the child's
//! port and terminates its job after the grace period instead of SIGTERM/SIGKILL; an outside
//! `TerminateProcess` reads as the exit code it chose; stdio reports `NUL`/`pipe`; the service
//! name is the startup title, not `argv[0]`; descriptor counts are handle counts.

/// Shared buffers: memory that travels without being copied.
mod buffers;
/// A hostile child: malformed frames and descriptors, floods, signal storms, fork/kill cycles.
#[cfg(unix)]
mod hostile;
/// Spawn, exit and error events, kill, no orphans, no zombies, no stray descriptors.
mod lifecycle;
/// Resource limits: the child is stopped and the limit named; the tests again as nobody.
#[cfg(unix)]
mod limits;
/// Resource limits on Windows: the job object's memory and CPU limits; what it cannot enforce.
#[cfg(windows)]
#[path = "limits_windows.rs"]
mod limits;
/// Ordering, sizes, queueing before the child connects, raw bytes, the blocking API.
mod messages;
/// JS workers written for Electron, run unchanged through the npm package in `js/`.
#[cfg(unix)]
mod node;
/// Message channels, ports sent between processes, child-to-child talk.
mod ports;
/// Python children on the `utility_process` package: values both ways, ports, panics, pool, supervisor.
#[cfg(unix)]
mod python;
/// The strict sandbox: escapes fail, denied calls are reported, fail closed.
#[cfg(target_os = "linux")]
mod sandbox;
/// The sandbox on macOS: Seatbelt through sandbox-exec; the child works, escapes fail.
#[cfg(target_os = "macos")]
#[path = "sandbox_macos.rs"]
mod sandbox;
/// The sandbox on Windows: an AppContainer and job limits checked before the child runs;
/// refused where they cannot be had (under Wine), never a child started unconfined.
#[cfg(windows)]
#[path = "sandbox_windows.rs"]
mod sandbox;
/// stdout and stderr; cwd, env, args, the service name.
mod stdio;
/// The library's story through `tracing`: the events of a short run and their fields.
mod tracing;

/// Node and Python children on Windows: not run, and said so.
#[cfg(windows)]
#[test]
fn node_and_python_children() {
    eprintln!(
        "skipped: the node and python tests on Windows because their bindings speak the Unix \
         transport (and neither node nor python is installed in Wine)"
    );
}
