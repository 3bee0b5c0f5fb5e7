//! Where things live in the store. Desired state under `/dvs/cfg/`, one key per object; hosts'
//! reports under `/dvs/status/`, one key per host, each under its host's lease, so no host ever
//! watches a record that every other host writes.

use model::{Kind, ObjectId};

/// Every object, and the write sequence key: what the controllers' caches reflect.
pub const CFG: &str = "/dvs/cfg/";
/// Written by every transaction; its revision guards cross-object validation (a transaction
/// commits only if no other one committed since the state it validated against).
pub const SEQ: &str = "/dvs/cfg/seq";
const OBJ: &str = "/dvs/cfg/obj/";
pub const STATUS: &str = "/dvs/status/";

pub fn object(id: &ObjectId) -> String {
    format!("{OBJ}{}/{}", id.kind, id.id)
}

/// The object id of an object key; `None` for other keys under [`CFG`].
pub fn parse_object(key: &str) -> Option<ObjectId> {
    let rest = key.strip_prefix(OBJ)?;
    let (kind, id) = rest.split_once('/')?;
    Some(ObjectId::new(Kind::parse(kind)?, id))
}

pub fn status(host: &str) -> String {
    format!("{STATUS}{host}")
}

/// A host's acknowledgement of a policy delta ([`api::dvs::HostAck`]), beside its status (a
/// host name has no `/`), under the same lease.
pub fn ack(host: &str) -> String {
    format!("{STATUS}{host}{ACK}")
}

const ACK: &str = "/ack";

/// The host a key under [`STATUS`] belongs to, and whether it is the host's ack.
pub fn parse_status(key: &str) -> Option<(&str, bool)> {
    let rest = key.strip_prefix(STATUS)?;
    match rest.strip_suffix(ACK) {
        Some(host) => Some((host, true)),
        None => Some((rest, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_round_trip() {
        let id = ObjectId::new(Kind::Uplink, "prod/h1/up");
        assert_eq!(object(&id), "/dvs/cfg/obj/uplink/prod/h1/up");
        assert_eq!(parse_object(&object(&id)), Some(id));
        assert_eq!(parse_object(SEQ), None);
        assert_eq!(parse_object("/dvs/cfg/obj/bogus/x"), None);
    }

    #[test]
    fn status_keys_name_their_host() {
        assert_eq!(parse_status(&status("h1")), Some(("h1", false)));
        assert_eq!(parse_status(&ack("h1")), Some(("h1", true)));
        assert_eq!(parse_status("/dvs/cfg/seq"), None);
    }
}
