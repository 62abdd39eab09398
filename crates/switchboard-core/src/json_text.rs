//! JSON text written by hand where the hot paths write the same shape for
//! every message (a webhook's envelope and its message data, the
//! simulator's receipt callbacks), byte for byte what serde_json writes.
//!
//! serde_json escapes a string one byte at a time through its formatter,
//! and a derived `Serialize` escapes every field's key the same way on
//! every call: about 400 instructions a field of a message event's data.
//! Here a key is a literal, and a string that needs no escape (a control
//! character, `"` or `\`, the bytes serde_json escapes) is copied whole
//! after one pass that the compiler vectorizes; one that does is handed to
//! serde_json, so the escapes are always its own.

use std::fmt::Write as _;

/// Whether serde_json writes `s` as it is between its quotes: no byte below
/// 0x20, no `"` and no `\` (serde_json's `ESCAPE` table; it leaves
/// everything else, `/`, DEL and non-ASCII included, as it is).
pub fn is_plain(s: &str) -> bool {
    // No early exit, so that the loop is vectorized: the strings are short.
    !s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Appends `s` as a JSON string, quotes included, as serde_json writes it.
pub fn push_str(out: &mut String, s: &str) {
    if is_plain(s) {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        let mut bytes = std::mem::take(out).into_bytes();
        serde_json::to_writer(&mut bytes, s).expect("a string serializes");
        // serde_json writes valid UTF-8: its escapes are ASCII, the rest is
        // `s` as it was.
        *out = String::from_utf8(bytes).expect("serde_json writes UTF-8");
    }
}

/// Appends `s` as a JSON string, or `null`.
pub fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

/// Appends an integer as JSON writes it.
pub fn push_int(out: &mut String, n: i64) {
    write!(out, "{n}").expect("writing to a String cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            "Benchmark message 1",
            "+14155550123",
            "msg_01JF0000000000000000000000",
            "quote \" backslash \\ tab \t nl \n cr \r ff \u{c} bs \u{8}",
            "ctl \u{1} \u{1f} del \u{7f} slash / emoji 🎉 é ü 中文",
            "\"",
            "\\",
            "a\u{0}b",
            "</script><script>alert(1)</script>",
            "\u{2028}\u{2029}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every byte value that can stand alone in UTF-8, at every place in
        // strings long enough to cross the vectorized loop's blocks.
        for b in 0u8..0x80 {
            for at in [0, 15, 16, 31, 63] {
                let mut s = "x".repeat(64);
                s.replace_range(at..at + 1, &(b as char).to_string());
                v.push(s);
            }
        }
        v
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in samples() {
            let mut out = String::from("[");
            push_str(&mut out, &s);
            assert_eq!(
                out,
                format!("[{}", serde_json::to_string(&s).unwrap()),
                "{s:?}"
            );
            // And it reads back as the same string.
            let back: String = serde_json::from_str(&out[1..]).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn plain_means_serde_json_escapes_nothing() {
        for s in samples() {
            let plain = serde_json::to_string(&s).unwrap() == format!("\"{s}\"");
            assert_eq!(is_plain(&s), plain, "{s:?}");
        }
    }

    #[test]
    fn options_and_integers() {
        let mut out = String::new();
        push_opt_str(&mut out, None);
        out.push(',');
        push_opt_str(&mut out, Some("a\"b"));
        out.push(',');
        for n in [0, -1, i64::MIN, i64::MAX, 1600] {
            push_int(&mut out, n);
            out.push(',');
        }
        assert_eq!(
            out,
            format!("null,\"a\\\"b\",0,-1,{},{},1600,", i64::MIN, i64::MAX)
        );
    }
}
