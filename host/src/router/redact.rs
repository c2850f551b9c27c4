//! Redaction: personal data is replaced before an input leaves the device or is logged.

use regex::Regex;

/// An ordered list of patterns and their replacements.
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Vec<(Regex, String)>,
}

impl Default for Redactor {
    /// Emails, phone numbers, card-like digit runs and IPv4 addresses.
    fn default() -> Self {
        let rules = [
            (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "[EMAIL]"),
            (r"\b(?:\d[ -]?){13,19}\b", "[CARD]"),
            (r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{3,4}[ .-]\d{3,4}(?:[ .-]\d{2,4})?\b", "[PHONE]"),
            (r"\b(?:\d{1,3}\.){3}\d{1,3}\b", "[IP]"),
        ];
        Redactor::new(rules.iter().map(|(p, r)| (p.to_string(), r.to_string()))).expect("built-in patterns compile")
    }
}

impl Redactor {
    /// Rules from `(pattern, replacement)` pairs, applied in order.
    pub fn new(rules: impl IntoIterator<Item = (String, String)>) -> Result<Redactor, regex::Error> {
        let rules = rules.into_iter().map(|(p, r)| Ok((Regex::new(&p)?, r))).collect::<Result<_, _>>()?;
        Ok(Redactor { rules })
    }

    /// No redaction at all.
    pub fn none() -> Redactor {
        Redactor { rules: Vec::new() }
    }

    /// Adds a rule after the existing ones.
    pub fn with_rule(mut self, pattern: &str, replacement: &str) -> Result<Redactor, regex::Error> {
        self.rules.push((Regex::new(pattern)?, replacement.to_string()));
        Ok(self)
    }

    /// `text` with every match replaced.
    pub fn apply(&self, text: &str) -> String {
        let mut out = std::borrow::Cow::Borrowed(text);
        for (re, replacement) in &self.rules {
            if let std::borrow::Cow::Owned(s) = re.replace_all(&out, replacement.as_str()) {
                out = std::borrow::Cow::Owned(s);
            }
        }
        out.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_cover_the_usual_suspects() {
        let r = Redactor::default();
        let text = "Mail jane.doe@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111, host 10.0.0.12";
        let out = r.apply(text);
        for leaked in ["jane.doe", "7946", "4111", "10.0.0.12"] {
            assert!(!out.contains(leaked), "{out}");
        }
        assert!(
            out.contains("[EMAIL]") && out.contains("[PHONE]") && out.contains("[CARD]") && out.contains("[IP]"),
            "{out}"
        );
        assert_eq!(r.apply("Rates rose 0.25 points in 2024"), "Rates rose 0.25 points in 2024");
    }

    #[test]
    fn custom_rules_apply_in_order() {
        let r = Redactor::none().with_rule(r"ACME-\d+", "[ACCOUNT]").unwrap();
        assert_eq!(r.apply("account ACME-123 is late"), "account [ACCOUNT] is late");
    }
}
