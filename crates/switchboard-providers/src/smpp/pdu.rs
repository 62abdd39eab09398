//! SMPP 3.4 PDUs: the header, the bodies Switchboard sends and receives,
//! and the optional parameters (TLVs) it reads.
//!
//! Every PDU is `command_length` (the whole PDU, header included),
//! `command_id`, `command_status` and `sequence_number`, four big-endian
//! u32s, then the body. Strings are C-octet strings (NUL-terminated) with a
//! maximum length per field; `short_message` is length-prefixed octets.
//! Decoding never panics: a short, oversized or inconsistent PDU is an
//! error, and the connection answers it with `generic_nack`.

use std::fmt;

/// The longest PDU accepted (a `submit_sm` with a full `message_payload`
/// is far below this).
pub const MAX_PDU: usize = 64 * 1024;

/// Command ids.
pub mod cmd {
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
    pub const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
    pub const SUBMIT_SM: u32 = 0x0000_0004;
    pub const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    pub const DELIVER_SM: u32 = 0x0000_0005;
    pub const DELIVER_SM_RESP: u32 = 0x8000_0005;
    pub const UNBIND: u32 = 0x0000_0006;
    pub const UNBIND_RESP: u32 = 0x8000_0006;
    pub const ENQUIRE_LINK: u32 = 0x0000_0015;
    pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
}

/// Command statuses (`ESME_R…`) Switchboard tells apart.
pub mod status {
    pub const OK: u32 = 0x0000_0000;
    pub const INVMSGLEN: u32 = 0x0000_0001;
    pub const INVCMDLEN: u32 = 0x0000_0002;
    pub const INVCMDID: u32 = 0x0000_0003;
    pub const INVBNDSTS: u32 = 0x0000_0004;
    pub const ALYBND: u32 = 0x0000_0005;
    pub const SYSERR: u32 = 0x0000_0008;
    pub const INVSRCADR: u32 = 0x0000_000A;
    pub const INVDSTADR: u32 = 0x0000_000B;
    pub const BINDFAIL: u32 = 0x0000_000D;
    pub const INVPASWD: u32 = 0x0000_000E;
    pub const INVSYSID: u32 = 0x0000_000F;
    pub const MSGQFUL: u32 = 0x0000_0014;
    pub const SUBMITFAIL: u32 = 0x0000_0045;
    pub const THROTTLED: u32 = 0x0000_0058;
    pub const X_T_APPN: u32 = 0x0000_0064;
}

/// Optional parameter tags.
pub mod tag {
    pub const RECEIPTED_MESSAGE_ID: u16 = 0x001E;
    pub const NETWORK_ERROR_CODE: u16 = 0x0423;
    pub const MESSAGE_PAYLOAD: u16 = 0x0424;
    pub const MESSAGE_STATE: u16 = 0x0427;
}

/// A PDU that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed PDU: {0}")]
pub struct PduError(pub String);

fn bad(what: impl Into<String>) -> PduError {
    PduError(what.into())
}

/// The body of a `submit_sm` or `deliver_sm` (the same layout).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sm {
    pub service_type: String,
    pub source_ton: u8,
    pub source_npi: u8,
    pub source_addr: String,
    pub dest_ton: u8,
    pub dest_npi: u8,
    pub destination_addr: String,
    pub esm_class: u8,
    pub protocol_id: u8,
    pub priority_flag: u8,
    pub schedule_delivery_time: String,
    pub validity_period: String,
    pub registered_delivery: u8,
    pub replace_if_present: u8,
    pub data_coding: u8,
    pub sm_default_msg_id: u8,
    pub short_message: Vec<u8>,
    /// Optional parameters, in order.
    pub tlvs: Vec<(u16, Vec<u8>)>,
}

impl fmt::Debug for Sm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sm")
            .field("source_addr", &self.source_addr)
            .field("destination_addr", &self.destination_addr)
            .field("esm_class", &self.esm_class)
            .field("data_coding", &self.data_coding)
            .field("short_message_len", &self.short_message.len())
            .field("tlvs", &self.tlvs.len())
            .finish()
    }
}

impl Sm {
    /// The value of optional parameter `t`.
    pub fn tlv(&self, t: u16) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_slice())
    }
}

/// A PDU body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// `bind_transceiver`.
    Bind {
        system_id: String,
        password: String,
        system_type: String,
        interface_version: u8,
        addr_ton: u8,
        addr_npi: u8,
        address_range: String,
    },
    /// `bind_transceiver_resp`.
    BindResp { system_id: String },
    /// `submit_sm` or `deliver_sm`.
    Sm(Box<Sm>),
    /// `submit_sm_resp` or `deliver_sm_resp`.
    SmResp { message_id: String },
    /// `enquire_link`, `unbind`, their responses, `generic_nack`.
    Empty,
}

/// One PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub command_id: u32,
    pub status: u32,
    pub sequence: u32,
    pub body: Body,
}

impl Pdu {
    /// A request or response with no body.
    pub fn empty(command_id: u32, status: u32, sequence: u32) -> Pdu {
        Pdu {
            command_id,
            status,
            sequence,
            body: Body::Empty,
        }
    }

    /// Is this a response (`0x8…`)?
    pub fn is_response(&self) -> bool {
        self.command_id & 0x8000_0000 != 0
    }

    /// The PDU's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&self.command_id.to_be_bytes());
        b.extend_from_slice(&self.status.to_be_bytes());
        b.extend_from_slice(&self.sequence.to_be_bytes());
        match &self.body {
            Body::Bind {
                system_id,
                password,
                system_type,
                interface_version,
                addr_ton,
                addr_npi,
                address_range,
            } => {
                cstr(&mut b, system_id);
                cstr(&mut b, password);
                cstr(&mut b, system_type);
                b.extend_from_slice(&[*interface_version, *addr_ton, *addr_npi]);
                cstr(&mut b, address_range);
            }
            Body::BindResp { system_id } => cstr(&mut b, system_id),
            Body::Sm(sm) => {
                cstr(&mut b, &sm.service_type);
                b.extend_from_slice(&[sm.source_ton, sm.source_npi]);
                cstr(&mut b, &sm.source_addr);
                b.extend_from_slice(&[sm.dest_ton, sm.dest_npi]);
                cstr(&mut b, &sm.destination_addr);
                b.extend_from_slice(&[sm.esm_class, sm.protocol_id, sm.priority_flag]);
                cstr(&mut b, &sm.schedule_delivery_time);
                cstr(&mut b, &sm.validity_period);
                b.extend_from_slice(&[
                    sm.registered_delivery,
                    sm.replace_if_present,
                    sm.data_coding,
                    sm.sm_default_msg_id,
                ]);
                // sm_length is one octet: longer content goes in message_payload.
                let long = sm.short_message.len() > 254;
                if long {
                    b.push(0);
                } else {
                    b.push(u8::try_from(sm.short_message.len()).expect("at most 254"));
                    b.extend_from_slice(&sm.short_message);
                }
                let payload = long.then(|| (tag::MESSAGE_PAYLOAD, sm.short_message.clone()));
                for (t, v) in sm.tlvs.iter().chain(payload.as_ref()) {
                    b.extend_from_slice(&t.to_be_bytes());
                    b.extend_from_slice(&u16::try_from(v.len()).unwrap_or(0).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
            Body::SmResp { message_id } => cstr(&mut b, message_id),
            Body::Empty => {}
        }
        let len = u32::try_from(b.len()).expect("PDUs are small");
        b[..4].copy_from_slice(&len.to_be_bytes());
        b
    }

    /// Reads one whole PDU (`bytes` is exactly `command_length` long).
    pub fn decode(bytes: &[u8]) -> Result<Pdu, PduError> {
        if bytes.len() < 16 {
            return Err(bad("shorter than its 16-octet header"));
        }
        let word = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let len = word(0) as usize;
        if len != bytes.len() {
            return Err(bad(format!(
                "command_length {len} does not match the {} octets read",
                bytes.len()
            )));
        }
        let (command_id, status, sequence) = (word(4), word(8), word(12));
        let mut r = Reader {
            b: &bytes[16..],
            at: 0,
        };
        let body = match command_id {
            cmd::BIND_TRANSCEIVER => Body::Bind {
                system_id: r.cstr("system_id", 16)?,
                password: r.cstr("password", 9)?,
                system_type: r.cstr("system_type", 13)?,
                interface_version: r.u8("interface_version")?,
                addr_ton: r.u8("addr_ton")?,
                addr_npi: r.u8("addr_npi")?,
                address_range: r.cstr("address_range", 41)?,
            },
            // An error response may come without a body.
            cmd::BIND_TRANSCEIVER_RESP if r.rest().is_empty() => Body::BindResp {
                system_id: String::new(),
            },
            cmd::BIND_TRANSCEIVER_RESP => Body::BindResp {
                system_id: r.cstr("system_id", 16)?,
            },
            cmd::SUBMIT_SM | cmd::DELIVER_SM => Body::Sm(Box::new(r.sm()?)),
            cmd::SUBMIT_SM_RESP | cmd::DELIVER_SM_RESP if r.rest().is_empty() => Body::SmResp {
                message_id: String::new(),
            },
            cmd::SUBMIT_SM_RESP | cmd::DELIVER_SM_RESP => Body::SmResp {
                message_id: r.cstr("message_id", 65)?,
            },
            cmd::ENQUIRE_LINK
            | cmd::ENQUIRE_LINK_RESP
            | cmd::UNBIND
            | cmd::UNBIND_RESP
            | cmd::GENERIC_NACK => Body::Empty,
            other => return Err(bad(format!("unsupported command_id {other:#010x}"))),
        };
        if !matches!(body, Body::Sm(_)) && !r.rest().is_empty() {
            return Err(bad(format!(
                "{} octets after the body of {command_id:#010x}",
                r.rest().len()
            )));
        }
        Ok(Pdu {
            command_id,
            status,
            sequence,
            body,
        })
    }
}

fn cstr(b: &mut Vec<u8>, s: &str) {
    b.extend(s.bytes().filter(|c| *c != 0));
    b.push(0);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn rest(&self) -> &[u8] {
        &self.b[self.at..]
    }

    fn u8(&mut self, field: &str) -> Result<u8, PduError> {
        let v = *self
            .b
            .get(self.at)
            .ok_or_else(|| bad(format!("{field} is missing")))?;
        self.at += 1;
        Ok(v)
    }

    /// A C-octet string of at most `max` octets, NUL included.
    fn cstr(&mut self, field: &str, max: usize) -> Result<String, PduError> {
        let rest = self.rest();
        let end = rest
            .iter()
            .take(max)
            .position(|c| *c == 0)
            .ok_or_else(|| bad(format!("{field} is not NUL-terminated within {max} octets")))?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| bad(format!("{field} is not ASCII")))?
            .to_owned();
        self.at += end + 1;
        Ok(s)
    }

    fn sm(&mut self) -> Result<Sm, PduError> {
        let mut sm = Sm {
            service_type: self.cstr("service_type", 6)?,
            source_ton: self.u8("source_addr_ton")?,
            source_npi: self.u8("source_addr_npi")?,
            source_addr: self.cstr("source_addr", 21)?,
            dest_ton: self.u8("dest_addr_ton")?,
            dest_npi: self.u8("dest_addr_npi")?,
            destination_addr: self.cstr("destination_addr", 21)?,
            esm_class: self.u8("esm_class")?,
            protocol_id: self.u8("protocol_id")?,
            priority_flag: self.u8("priority_flag")?,
            schedule_delivery_time: self.cstr("schedule_delivery_time", 17)?,
            validity_period: self.cstr("validity_period", 17)?,
            registered_delivery: self.u8("registered_delivery")?,
            replace_if_present: self.u8("replace_if_present_flag")?,
            data_coding: self.u8("data_coding")?,
            sm_default_msg_id: self.u8("sm_default_msg_id")?,
            ..Sm::default()
        };
        let n = usize::from(self.u8("sm_length")?);
        if self.rest().len() < n {
            return Err(bad(format!(
                "sm_length {n} runs past the PDU ({} octets left)",
                self.rest().len()
            )));
        }
        sm.short_message = self.rest()[..n].to_vec();
        self.at += n;
        while !self.rest().is_empty() {
            let rest = self.rest();
            if rest.len() < 4 {
                return Err(bad("a truncated optional parameter"));
            }
            let t = u16::from_be_bytes([rest[0], rest[1]]);
            let l = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            if rest.len() < 4 + l {
                return Err(bad(format!(
                    "optional parameter {t:#06x} runs past the PDU"
                )));
            }
            sm.tlvs.push((t, rest[4..4 + l].to_vec()));
            self.at += 4 + l;
        }
        Ok(sm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_round_trips() {
        let sm = Sm {
            source_addr: "Acme".into(),
            dest_ton: 1,
            dest_npi: 1,
            destination_addr: "14155550123".into(),
            esm_class: 0x40,
            registered_delivery: 1,
            data_coding: 8,
            short_message: vec![5, 0, 3, 7, 2, 1, 0, 0x48],
            tlvs: vec![(tag::RECEIPTED_MESSAGE_ID, b"abc\0".to_vec())],
            ..Sm::default()
        };
        for pdu in [
            Pdu {
                command_id: cmd::BIND_TRANSCEIVER,
                status: 0,
                sequence: 1,
                body: Body::Bind {
                    system_id: "esme".into(),
                    password: "secret".into(),
                    system_type: "".into(),
                    interface_version: 0x34,
                    addr_ton: 0,
                    addr_npi: 0,
                    address_range: "".into(),
                },
            },
            Pdu {
                command_id: cmd::BIND_TRANSCEIVER_RESP,
                status: 0,
                sequence: 1,
                body: Body::BindResp {
                    system_id: "smsc".into(),
                },
            },
            Pdu {
                command_id: cmd::SUBMIT_SM,
                status: 0,
                sequence: 7,
                body: Body::Sm(Box::new(sm)),
            },
            Pdu {
                command_id: cmd::SUBMIT_SM_RESP,
                status: 0,
                sequence: 7,
                body: Body::SmResp {
                    message_id: "0a1b2c".into(),
                },
            },
            Pdu::empty(cmd::ENQUIRE_LINK, 0, u32::MAX),
            Pdu::empty(cmd::GENERIC_NACK, status::INVCMDID, 3),
        ] {
            let bytes = pdu.encode();
            assert_eq!(
                u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize,
                bytes.len()
            );
            assert_eq!(Pdu::decode(&bytes), Ok(pdu));
        }
        // An error response without a body is read too.
        let nack = Pdu::empty(cmd::SUBMIT_SM_RESP, status::THROTTLED, 9).encode();
        assert_eq!(
            Pdu::decode(&nack).unwrap().body,
            Body::SmResp {
                message_id: String::new()
            }
        );
    }

    #[test]
    fn malformed_pdus_are_errors_not_panics() {
        let good = Pdu {
            command_id: cmd::SUBMIT_SM,
            status: 0,
            sequence: 1,
            body: Body::Sm(Box::new(Sm {
                destination_addr: "1".into(),
                short_message: b"hello".to_vec(),
                ..Sm::default()
            })),
        }
        .encode();
        assert!(Pdu::decode(&good[..10]).is_err());
        // Every truncation of a good PDU (with its length fixed up) is refused.
        for cut in 16..good.len() {
            let mut b = good[..cut].to_vec();
            b[..4].copy_from_slice(&(cut as u32).to_be_bytes());
            let _ = Pdu::decode(&b);
        }
        let mut wrong_len = good.clone();
        wrong_len[3] += 1;
        assert!(Pdu::decode(&wrong_len).is_err());
        let mut unknown = Pdu::empty(0x0000_0099, 0, 1).encode();
        assert!(Pdu::decode(&unknown).is_err());
        unknown[7] = 0x15;
        assert!(Pdu::decode(&unknown).is_ok(), "enquire_link");
        // A string without its NUL, and an sm_length past the end.
        let mut b = Pdu::empty(cmd::SUBMIT_SM_RESP, 0, 1).encode();
        b.extend_from_slice(&[b'x'; 70]);
        let n = b.len() as u32;
        b[..4].copy_from_slice(&n.to_be_bytes());
        assert!(Pdu::decode(&b).is_err());
        let mut b = good.clone();
        let at = b.len() - 6;
        b[at] = 200;
        assert!(Pdu::decode(&b).is_err());
        // Random bytes never panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let len = 16 + (x as usize % 80);
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            b[..4].copy_from_slice(&(len as u32).to_be_bytes());
            b[4..8].copy_from_slice(&[0, 0, 0, [4, 5, 9, 0x15][x as usize % 4]]);
            let _ = Pdu::decode(&b);
        }
    }
}
