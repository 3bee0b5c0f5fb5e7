//! Exit codes, and the one error type every command returns.

use api::dvs::ControllerError;
use std::fmt;

/// The exit codes `dvsctl` documents (see [`EXIT_CODES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The controller refused the request: invalid, conflict, not found (also when `dvsctl`
    /// itself finds, from what the controller holds, that the change cannot be made).
    Refused = 1,
    /// A bad command line: clap's own errors, and values `dvsctl` checks (a MAC, a VLAN range).
    Usage = 2,
    /// The controller cannot be reached, or answers that it (its store) is unavailable.
    Unavailable = 3,
    /// `--wait=hosts` ended with live hosts that had not applied the change.
    Pending = 4,
    /// The controller did not accept the token (401), or the token may not do this (403).
    Auth = 5,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The exit-code table, as printed by `dvsctl --help` and written in the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  refused by the controller (invalid, conflict, not found)
  2  bad command line (an unknown option, a malformed value such as a MAC or a VLAN range)
  3  controller unreachable, or unavailable (its store is down)
  4  --wait=hosts timed out with hosts still pending
  5  authentication or authorization failure (a missing, unknown or insufficient token)";

/// Why a command failed: the message printed after `dvsctl: ` and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }
    /// A bad value on the command line, naming the object and the option:
    /// `port "web1": --mac: "zz" is not a MAC address`.
    pub fn usage(object: &str, option: &str, message: impl fmt::Display) -> Failure {
        Failure::new(Exit::Usage, format!("{object}: {option}: {message}"))
    }
    /// A change that what the controller holds does not allow, found by `dvsctl`.
    pub fn refused(object: &str, message: impl fmt::Display) -> Failure {
        Failure::new(Exit::Refused, format!("{object}: {message}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code of a failed controller call.
pub fn classify(e: &ControllerError) -> Exit {
    match e {
        ControllerError::Unreachable { .. } | ControllerError::Protocol(_) => Exit::Unavailable,
        ControllerError::Refused { status, code, .. } => match code.as_str() {
            "unauthorized" | "forbidden" => Exit::Auth,
            "unavailable" => Exit::Unavailable,
            "invalid" | "conflict" | "not_found" => Exit::Refused,
            // An error body we do not know (or none: a proxy's page): go by the HTTP status.
            _ => match status {
                401 | 403 => Exit::Auth,
                502..=504 => Exit::Unavailable,
                _ => Exit::Refused,
            },
        },
    }
}

impl From<ControllerError> for Failure {
    fn from(e: ControllerError) -> Failure {
        Failure::new(classify(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: &str) -> ControllerError {
        ControllerError::Refused {
            status,
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn controller_errors_map_to_documented_codes() {
        assert_eq!(classify(&refused(400, "invalid")), Exit::Refused);
        assert_eq!(classify(&refused(404, "not_found")), Exit::Refused);
        assert_eq!(classify(&refused(409, "conflict")), Exit::Refused);
        assert_eq!(classify(&refused(401, "unauthorized")), Exit::Auth);
        assert_eq!(classify(&refused(403, "forbidden")), Exit::Auth);
        assert_eq!(classify(&refused(503, "unavailable")), Exit::Unavailable);
        assert_eq!(classify(&refused(500, "internal")), Exit::Refused);
        // No error body (the client labels it internal): the status decides.
        assert_eq!(classify(&refused(502, "internal")), Exit::Unavailable);
        assert_eq!(classify(&refused(401, "internal")), Exit::Auth);
        let down = ControllerError::Unreachable {
            url: "http://x".into(),
            message: "refused".into(),
        };
        assert_eq!(Failure::from(down).exit.code(), 3);
        assert_eq!(Exit::Pending.code(), 4);
        assert_eq!(Exit::Usage.code(), 2);
    }
}
