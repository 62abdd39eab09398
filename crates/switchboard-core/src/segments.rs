//! How many SMS segments a body costs, and in which encoding (SPEC §3).
//!
//! GSM-7: 160 septets in a single message, 153 per part of a concatenated one;
//! characters of the extension table cost two septets and an escape is never
//! split across parts. Anything outside GSM-7 is sent as UCS-2: 70 units
//! single, 67 per part; a character outside the BMP is a surrogate pair (two
//! units) and a pair is never split across parts.

use serde::Serialize;

/// The encoding a body will be sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Encoding {
    /// The GSM 03.38 default alphabet (with its extension table).
    #[serde(rename = "GSM-7")]
    Gsm7,
    /// UTF-16 big endian, BMP and surrogate pairs.
    #[serde(rename = "UCS-2")]
    Ucs2,
}

impl Encoding {
    /// The wire name, `GSM-7` or `UCS-2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "GSM-7" => Some(Encoding::Gsm7),
            "UCS-2" => Some(Encoding::Ucs2),
            _ => None,
        }
    }
}

/// The encoding, segment count and length (in septets or UTF-16 units) of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Encoding chosen.
    pub encoding: Encoding,
    /// Number of SMS parts.
    pub segments: u32,
    /// Septets (GSM-7) or 16-bit units (UCS-2).
    pub units: u32,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{000C}^{}\\[~]|€";

/// The GSM-7 cost of each ASCII character (0: not representable), made
/// from the two tables at compile time: most bodies are ASCII, and a table
/// lookup replaces a search of the alphabet for every character.
const ASCII_COST: [u8; 128] = {
    let mut costs = [0u8; 128];
    let (basic, ext) = (GSM7_BASIC.as_bytes(), GSM7_EXTENSION.as_bytes());
    let mut i = 0;
    while i < basic.len() {
        if basic[i] < 128 {
            costs[basic[i] as usize] = 1;
        }
        i += 1;
    }
    let mut i = 0;
    while i < ext.len() {
        if ext[i] < 128 {
            costs[ext[i] as usize] = 2;
        }
        i += 1;
    }
    costs
};

/// Septets a character costs in GSM-7, or `None` if it is not representable.
fn gsm7_cost(c: char) -> Option<u32> {
    if c.is_ascii() {
        return match ASCII_COST[c as usize] {
            0 => None,
            n => Some(u32::from(n)),
        };
    }
    searched_cost(c)
}

/// `gsm7_cost` by a search of the two tables (the definition).
fn searched_cost(c: char) -> Option<u32> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Packs unit costs into parts of `per_part` without splitting a character.
fn count_parts(costs: impl Iterator<Item = u32>, per_part: u32) -> u32 {
    let mut parts = 1;
    let mut used = 0;
    for cost in costs {
        if used + cost > per_part {
            parts += 1;
            used = 0;
        }
        used += cost;
    }
    parts
}

/// Computes encoding and segments for a body.
pub fn analyze(body: &str) -> SegmentInfo {
    let gsm: Option<Vec<u32>> = body.chars().map(gsm7_cost).collect();
    let (encoding, costs, single, multi) = match gsm {
        Some(costs) => (Encoding::Gsm7, costs, 160, 153),
        None => (
            Encoding::Ucs2,
            body.chars().map(|c| c.len_utf16() as u32).collect(),
            70,
            67,
        ),
    };
    let units: u32 = costs.iter().sum();
    let segments = if units == 0 {
        // An empty body (media only) is still one message.
        1
    } else if units <= single {
        1
    } else {
        count_parts(costs.into_iter(), multi)
    };
    SegmentInfo {
        encoding,
        segments,
        units,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, encoding: Encoding, segments: u32, units: u32) {
        let got = analyze(body);
        assert_eq!(
            got,
            SegmentInfo {
                encoding,
                segments,
                units
            },
            "{body:?}"
        );
    }

    #[test]
    fn gsm7_single_and_concatenated_limits() {
        check("hello", Encoding::Gsm7, 1, 5);
        check(&"a".repeat(160), Encoding::Gsm7, 1, 160);
        check(&"a".repeat(161), Encoding::Gsm7, 2, 161);
        check(&"a".repeat(306), Encoding::Gsm7, 2, 306);
        check(&"a".repeat(307), Encoding::Gsm7, 3, 307);
    }

    #[test]
    fn extension_characters_cost_two_septets_and_are_not_split() {
        check("€", Encoding::Gsm7, 1, 2);
        check(&"€".repeat(80), Encoding::Gsm7, 1, 160);
        check(&"€".repeat(81), Encoding::Gsm7, 2, 162);
        // 152 plain septets then one escape: the escape cannot straddle parts.
        let body = format!("{}{}{}", "a".repeat(152), "{", "a".repeat(10));
        check(&body, Encoding::Gsm7, 2, 164);
    }

    #[test]
    fn non_gsm_characters_switch_to_ucs2() {
        check("héllo Ç", Encoding::Gsm7, 1, 7);
        // Only the capital cedilla is in GSM-7.
        check("ç", Encoding::Ucs2, 1, 1);
        check("Привет", Encoding::Ucs2, 1, 6);
        check(&"ж".repeat(70), Encoding::Ucs2, 1, 70);
        check(&"ж".repeat(71), Encoding::Ucs2, 2, 71);
        check(&"ж".repeat(134), Encoding::Ucs2, 2, 134);
        check(&"ж".repeat(135), Encoding::Ucs2, 3, 135);
    }

    #[test]
    fn characters_outside_the_bmp_count_as_two_and_are_not_split() {
        check("😀", Encoding::Ucs2, 1, 2);
        check(&"😀".repeat(35), Encoding::Ucs2, 1, 70);
        // 66 units then a pair: the pair moves to the second part.
        let body = format!("{}😀", "ж".repeat(66));
        check(&body, Encoding::Ucs2, 1, 68);
        let body = format!("{}😀{}", "ж".repeat(66), "ж".repeat(10));
        check(&body, Encoding::Ucs2, 2, 78);
    }

    #[test]
    fn the_ascii_table_agrees_with_the_alphabet_for_every_character() {
        for c in (0..=0x2FFFFu32).filter_map(char::from_u32) {
            assert_eq!(gsm7_cost(c), searched_cost(c), "{c:?} (U+{:04X})", c as u32);
        }
    }

    #[test]
    fn an_empty_body_is_one_segment() {
        check("", Encoding::Gsm7, 1, 0);
    }
}
