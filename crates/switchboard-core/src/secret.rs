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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_their_prefix_and_differ() {
        let a = new_token("sk_");
        let b = new_token("sk_");
        assert!(a.starts_with("sk_") && a.len() == 46);
        assert_ne!(a, b);
    }
}
