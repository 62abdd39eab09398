//! E.164 phone numbers, validated with libphonenumber's metadata.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Numbers already judged, by their text. CRMs message the same contacts
/// again and again, and libphonenumber's regexes were the largest single
/// cost of an accepted submission; a hit is one hash lookup.
///
/// *Invariant*: bounded: when it holds `CACHE_CAPACITY` numbers it is
/// emptied and refilled, so memory stays under about 2 MB whatever is sent.
const CACHE_CAPACITY: usize = 16_384;

type Verdict = Result<PhoneNumber, PhoneError>;

fn cache() -> &'static Mutex<HashMap<String, Verdict>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Verdict>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::with_capacity(1024)))
}

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not in `+<country code><number>` form.
    #[error("must be in E.164 format, e.g. +14155550123")]
    NotE164,
    /// Well-formed but not a number that exists in its country's plan.
    #[error("is not a valid phone number for its country")]
    Invalid,
}

/// A phone number known to be valid, held in E.164 form (`+14155550123`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber {
    e164: String,
    region: Option<String>,
}

impl PhoneNumber {
    /// Parses strict E.164: a `+`, 8 to 15 digits, no spaces or punctuation,
    /// and a number libphonenumber considers valid for its region.
    pub fn parse(s: &str) -> Result<Self, PhoneError> {
        let digits = s.strip_prefix('+').ok_or(PhoneError::NotE164)?;
        if !(8..=15).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(PhoneError::NotE164);
        }
        if let Some(known) = cache().lock().expect("phone cache lock").get(s) {
            return known.clone();
        }
        let verdict = Self::judge(s);
        let mut map = cache().lock().expect("phone cache lock");
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(s.to_owned(), verdict.clone());
        verdict
    }

    /// Loads libphonenumber's metadata, and compiles the patterns of the
    /// North American plan, the commonest here, by judging one number. The
    /// first judgement takes that time (about 70 ms, measured on the
    /// benchmark machine, where a later new number takes 6–12 µs), and every
    /// judgement waits for it: called at start-up, it does not fall on the
    /// first request and on the runtime worker that serves it.
    pub fn warm() {
        let _ = Self::judge("+14155550123");
    }

    /// libphonenumber's verdict on a number already in E.164 shape: the
    /// verdict of `judge_by_crate`, with a number's region looked up once.
    ///
    /// The crate's `is_valid` finds the metadata of the number's region
    /// (for a code several regions share, such as +1, by testing the
    /// number against each region's patterns in turn) and then tests the
    /// number against that region's patterns again; its `country().id()`
    /// finds the region a third time. Here the region is found once, by the
    /// same rule (`region_of`), and a region found by its patterns is not
    /// tested again. Every pattern lookup goes through the crate's cache of
    /// compiled regexes, which hashes the pattern's text (some are
    /// kilobytes long), so a new North American number takes about 40%
    /// less (bench/HISTORY.md, "Thirty-sixth session"). The crate's own
    /// region lookup reads the national number without its leading zeros
    /// (Italy's), where `is_valid` reads it with them; for such numbers the
    /// two lookups differ, so the verdict is the crate's `is_valid` as it
    /// is, and the region is the one `is_valid` judged the number by: the
    /// crate's `country().id()` finds none for an Italian landline
    /// (`+39 02…`), whose quiet hours would then be the default zone's, not
    /// Rome's. The verdicts are the crate's: a test compares them over
    /// about 19,000 numbers of every country code.
    ///
    /// The patterns this function tests, and the region lookup inside the
    /// crate's parse, go through patterns compiled here
    /// ([`parse_e164`], [`Compiled`]), not through the crate's cache.
    fn judge(s: &str) -> Result<Self, PhoneError> {
        let (parsed, looked_up) = parse_e164(s);
        let parsed = parsed.ok_or(PhoneError::Invalid)?;
        let national = parsed.national().to_string();
        let code = parsed.country().code();
        if parsed.national().zeros() != 0 {
            if !phonenumber::is_valid(&parsed) {
                return Err(PhoneError::Invalid);
            }
            let id = match region_of(code, &national) {
                Some((meta, _)) => meta.id().parse().ok(),
                None => parsed.country().id(),
            };
            return Ok(Self::valid(&parsed, id));
        }
        // The parse's region, when it was looked up here for the same
        // national number (nearly always), is this one.
        let found = match looked_up {
            Some(l) if l.code == code && l.national == national => Some(l.region),
            _ => region_of(code, &national),
        };
        let (meta, valid) = found.ok_or(PhoneError::Invalid)?;
        if !(valid || has_a_type(meta, &national)) {
            return Err(PhoneError::Invalid);
        }
        Ok(Self::valid(&parsed, meta.id().parse().ok()))
    }

    /// The verdict through the crate's own calls, which `judge`'s must
    /// equal (a test compares them).
    #[cfg(test)]
    fn judge_by_crate(parsed: &phonenumber::PhoneNumber) -> Result<Self, PhoneError> {
        if !phonenumber::is_valid(parsed) {
            return Err(PhoneError::Invalid);
        }
        Ok(PhoneNumber {
            e164: parsed.format().mode(phonenumber::Mode::E164).to_string(),
            region: parsed.country().id().map(|id| format!("{id:?}")),
        })
    }

    /// A number judged valid, of the region `id` if it has one.
    fn valid(parsed: &phonenumber::PhoneNumber, id: Option<phonenumber::country::Id>) -> Self {
        PhoneNumber {
            // What the crate's formatter writes in `Mode::E164` (the national
            // number's `Display` keeps its leading zeros), without the
            // formatter's choice of a national format first, which tests
            // the number against the region's format patterns.
            e164: format!("+{}{}", parsed.country().code(), parsed.national()),
            region: id.map(|id| format!("{id:?}")),
        }
    }

    /// The number in E.164 form.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The ISO 3166 region the number belongs to, when libphonenumber knows it.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

/// The metadata that applies to a national number of country code `code`,
/// by the rule of the crate's `validator::source_for`: the code's one
/// region, or the non-geographic entity's metadata; or, of the regions that
/// share the code, the first whose leading digits begin the number or, for
/// a region without leading digits, the first of whose types it is
/// (`has_a_type`). With it, whether that type test was made and passed.
fn region_of(code: u16, national: &str) -> Option<(&'static phonenumber::Metadata, bool)> {
    let db = &*phonenumber::metadata::DATABASE;
    let regions = db.region(&code)?;
    if let [only] = regions[..] {
        let meta = if only == "001" {
            db.by_code(&code)?.into_iter().next()?
        } else {
            // The crate refuses a region id it does not know.
            only.parse::<phonenumber::country::Id>().ok()?;
            db.by_id(only)?
        };
        return Some((meta, false));
    }
    regions.into_iter().find_map(|region| {
        let meta = db.by_id(region)?;
        match meta.leading_digits() {
            Some(leading) => Compiled::starts(leading, national).then_some((meta, false)),
            None => has_a_type(meta, national).then_some((meta, true)),
        }
    })
}

/// `phonenumber::parse(None, s)` for a number in E.164 shape, with the
/// region the crate would look up found here and passed in.
///
/// Without a region the crate finds one (`validator::source_for`, the rule
/// of [`region_of`]) by testing the number against the patterns of each
/// region its country code may belong to, through its cache of compiled
/// regexes: about half of a new North American number's judgement
/// (bench/HISTORY.md, "Fifty-fourth session"). Given the same region it
/// parses as it would have, with one difference this function rules out
/// first: a region's international dialling prefix (`idd`) is stripped
/// from the front of the digits, which the crate does only when it was
/// given the region, so a number whose digits begin with that prefix is
/// parsed without one (no region's prefix begins a number of its own code
/// in today's metadata; a test checks). Non-geographic codes (`001`),
/// codes the crate does not know and numbers of no region are parsed
/// without a region too: that is the crate's own lookup, as before.
///
/// With the parse, the region looked up for it, if one was.
fn parse_e164(s: &str) -> (Option<phonenumber::PhoneNumber>, Option<LookedUp<'_>>) {
    let looked_up = region_for_parse(s);
    let parsed = phonenumber::parse(looked_up.as_ref().map(|l| l.id), s).ok();
    (parsed, looked_up)
}

/// A region found by [`region_of`] for a parse ([`region_for_parse`]).
struct LookedUp<'a> {
    id: phonenumber::country::Id,
    code: u16,
    /// The national number it was found for.
    national: &'a str,
    region: (&'static phonenumber::Metadata, bool),
}

/// The region `phonenumber::parse(None, s)` would find for `s` (`+` and
/// digits), where passing it leaves the parse as it was; `None` where it
/// would not or where there is none to pass.
fn region_for_parse(s: &str) -> Option<LookedUp<'_>> {
    let db = &*phonenumber::metadata::DATABASE;
    // Only ASCII digits are taken as they are: the crate's parse reads
    // other forms too (other scripts' digits, letters, punctuation), which
    // it normalizes first. No country code begins with 0 (the crate
    // refuses such a number before it looks a region up).
    let digits = s
        .strip_prefix('+')
        .filter(|d| !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit()))?;
    // The crate's `helper::country_code`: the first one to three digits
    // that are a known country code.
    let (code, national) = (1..=3).find_map(|len| {
        let code: u16 = digits.get(..len)?.parse().ok()?;
        db.by_code(&code)?;
        Some((code, digits.get(len..)?))
    })?;
    // The crate looks the region up by the national number without its
    // leading zeros (Italy's).
    let national = national.trim_start_matches('0');
    let region = region_of(code, national)?;
    let meta = region.0;
    let id: phonenumber::country::Id = meta.id().parse().ok()?;
    if meta
        .international_prefix()
        .is_some_and(|idd| Compiled::starts(idd, digits))
    {
        return None;
    }
    Some(LookedUp {
        id,
        code,
        national,
        region,
    })
}

/// The metadata's patterns compiled here, shared by every thread, keyed
/// by the address of the crate's pattern (it lives in the crate's static
/// metadata, so an address names one pattern for the life of the process).
///
/// The crate's own `CachedRegex` looks its regex up at every use in one
/// cache for the process, behind a mutex, by the pattern's text, twice
/// (SipHash over patterns up to kilobytes long): about 1,300 instructions
/// a use, more than most of the searches themselves. Here a use is a read
/// lock and a hash of one address.
///
/// *Invariant*: bounded: at `COMPILED_CAPACITY` patterns the table is
/// emptied and refilled, as the crate's cache of 100 evicts, so numbers of
/// every region cannot grow it without end.
struct Compiled;

const COMPILED_CAPACITY: usize = 256;

type Table = std::sync::RwLock<HashMap<usize, regex::Regex, foldhash::fast::RandomState>>;

impl Compiled {
    fn table() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(Default::default)
    }

    /// Whether `re` matches `text` at its start: the crate's use of its
    /// patterns (`Descriptor::is_match`, the leading digits, the `idd`),
    /// which asks whether the leftmost match starts at 0, that is whether
    /// any match does. So the pattern is compiled anchored (`^(?:…)`), and
    /// the search stops at the first character it cannot match there.
    fn starts(re: &'static regex_cache::CachedRegex, text: &str) -> bool {
        let key = std::ptr::from_ref(re) as usize;
        // A panic elsewhere while the lock was held leaves no half-made
        // entry (an insert or a clear is whole), so a poisoned lock is used
        // as it is.
        let table = Self::table();
        if let Some(r) = table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return r.is_match(text);
        }
        // The crate compiled it with these options when it loaded the
        // metadata (regex-cache's defaults, and whitespace ignored, so the
        // group closes on a line of its own, after any comment).
        let Ok(r) = regex::RegexBuilder::new(&format!("^(?:{}\n)", re.as_str()))
            .ignore_whitespace(true)
            .size_limit(10 << 20)
            .dfa_size_limit(2 << 20)
            .build()
        else {
            return re.find(text).is_some_and(|m| m.start() == 0);
        };
        let found = r.is_match(text);
        let mut table = table.write().unwrap_or_else(PoisonError::into_inner);
        if table.len() >= COMPILED_CAPACITY {
            table.clear();
        }
        table.insert(key, r);
        found
    }

    /// The crate's `Descriptor::is_match`: a number of one of the
    /// descriptor's lengths (when it lists any) that its pattern matches
    /// from the start.
    fn describes(d: &'static phonenumber::metadata::Descriptor, national: &str) -> bool {
        let lengths = d.possible_length();
        (lengths.is_empty() || u16::try_from(national.len()).is_ok_and(|n| lengths.contains(&n)))
            && Self::starts(d.national_number(), national)
    }
}

/// Whether the national number is of one of the region's types: what the
/// crate's `validator::number_type` tells apart, asked only whether it is
/// not `Unknown` (the general pattern, then any type's pattern).
fn has_a_type(meta: &'static phonenumber::Metadata, national: &str) -> bool {
    let d = meta.descriptors();
    Compiled::describes(d.general(), national) && types(d).any(|t| Compiled::describes(t, national))
}

/// A region's types, in the order `validator::number_type` tests them.
fn types(
    d: &phonenumber::metadata::Descriptors,
) -> impl Iterator<Item = &phonenumber::metadata::Descriptor> {
    [
        d.premium_rate(),
        d.toll_free(),
        d.shared_cost(),
        d.voip(),
        d.personal_number(),
        d.pager(),
        d.uan(),
        d.voicemail(),
        d.fixed_line(),
        d.mobile(),
    ]
    .into_iter()
    .flatten()
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_up_leaves_the_verdicts_as_they_were() {
        PhoneNumber::warm();
        PhoneNumber::warm();
        check("+14155550123", Ok("+14155550123"));
        check("+1415555012", Err(PhoneError::Invalid));
    }

    fn check(input: &str, expect: Result<&str, PhoneError>) {
        let got = PhoneNumber::parse(input);
        assert_eq!(
            got.as_ref().map(|p| p.as_str()),
            expect.as_ref().map(|s| *s),
            "{input}"
        );
    }

    #[test]
    fn a_number_judged_again_gets_the_same_verdict() {
        for input in ["+14155550123", "+15551230001", "+4915123456789"] {
            let first = PhoneNumber::parse(input);
            assert_eq!(PhoneNumber::parse(input), first, "{input}");
            assert_eq!(PhoneNumber::judge(input), first, "{input}");
        }
        assert_eq!(PhoneNumber::parse("+15551230001"), Err(PhoneError::Invalid));
    }

    /// Numbers to compare `judge` with the crate on: every region's example
    /// of each of its types (valid numbers of every region), each with its
    /// last digit changed, one dropped and one added (mostly invalid ones,
    /// and some of a neighbouring region), and numbers of every country
    /// code and of every North American area code.
    fn sample() -> Vec<String> {
        let mut out = Vec::new();
        for meta in phonenumber::metadata::DATABASE.iter() {
            let d = meta.descriptors();
            let kinds = std::iter::once(d.general()).chain(types(d));
            for example in kinds.filter_map(|k| k.example()) {
                // With the region's trunk prefix kept in (`+44 0 20…`, a
                // common mistake), which the crate's parse strips.
                if let Some(prefix) = meta.national_prefix() {
                    out.push(format!("+{}{prefix}{example}", meta.country_code()));
                }
                let full = format!("+{}{example}", meta.country_code());
                let last = full.len() - 1;
                let flipped = (full.as_bytes()[last] - b'0' + 5) % 10;
                out.push(format!("{}{flipped}", &full[..last]));
                out.push(full[..last].to_owned());
                out.push(format!("{full}7"));
                out.push(full);
            }
        }
        for code in 1..1000u64 {
            for k in 0..6u64 {
                let n = (k * 7_919 + code * 104_729) % 10_000_000_000;
                out.push(format!("+{code}{n}"));
                out.push(format!("+{code}{:08}", n % 100_000_000));
            }
        }
        for area in 200..1000u64 {
            for k in 0..3u64 {
                out.push(format!("+1{area}{:03}{:04}", 200 + k * 300, 1_234 + k));
            }
        }
        out
    }

    #[test]
    fn the_verdicts_are_the_crates_own() {
        let (mut valid, mut regions) = (0, std::collections::HashSet::new());
        let mut leading_zeros = 0;
        for s in sample() {
            let by_crate = phonenumber::parse(None, &s)
                .map_err(|_| PhoneError::Invalid)
                .and_then(|p| PhoneNumber::judge_by_crate(&p));
            let judged = PhoneNumber::judge(&s);
            let zeros = phonenumber::parse(None, &s).is_ok_and(|p| p.national().zeros() != 0);
            if zeros {
                // The region is the one `is_valid` read (the crate's own
                // lookup finds none for a shared code such as Italy's).
                let e164 = |j: &Result<PhoneNumber, PhoneError>| j.clone().map(|p| p.e164);
                assert_eq!(e164(&judged), e164(&by_crate), "{s}");
                if let Ok(p) = &judged {
                    assert!(p.region.is_some(), "{s}");
                    leading_zeros += 1;
                }
            } else {
                assert_eq!(judged, by_crate, "{s}");
            }
            if let Ok(p) = judged {
                valid += 1;
                regions.insert(p.region);
            }
        }
        // The sample reaches valid numbers of nearly every region, the
        // non-geographic ones (no region) and the Italian leading zero.
        assert!(valid > 2_000, "{valid} valid");
        assert!(regions.len() > 200, "{} regions", regions.len());
        assert!(regions.contains(&None));
        assert!(leading_zeros > 5, "{leading_zeros} with leading zeros");
        let landline = PhoneNumber::judge("+390236618300").unwrap();
        assert_eq!(
            (landline.as_str(), landline.region()),
            ("+390236618300", Some("IT"))
        );
    }

    #[test]
    fn a_region_passed_in_parses_as_the_crates_own_lookup() {
        let (mut passed, mut left) = (0, 0);
        for s in sample() {
            let region = region_for_parse(&s).map(|l| l.id);
            match region {
                Some(_) => passed += 1,
                None => left += 1,
            }
            assert_eq!(
                phonenumber::parse(region, &s).ok(),
                phonenumber::parse(None, &s).ok(),
                "{s} with {region:?}"
            );
        }
        assert!(passed > 10_000, "{passed} passed a region");
        assert!(left > 1_000, "{left} left to the crate's lookup");
    }

    /// What `region_for_parse`'s check of the dialling prefix guards
    /// against does not occur in today's metadata: no region's `idd`
    /// begins a number of its own country code, over every four digits
    /// after the code. (If a later metadata has one, the check keeps such
    /// numbers on the crate's own lookup; the sample above then compares it.)
    #[test]
    fn no_region_dials_out_with_its_own_country_code() {
        let db = &*phonenumber::metadata::DATABASE;
        let mut regions = 0;
        for meta in db.iter() {
            let Some(idd) = meta.international_prefix() else {
                continue;
            };
            regions += 1;
            for tail in 0..10_000 {
                let digits = format!("{}{tail:04}23456789", meta.country_code());
                assert!(!Compiled::starts(idd, &digits), "{} {digits}", meta.id());
            }
        }
        assert!(regions > 200, "{regions} regions with an idd");
    }

    #[test]
    fn the_compiled_patterns_match_as_the_crates_and_stay_bounded() {
        let db = &*phonenumber::metadata::DATABASE;
        let mut patterns = 0;
        for meta in db.iter() {
            let d = meta.descriptors();
            for t in std::iter::once(d.general()).chain(types(d)) {
                let example = t.example().unwrap_or("2015550123");
                // Each example as it is, then with a digit before it or its
                // first taken off: a pattern matches some of those later in
                // the text but not at its start.
                let texts = [
                    example.to_owned(),
                    format!("0{example}"),
                    format!("1{example}"),
                    format!("9{example}"),
                    example[1..].to_owned(),
                    "12015550123".to_owned(),
                    "7".to_owned(),
                ];
                for example in texts.iter().map(String::as_str) {
                    assert_eq!(
                        Compiled::describes(t, example),
                        t.is_match(example),
                        "{} {example}",
                        meta.id()
                    );
                    let re = t.national_number();
                    assert_eq!(
                        Compiled::starts(re, example),
                        re.find(example).is_some_and(|m| m.start() == 0)
                    );
                }
                patterns += 1;
            }
        }
        assert!(patterns > 2 * COMPILED_CAPACITY, "{patterns} patterns");
        assert!(Compiled::table().read().unwrap().len() <= COMPILED_CAPACITY);
    }

    #[test]
    fn the_cache_stays_bounded() {
        for n in 0..(CACHE_CAPACITY as u64 + 10) {
            let _ = PhoneNumber::parse(&format!("+1415{:07}", n % 10_000_000));
        }
        assert!(cache().lock().unwrap().len() <= CACHE_CAPACITY);
        assert_eq!(
            PhoneNumber::parse("+14155550123").unwrap().as_str(),
            "+14155550123"
        );
    }

    #[test]
    fn valid_numbers_of_several_regions_parse() {
        check("+14155550123", Ok("+14155550123"));
        check("+447911123456", Ok("+447911123456"));
        check("+4915123456789", Ok("+4915123456789"));
        check("+33612345678", Ok("+33612345678"));
    }

    #[test]
    fn the_region_is_known() {
        assert_eq!(
            PhoneNumber::parse("+442071838750").unwrap().region(),
            Some("GB")
        );
        assert_eq!(
            PhoneNumber::parse("+14155550123").unwrap().region(),
            Some("US")
        );
    }

    #[test]
    fn a_region_is_looked_up_for_e164_digits_only() {
        for odd in [
            "",
            "+",
            "+1",
            "+0",
            "+014155550123",
            "+١٤١٥٥٥٥٠١٢٣",
            "+1٤١٥٥٥٥٠١٢٣",
            "+44é",
            "14155550123",
        ] {
            assert!(region_for_parse(odd).is_none(), "{odd}");
            assert_eq!(
                parse_e164(odd).0,
                phonenumber::parse(None, odd).ok(),
                "{odd}"
            );
        }
    }

    #[test]
    fn non_e164_forms_are_refused() {
        for bad in [
            "",
            "+",
            "14155550123",
            "+1 415 555 0123",
            "+1-415-555-0123",
            "(415) 555-0123",
            "+0123456789",
            "+1415555012345678",
            "+1415abc0123",
            "++14155550123",
            "+١٤١٥٥٥٥٠١٢٣",
        ] {
            check(bad, Err(PhoneError::NotE164));
        }
    }

    #[test]
    fn well_formed_but_impossible_numbers_are_refused() {
        check("+11234567890", Err(PhoneError::Invalid));
        check("+999123456789", Err(PhoneError::Invalid));
        check("+4412", Err(PhoneError::NotE164));
    }
}
