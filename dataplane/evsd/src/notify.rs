//! The service manager's readiness protocol (`sd_notify(3)`), so that a `Type=notify` unit is
//! "started" only once evsd forwards: guests and VMMs ordered `After=evsd.service` then find
//! their sockets. Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the socket the variable names (a path,
//! or `@name` in the abstract namespace); written here with std rather than linking libsystemd.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated assignments such as `READY=1`) to the service manager.
/// Failures are returned, not fatal: a switch that forwards must not stop because its manager
/// went away.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = target.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &target)?;
    }
    Ok(())
}

/// Forwarding, the control socket open, the configured ports attached.
pub fn ready(status: &str) -> std::io::Result<()> {
    notify(&format!(
        "READY=1\nSTATUS={status}\nMAINPID={}",
        std::process::id()
    ))
}

/// A SIGHUP reload begins; the next [`ready`] ends it.
pub fn reloading() -> std::io::Result<()> {
    notify("RELOADING=1\nSTATUS=reloading the config file")
}

/// The orderly teardown began.
pub fn stopping() -> std::io::Result<()> {
    notify("STOPPING=1\nSTATUS=stopping")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        // The environment is process-wide: this is the only test that sets the variable.
        std::env::set_var("NOTIFY_SOCKET", &path);
        ready("forwarding, 2 ports").unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(
            text.starts_with("READY=1\nSTATUS=forwarding, 2 ports\nMAINPID="),
            "{text}"
        );
        assert!(notify("X=1").is_ok(), "no NOTIFY_SOCKET: nothing to do");
    }
}
