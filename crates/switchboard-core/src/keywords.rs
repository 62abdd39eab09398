//! Compliance keywords in inbound messages (SPEC §5). A message is a keyword
//! when, ignoring case, whitespace and punctuation, it is exactly one of the
//! words: "Stop." and " stop " are STOP; "stop sending me deals" is not.

/// What an inbound keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// Opt out.
    Stop,
    /// Opt back in.
    Start,
    /// Ask for help.
    Help,
}

const STOP: [&str; 8] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
];
const START: [&str; 3] = ["START", "YES", "UNSTOP"];
const HELP: [&str; 2] = ["HELP", "INFO"];

impl Keyword {
    /// Classifies an inbound text.
    pub fn classify(text: &str) -> Option<Keyword> {
        if text.chars().count() > 40 {
            return None;
        }
        let word: String = text
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_uppercase)
            .collect();
        if STOP.contains(&word.as_str()) {
            Some(Keyword::Stop)
        } else if START.contains(&word.as_str()) {
            Some(Keyword::Start)
        } else if HELP.contains(&word.as_str()) {
            Some(Keyword::Help)
        } else {
            None
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Stop => "stop",
            Keyword::Start => "start",
            Keyword::Help => "help",
        }
    }
}

/// The default replies; a workspace may change them.
pub fn default_reply(k: Keyword) -> &'static str {
    match k {
        Keyword::Stop => {
            "You have been unsubscribed and will receive no more messages. Reply START to resubscribe."
        }
        Keyword::Start => "You have been resubscribed. Reply STOP to unsubscribe.",
        Keyword::Help => {
            "Reply STOP to unsubscribe, START to resubscribe. Msg & data rates may apply."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_tolerate_case_spacing_and_punctuation() {
        for (text, want) in [
            ("stop", Some(Keyword::Stop)),
            (" Stop. ", Some(Keyword::Stop)),
            ("STOP!!!", Some(Keyword::Stop)),
            ("Stop All", Some(Keyword::Stop)),
            ("unsubscribe", Some(Keyword::Stop)),
            ("opt-out", Some(Keyword::Stop)),
            ("Cancel", Some(Keyword::Stop)),
            ("end", Some(Keyword::Stop)),
            ("quit", Some(Keyword::Stop)),
            ("revoke", Some(Keyword::Stop)),
            ("START", Some(Keyword::Start)),
            ("yes", Some(Keyword::Start)),
            ("un-stop", Some(Keyword::Start)),
            ("Help?", Some(Keyword::Help)),
            ("info", Some(Keyword::Help)),
            ("stop sending me deals", None),
            ("stopp", None),
            ("", None),
            ("thanks!", None),
        ] {
            assert_eq!(Keyword::classify(text), want, "{text:?}");
        }
    }
}
