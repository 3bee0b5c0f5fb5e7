//! DPDK's own log routed into `tracing` (target `dpdk`), so that it has the process's
//! timestamps, levels and filter instead of going to stdout and syslog on its own.
//!
//! DPDK writes every message to one `FILE *` ([`rte_openlog_stream`]); we give it a glibc
//! `fopencookie` stream whose write callback hands complete lines to `tracing`, at the level of
//! the message being written (`rte_log_cur_msg_loglevel`, a per-thread value DPDK sets before it
//! formats). DPDK is chatty at its INFO level (about 130 `VHOST_CONFIG` lines per guest connect),
//! so its levels map one step down: NOTICE is `info`, INFO is `debug`, DEBUG is `trace`. The one
//! vhost line an operator wants per connect, the negotiated virtio features, stays at `info`.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

/// glibc's `cookie_io_functions_t` (not in the `libc` crate).
#[repr(C)]
struct CookieIoFunctions {
    read: Option<unsafe extern "C" fn(*mut c_void, *mut c_char, usize) -> isize>,
    write: Option<unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> isize>,
    seek: Option<unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int>,
    close: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
}

// Declared here rather than through bindgen: rte_log.h is not in dpdk-sys's allow-list, and these
// signatures have been stable since DPDK 17.x (checked against /usr/include/dpdk/rte_log.h, 22.11).
extern "C" {
    fn fopencookie(
        cookie: *mut c_void,
        mode: *const c_char,
        funcs: CookieIoFunctions,
    ) -> *mut libc::FILE;
    fn rte_openlog_stream(f: *mut libc::FILE) -> c_int;
    fn rte_log_cur_msg_loglevel() -> c_int;
}

// DPDK's levels (rte_log.h).
const RTE_LOG_ERR: c_int = 4;
const RTE_LOG_WARNING: c_int = 5;
const RTE_LOG_NOTICE: c_int = 6;
const RTE_LOG_INFO: c_int = 7;

/// Messages DPDK logs at INFO that stay at `info`: one per guest connect, worth seeing.
const KEEP_AT_INFO: &[&str] = &["negotiated Virtio features"];

/// A line longer than this is emitted in pieces (DPDK's own lines are far shorter).
const MAX_LINE: usize = 4096;

static ROUTED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// A message DPDK wrote without its newline yet (it sometimes builds a line in pieces).
    static PARTIAL: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The `tracing` level of a DPDK message: one step below DPDK's own (see the module doc).
pub fn level_of(rte_level: c_int, line: &str) -> tracing::Level {
    use tracing::Level;
    match rte_level {
        ..=RTE_LOG_ERR => Level::ERROR,
        RTE_LOG_WARNING => Level::WARN,
        RTE_LOG_NOTICE => Level::INFO,
        RTE_LOG_INFO if KEEP_AT_INFO.iter().any(|k| line.contains(k)) => Level::INFO,
        RTE_LOG_INFO => Level::DEBUG,
        _ => Level::TRACE,
    }
}

fn emit(level: tracing::Level, line: &str) {
    let line = line.trim_end();
    if line.is_empty() {
        return;
    }
    // `tracing`'s macros need a constant level.
    match level {
        tracing::Level::ERROR => tracing::error!(target: "dpdk", "{line}"),
        tracing::Level::WARN => tracing::warn!(target: "dpdk", "{line}"),
        tracing::Level::INFO => tracing::info!(target: "dpdk", "{line}"),
        tracing::Level::DEBUG => tracing::debug!(target: "dpdk", "{line}"),
        tracing::Level::TRACE => tracing::trace!(target: "dpdk", "{line}"),
    }
}

/// Splits what DPDK wrote into lines; a trailing piece waits (per thread) for its newline.
fn write_text(text: &str, rte_level: c_int) {
    PARTIAL.with(|p| {
        let mut p = p.borrow_mut();
        p.push_str(text);
        while let Some(i) = p.find('\n') {
            let line: String = p.drain(..=i).collect();
            emit(level_of(rte_level, &line), &line);
        }
        if p.len() > MAX_LINE {
            let line = std::mem::take(&mut *p);
            emit(level_of(rte_level, &line), &line);
        }
    });
}

unsafe extern "C" fn cookie_write(_cookie: *mut c_void, buf: *const c_char, size: usize) -> isize {
    if buf.is_null() || size == 0 {
        return 0;
    }
    // SAFETY: glibc passes `size` readable bytes at `buf` for the duration of the call.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), size) };
    // SAFETY: a plain read of DPDK's per-thread "level of the message being written"; it is set
    // by rte_vlog before it formats into our stream, on this same thread.
    let rte_level = unsafe { rte_log_cur_msg_loglevel() };
    // A panic must not unwind into C (DPDK's caller); a lost log line is the lesser harm.
    let _ = std::panic::catch_unwind(|| write_text(&String::from_utf8_lossy(bytes), rte_level));
    size as isize
}

/// Routes DPDK's log into `tracing` (target `dpdk`) from now on, for the whole process; call
/// it before [`crate::Eal::init`] so that the EAL's own start-up lines go there too. Later calls
/// do nothing.
pub fn route_to_tracing() -> Result<(), String> {
    if ROUTED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let funcs = CookieIoFunctions {
        read: None,
        write: Some(cookie_write),
        seek: None,
        close: None,
    };
    // SAFETY: a write-only cookie stream with no cookie state; `funcs` is copied by glibc and the
    // mode string is a NUL-terminated literal.
    let f = unsafe { fopencookie(std::ptr::null_mut(), c"w".as_ptr(), funcs) };
    if f.is_null() {
        ROUTED.store(false, Ordering::SeqCst);
        return Err(format!(
            "fopencookie for DPDK's log: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `f` is the valid stream just opened. Unbuffered, glibc formats each message whole
    // and writes it once, on the logging thread (so the per-thread level matches the text).
    unsafe { libc::setvbuf(f, std::ptr::null_mut(), libc::_IONBF, 0) };
    // SAFETY: `f` stays open for the life of the process (it is never closed): DPDK may log
    // from any thread until exit.
    let r = unsafe { rte_openlog_stream(f) };
    if r != 0 {
        return Err(format!("rte_openlog_stream failed ({r})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn levels_map_one_step_down_and_the_features_line_stays_at_info() {
        assert_eq!(level_of(1, "EAL: x"), Level::ERROR);
        assert_eq!(level_of(RTE_LOG_ERR, "EAL: x"), Level::ERROR);
        assert_eq!(level_of(RTE_LOG_WARNING, "EAL: x"), Level::WARN);
        assert_eq!(level_of(RTE_LOG_NOTICE, "EAL: x"), Level::INFO);
        assert_eq!(
            level_of(
                RTE_LOG_INFO,
                "VHOST_CONFIG: (/s) read message VHOST_USER_SET_FEATURES"
            ),
            Level::DEBUG
        );
        assert_eq!(
            level_of(
                RTE_LOG_INFO,
                "VHOST_CONFIG: (/s) negotiated Virtio features: 0x150008000"
            ),
            Level::INFO
        );
        assert_eq!(level_of(8, "x"), Level::TRACE);
    }
}
