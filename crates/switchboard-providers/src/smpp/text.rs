//! Text on the SMPP wire: GSM 03.38 (7-bit, unpacked or packed) and UCS-2,
//! split into concatenated parts with a user data header (UDH), and the
//! delivery receipt text of SMPP 3.4 Appendix B.

/// `data_coding` of the SMSC's default alphabet (GSM 03.38).
pub const DC_DEFAULT: u8 = 0x00;
/// `data_coding` of UCS-2 (UTF-16BE).
pub const DC_UCS2: u8 = 0x08;
/// `esm_class` bit: `short_message` starts with a UDH.
pub const ESM_UDHI: u8 = 0x40;
/// `esm_class` bits of a delivery receipt (SMSC delivery receipt).
pub const ESM_RECEIPT: u8 = 0x04;

/// The GSM 03.38 default alphabet by code (27 is the escape to the
/// extension table).
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table: (code after the escape, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{000C}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

const ESC: u8 = 0x1B;

/// The septets of `text` in GSM 03.38, one per octet (an extension
/// character is two); `None` if a character is not in the alphabet.
pub fn gsm7_encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c != '\u{1B}'
            && let Some(i) = BASIC.iter().position(|b| *b == c)
        {
            out.push(u8::try_from(i).expect("128 codes"));
        } else if let Some((code, _)) = EXTENSION.iter().find(|(_, e)| *e == c) {
            out.extend_from_slice(&[ESC, *code]);
        } else {
            return None;
        }
    }
    Some(out)
}

/// Text from unpacked GSM 03.38 septets; unknown codes read as `?`.
pub fn gsm7_decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut it = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = it.next() {
        if s == ESC {
            match it.next() {
                Some(code) => out.push(
                    EXTENSION
                        .iter()
                        .find(|(c, _)| *c == code)
                        .map_or('?', |(_, ch)| *ch),
                ),
                None => out.push(' '),
            }
        } else {
            out.push(BASIC[usize::from(s)]);
        }
    }
    out
}

/// Packs septets into octets, after `fill` zero bits (to align after a UDH).
pub fn pack7(septets: &[u8], fill: u32) -> Vec<u8> {
    let bits = fill as usize + septets.len() * 7;
    let mut out = vec![0u8; bits.div_ceil(8)];
    for (i, s) in septets.iter().enumerate() {
        let at = fill as usize + i * 7;
        let v = u16::from(s & 0x7F) << (at % 8);
        out[at / 8] |= (v & 0xFF) as u8;
        if v > 0xFF {
            out[at / 8 + 1] |= (v >> 8) as u8;
        }
    }
    out
}

/// Unpacks `count` septets from octets, skipping `fill` bits.
pub fn unpack7(octets: &[u8], fill: u32, count: usize) -> Vec<u8> {
    (0..count)
        .map(|i| {
            let at = fill as usize + i * 7;
            let lo = u16::from(*octets.get(at / 8).unwrap_or(&0));
            let hi = u16::from(*octets.get(at / 8 + 1).unwrap_or(&0));
            (((hi << 8 | lo) >> (at % 8)) & 0x7F) as u8
        })
        .collect()
}

/// Text as UCS-2 (UTF-16BE; characters outside the BMP as surrogate pairs).
pub fn ucs2_encode(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Text from UCS-2 (UTF-16BE); a lone surrogate reads as U+FFFD.
pub fn ucs2_decode(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// A message as the `short_message`s of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// `DC_DEFAULT` or `DC_UCS2`.
    pub data_coding: u8,
    /// Each part's `short_message`, its UDH included when there are several.
    pub parts: Vec<Vec<u8>>,
    /// `esm_class` for every part (`ESM_UDHI` when concatenated).
    pub esm_class: u8,
}

/// Encodes `text` for `submit_sm`: GSM 03.38 when every character is in
/// it (160 septets in one message, 153 per part), else UCS-2 (70 units,
/// 67 per part). Parts carry an 8-bit concatenation UDH with `reference`,
/// the same for every part of the message. An escape pair or a surrogate
/// pair is never split across parts. `packed` packs the septets 8 into 7
/// octets, as some SMSCs want.
pub fn encode(text: &str, reference: u8, packed: bool) -> Encoded {
    let (data_coding, units, single, per_part, unit_len) = match gsm7_encode(text) {
        Some(septets) => (DC_DEFAULT, septets, 160, 153, 1),
        None => (DC_UCS2, ucs2_encode(text), 140, 134, 2),
    };
    // Cut points in octets of `units`, never inside an escape or surrogate pair.
    let chunks: Vec<&[u8]> = if units.len() <= single {
        vec![&units[..]]
    } else {
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < units.len() {
            let mut end = (start + per_part).min(units.len());
            if end < units.len() {
                if data_coding == DC_DEFAULT {
                    // Do not end on an escape whose code would start the next part.
                    let escapes = units[start..end]
                        .iter()
                        .rev()
                        .take_while(|s| **s == ESC)
                        .count();
                    if escapes % 2 == 1 {
                        end -= 1;
                    }
                } else {
                    let last = u16::from_be_bytes([units[end - unit_len], units[end - 1]]);
                    if (0xD800..0xDC00).contains(&last) {
                        end -= unit_len;
                    }
                }
            }
            chunks.push(&units[start..end]);
            start = end;
        }
        chunks
    };
    let total = u8::try_from(chunks.len()).unwrap_or(u8::MAX);
    let concatenated = chunks.len() > 1;
    let parts = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut sm = Vec::with_capacity(160);
            if concatenated {
                let seq = u8::try_from(i + 1).unwrap_or(u8::MAX);
                sm.extend_from_slice(&[0x05, 0x00, 0x03, reference, total, seq]);
            }
            if data_coding == DC_DEFAULT && packed {
                // After a 6-octet UDH the septets start on the next septet
                // boundary: one fill bit.
                sm.extend(pack7(chunk, if concatenated { 1 } else { 0 }));
            } else {
                sm.extend_from_slice(chunk);
            }
            sm
        })
        .collect();
    Encoded {
        data_coding,
        parts,
        esm_class: if concatenated { ESM_UDHI } else { 0 },
    }
}

/// The text of a received `short_message` (a UDH, if flagged, skipped).
pub fn decode(short_message: &[u8], data_coding: u8, esm_class: u8) -> String {
    let body = if esm_class & ESM_UDHI != 0 {
        let udh_len = usize::from(*short_message.first().unwrap_or(&0));
        short_message.get(udh_len + 1..).unwrap_or_default()
    } else {
        short_message
    };
    match data_coding {
        DC_UCS2 => ucs2_decode(body),
        // 0x03 is Latin-1; treat 0x01 (IA5/ASCII) the same way.
        0x01 | 0x03 => body.iter().map(|b| char::from(*b)).collect(),
        _ => gsm7_decode(body),
    }
}

/// What a delivery receipt says: the SMSC's message id, its final state
/// (`DELIVRD`, `UNDELIV`, …) and error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptText {
    /// `id:`.
    pub id: String,
    /// `stat:`.
    pub stat: String,
    /// `err:`.
    pub err: Option<String>,
}

/// Reads Appendix B's `id:… sub:… dlvrd:… submit date:… done date:…
/// stat:… err:… text:…`; `None` without an `id` and a `stat`.
pub fn parse_receipt(text: &str) -> Option<ReceiptText> {
    let field = |name: &str| {
        let lower = text.to_ascii_lowercase();
        let at = lower.find(&format!("{name}:"))? + name.len() + 1;
        let rest = &text[at..];
        let end = rest.find(' ').unwrap_or(rest.len());
        Some(rest[..end].trim().to_owned()).filter(|v| !v.is_empty())
    };
    Some(ReceiptText {
        id: field("id")?,
        stat: field("stat")?.to_ascii_uppercase(),
        err: field("err"),
    })
}

/// The state names of the `message_state` TLV's values (1 to 8).
pub fn message_state_name(v: u8) -> Option<&'static str> {
    Some(match v {
        1 => "ENROUTE",
        2 => "DELIVRD",
        3 => "EXPIRED",
        4 => "DELETED",
        5 => "UNDELIV",
        6 => "ACCEPTD",
        7 => "UNKNOWN",
        8 => "REJECTD",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_round_trips_the_whole_alphabet_and_the_extension_table() {
        let all: String = BASIC
            .iter()
            .filter(|c| **c != '\u{1B}')
            .chain(EXTENSION.iter().map(|(_, c)| c))
            .collect();
        let septets = gsm7_encode(&all).unwrap();
        assert_eq!(septets.len(), 127 + 2 * 10);
        assert_eq!(gsm7_decode(&septets), all);
        assert_eq!(gsm7_encode("€"), Some(vec![0x1B, 0x65]));
        assert_eq!(gsm7_encode("Æ"), Some(vec![28]), "27 is the escape");
        assert_eq!(gsm7_encode("ç"), None);
        assert_eq!(gsm7_encode("\u{1B}"), None);
    }

    #[test]
    fn packing_matches_the_3gpp_example() {
        // 23.038: "hellohello" packs to E8 32 9B FD 46 97 D9 EC 37.
        let s = gsm7_encode("hellohello").unwrap();
        let packed = pack7(&s, 0);
        assert_eq!(hex::encode(&packed), "e8329bfd4697d9ec37");
        assert_eq!(unpack7(&packed, 0, s.len()), s);
        for fill in 0..7 {
            assert_eq!(unpack7(&pack7(&s, fill), fill, s.len()), s);
        }
    }

    #[test]
    fn long_texts_split_into_parts_with_one_reference() {
        let short = encode(&"a".repeat(160), 9, false);
        assert_eq!((short.parts.len(), short.esm_class), (1, 0));
        let long = encode(&"a".repeat(161), 9, false);
        assert_eq!(long.parts.len(), 2);
        assert_eq!(long.esm_class, ESM_UDHI);
        assert_eq!(&long.parts[0][..6], &[5, 0, 3, 9, 2, 1]);
        assert_eq!(&long.parts[1][..6], &[5, 0, 3, 9, 2, 2]);
        assert_eq!(long.parts[0].len(), 6 + 153);
        // An escape pair is not split: part one ends before the `€`.
        let text = format!("{}€{}", "a".repeat(152), "b".repeat(10));
        let e = encode(&text, 1, false);
        assert_eq!(e.parts[0].len(), 6 + 152);
        assert_eq!(
            decode(&e.parts[1], DC_DEFAULT, ESM_UDHI),
            format!("€{}", "b".repeat(10))
        );
        // Packed: 153 septets after one fill bit.
        let p = encode(&"a".repeat(200), 3, true);
        assert_eq!(p.parts[0].len(), 6 + (1 + 153 * 7usize).div_ceil(8));
        assert_eq!(unpack7(&p.parts[0][6..], 1, 153), vec![0x61; 153]);
    }

    #[test]
    fn ucs2_parts_hold_67_units_and_never_split_a_surrogate_pair() {
        let text = "ж".repeat(400);
        let e = encode(&text, 77, false);
        assert_eq!(e.data_coding, DC_UCS2);
        assert_eq!(e.parts.len(), 6, "400 / 67 rounds up to 6");
        let joined: String = e
            .parts
            .iter()
            .map(|p| decode(p, DC_UCS2, ESM_UDHI))
            .collect();
        assert_eq!(joined, text);
        assert!(e.parts.iter().all(|p| p[3] == 77 && p[4] == 6));
        let emoji = format!("{}😀{}", "ж".repeat(66), "ж".repeat(10));
        let e = encode(&emoji, 1, false);
        assert_eq!(e.parts[0].len(), 6 + 66 * 2, "the pair moves to part two");
        assert_eq!(
            decode(&e.parts[1], DC_UCS2, ESM_UDHI),
            format!("😀{}", "ж".repeat(10))
        );
    }

    #[test]
    fn receipt_text_is_read_per_appendix_b() {
        let r = parse_receipt("id:0123456789 sub:001 dlvrd:001 submit date:2611211200 done date:2611211201 stat:DELIVRD err:000 text:Hello").unwrap();
        assert_eq!(
            (r.id.as_str(), r.stat.as_str(), r.err.as_deref()),
            ("0123456789", "DELIVRD", Some("000"))
        );
        let r = parse_receipt("ID:abc STAT:undeliv ERR:012").unwrap();
        assert_eq!((r.id.as_str(), r.stat.as_str()), ("abc", "UNDELIV"));
        assert_eq!(parse_receipt("hello there"), None);
        assert_eq!(parse_receipt("id: stat:DELIVRD"), None);
        assert_eq!(message_state_name(2), Some("DELIVRD"));
        assert_eq!(message_state_name(9), None);
    }
}
