//! Learning that a child exited without reaping it, and reaping it off the test's thread.
//!
//! On this project's VMs, reaping a DPDK process (`wait4`, which frees its `/proc/<pid>`
//! entries) has been seen to spin inside the kernel (`release_task` →
//! `proc_invalidate_siblings_dcache` → `shrink_dcache_parent`) for 20 s to minutes, with the
//! test thread that called it stuck there: the "hangs" of `vhost_forwarding.rs`. So tests learn
//! the exit status with `waitid(WNOWAIT)`, which leaves the zombie in place, and a detached
//! thread reaps it: a slow reap then costs a zombie for a while, never the test.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The child's exit status if it has exited; the child stays a zombie (not reaped).
pub fn exit_status(child: &Child) -> Option<ExitStatus> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value for waitid to fill in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on our own child's pid with a valid siginfo pointer; WNOWAIT leaves the
    // child waitable, so std's `Child` still owns reaping it.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: waitid filled `info` (or left it zeroed: si_pid 0 means "not exited yet").
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if r != 0 || pid == 0 {
        return None;
    }
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_KILLED => status & 0x7f,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => return None,
    };
    Some(ExitStatus::from_raw(raw))
}

/// Polls (bounded) until the child has exited; does not reap it.
pub fn wait_exit(child: &Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = exit_status(child) {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reaps the child on a detached thread (see the module comment). Should the thread not start,
/// the zombie stays until the test process exits, which is harmless.
pub fn reap_later(mut child: Child) {
    let _ = std::thread::Builder::new()
        .name(format!("reap-{}", child.id()))
        .spawn(move || child.wait());
}

/// SIGKILL, wait (bounded) for the exit, reap later; the exit status if it exited.
pub fn kill(mut child: Child) -> Option<ExitStatus> {
    let _ = child.kill();
    let s = wait_exit(&child, Duration::from_secs(60));
    reap_later(child);
    s
}
