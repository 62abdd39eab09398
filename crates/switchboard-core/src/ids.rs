//! Typed, prefixed identifiers (`msg_…`, `ws_…`).
//!
//! The body is a ULID: 48 bits of milliseconds then 80 random bits, in
//! Crockford base32. Ids therefore sort by creation time, which is what cursor
//! pagination and the timeline rely on.

use std::fmt;
use std::str::FromStr;

use crate::secret::id_bytes;
use crate::time::Timestamp;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn ulid_at(now: Timestamp) -> [u8; 26] {
    let ms = u128::try_from(now.as_millis().max(0)).unwrap_or(0) & ((1u128 << 48) - 1);
    let rand = id_bytes::<10>();
    let mut value = ms << 80;
    for (i, b) in rand.iter().enumerate() {
        value |= u128::from(*b) << (72 - 8 * i);
    }
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 125 - 5 * i;
        *slot = CROCKFORD[((value >> shift) & 0x1f) as usize];
    }
    out
}

/// `prefix` followed by `body`, in one allocation of the right size (a
/// `format!` of the two was about a thousand instructions, and ids are
/// made for every accepted message and event).
fn prefixed(prefix: &str, body: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + body.len());
    s.push_str(prefix);
    s.push_str(body);
    s
}

/// The smallest ULID of millisecond `at`: every id made at or after `at`
/// sorts at or above it, so a time range is an id range on an index.
fn ulid_floor(at: Timestamp) -> String {
    let ms = u128::try_from(at.as_millis().max(0)).unwrap_or(0) & ((1u128 << 48) - 1);
    let value = ms << 80;
    (0..26)
        .map(|i| CROCKFORD[((value >> (125 - 5 * i)) & 0x1f) as usize] as char)
        .collect()
}

/// Which bytes are Crockford base32 digits (`CROCKFORD`): a table, as ids
/// are checked wherever they are read (a search of the alphabet per byte
/// was about 1% of the store writer's time).
const IS_CROCKFORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < CROCKFORD.len() {
        table[CROCKFORD[i] as usize] = true;
        i += 1;
    }
    table
};

fn is_ulid(s: &str) -> bool {
    s.len() == 26 && s.bytes().all(|b| IS_CROCKFORD[usize::from(b)])
}

/// The error of parsing an id with the wrong prefix or body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {expected}… id")]
pub struct InvalidId {
    expected: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The type prefix, including the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// A new id whose time part is `now`.
            pub fn new_at(now: Timestamp) -> Self {
                let body = ulid_at(now);
                $name(prefixed(
                    $prefix,
                    std::str::from_utf8(&body).expect("crockford alphabet is ascii"),
                ))
            }

            /// The lowest id of this type made at or after `at` (for a time
            /// range as an id range).
            pub fn floor_at(at: Timestamp) -> String {
                format!("{}{}", $prefix, ulid_floor(at))
            }

            /// Parses an id, checking prefix and body.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                match s.strip_prefix($prefix) {
                    Some(body) if is_ulid(body) => Ok($name(s.to_owned())),
                    // Built-in rows (the `sim` provider) have readable ids.
                    Some(body) if !body.is_empty() && body.len() <= 40
                        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => Ok($name(s.to_owned())),
                    _ => Err(InvalidId { expected: $prefix }),
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }
    };
}

prefixed_id!(/// A workspace (tenant).
    WorkspaceId, "ws_");
prefixed_id!(/// An API key's public id (never the secret).
    ApiKeyId, "key_");
prefixed_id!(/// An outbound message.
    MessageId, "msg_");
prefixed_id!(/// A lifecycle event.
    EventId, "evt_");
prefixed_id!(/// One send attempt of a message.
    AttemptId, "att_");
prefixed_id!(/// A configured provider connection.
    ProviderId, "pr_");
prefixed_id!(/// A sender address bound to a provider.
    SenderId, "snd_");

impl EventId {
    /// The id of a message's acceptance event (`message.queued` or
    /// `message.scheduled`): `evt_` and the message's own ULID. A message
    /// accepted as `queued` does not always store that event (the store's
    /// `implied_accept`), and its id is known all the same.
    pub fn of_acceptance(message: &MessageId) -> Self {
        let body = &message.0[MessageId::PREFIX.len()..];
        EventId(prefixed(Self::PREFIX, body))
    }

    /// The message whose acceptance event this id would name
    /// (`of_acceptance` backwards), if any.
    pub fn accepted_message(&self) -> Option<MessageId> {
        let body = &self.0[Self::PREFIX.len()..];
        is_ulid(body).then(|| MessageId(prefixed(MessageId::PREFIX, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time() {
        let a = MessageId::new_at(Timestamp::from_millis(1_700_000_000_000));
        let b = MessageId::new_at(Timestamp::from_millis(1_700_000_000_001));
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.as_str().len(), 4 + 26);
    }

    #[test]
    fn floor_is_the_lowest_id_of_its_millisecond() {
        let t = Timestamp::from_millis(1_700_000_000_000);
        for _ in 0..50 {
            let floor = MessageId::floor_at(t);
            assert!(floor.as_str() <= MessageId::new_at(t).as_str());
            assert!(
                floor.as_str()
                    > MessageId::new_at(Timestamp::from_millis(t.as_millis() - 1)).as_str()
            );
        }
        assert!(MessageId::parse(&MessageId::floor_at(t)).is_ok());
    }

    #[test]
    fn parse_checks_prefix_and_body() {
        let id = MessageId::new_at(Timestamp::from_millis(1));
        assert_eq!(MessageId::parse(id.as_str()), Ok(id.clone()));
        assert!(WorkspaceId::parse(id.as_str()).is_err());
        assert!(MessageId::parse("msg_").is_err());
        assert!(MessageId::parse("msg_../../etc").is_err());
        assert!(MessageId::parse("").is_err());
        assert_eq!(ProviderId::parse("pr_sim").unwrap().as_str(), "pr_sim");
    }

    #[test]
    fn the_digit_table_holds_exactly_the_crockford_alphabet() {
        for b in 0..=255u8 {
            assert_eq!(IS_CROCKFORD[usize::from(b)], CROCKFORD.contains(&b), "{b}");
        }
        let id = MessageId::new_at(Timestamp::from_millis(1));
        let body = &id.as_str()[4..];
        assert!(is_ulid(body));
        assert!(!is_ulid(&body.to_ascii_lowercase()));
        for excluded in ['I', 'L', 'O', 'U', '-', '\0'] {
            let mut bad = body[..25].to_owned();
            bad.push(excluded);
            assert!(!is_ulid(&bad), "{bad:?}");
        }
    }

    #[test]
    fn an_acceptance_event_id_names_its_message_and_no_other_id_does() {
        let m = MessageId::new_at(Timestamp::from_millis(1_700_000_000_000));
        let e = EventId::of_acceptance(&m);
        assert_eq!(EventId::parse(e.as_str()), Ok(e.clone()));
        assert_eq!(&e.as_str()[4..], &m.as_str()[4..]);
        assert_eq!(e.accepted_message(), Some(m));
        // A readable built-in id has no ULID body: it names no message.
        assert_eq!(EventId::parse("evt_test").unwrap().accepted_message(), None);
    }
}
