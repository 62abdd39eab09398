//! Random tokens for secrets (API keys, the admin token).

/// Returns `n` bytes from the operating system's CSPRNG.
///
/// # Panics
/// Panics if the OS has no entropy source, which no supported platform lacks;
/// continuing with weak secrets would be worse than stopping.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

/// Returns `N` bytes of the operating system's CSPRNG for an identifier,
/// taken from a per-thread buffer refilled 512 bytes at a time: ids are
/// made several times per message on the writer's thread, and one system
/// call each was measurable there. Secrets use `random_bytes`, which keeps
/// no bytes around.
///
/// # Panics
/// As `random_bytes`, and if `N` exceeds the buffer.
pub fn id_bytes<const N: usize>() -> [u8; N] {
    use std::cell::RefCell;
    const POOL: usize = 512;
    thread_local! {
        // (bytes, how many of them are used)
        static BUF: RefCell<([u8; POOL], usize)> = const { RefCell::new(([0; POOL], POOL)) };
    }
    assert!(N <= POOL, "id_bytes serves at most {POOL} bytes");
    BUF.with_borrow_mut(|(pool, used)| {
        if *used + N > POOL {
            getrandom::fill(pool).expect("the operating system's random source failed");
            *used = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&pool[*used..*used + N]);
        // Handed out once: the used bytes are wiped.
        pool[*used..*used + N].fill(0);
        *used += N;
        out
    })
}

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new random token: `prefix` followed by 43 base62 characters (~256 bits).
pub fn new_token(prefix: &str) -> String {
    let bytes = random_bytes::<43>();
    let mut s = String::with_capacity(prefix.len() + 43);
    s.push_str(prefix);
    // 256 / 62 leaves a slight bias towards the first 8 symbols; with 43
    // symbols the token still carries well over 250 bits of entropy.
    s.extend(bytes.iter().map(|b| ALPHABET[usize::from(*b) % 62] as char));
    s
}

/// `bytes` in lowercase hexadecimal: a table lookup per byte into one
/// allocation (the `hex` crate's iterator pushes a `char` at a time, which
/// was 1.7% of a request thread's time on the accept path, where the API
/// key's hash and the request's are written for every request).
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_lower_writes_two_lowercase_digits_per_byte() {
        assert_eq!(hex_lower(&[]), "");
        assert_eq!(hex_lower(&[0x00, 0x0f, 0xa0, 0xff, 0x7e]), "000fa0ff7e");
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_lower(&all), expected);
    }

    #[test]
    fn tokens_carry_their_prefix_and_differ() {
        let a = new_token("sk_");
        let b = new_token("sk_");
        assert!(a.starts_with("sk_") && a.len() == 46);
        assert_ne!(a, b);
    }

    #[test]
    fn id_bytes_never_repeat_across_refills() {
        // 10 bytes at a time from a 512-byte pool: 51 per fill, so 2,000
        // draws cross about 40 refills; 80 random bits never collide here.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let b = id_bytes::<10>();
            assert_ne!(b, [0; 10], "a wiped or unfilled slot was handed out");
            assert!(seen.insert(b), "the same bytes were handed out twice");
        }
        let other = std::thread::spawn(id_bytes::<10>).join().unwrap();
        assert!(!seen.contains(&other), "threads share no bytes");
    }
}
