//! Email addresses: parsed into a typed [`Email`] or rejected with a specific reason.
//! NFKC folds full-width `＠` and letters; the domain is lowercased; syntax is checked by the
//! `email_address` crate (RFC 5321/5322).

use std::fmt;

/// A syntactically valid address, domain lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    identity_key: String,
}

/// Why an input is not a usable email address. Each maps to a stable issue code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("no `@` in the address")]
    MissingAt,
    #[error("nothing before the `@`")]
    EmptyLocal,
    #[error("nothing after the `@`")]
    EmptyDomain,
    #[error("not a valid address: {0}")]
    Syntax(String),
}

impl EmailError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAt => "email.missing_at",
            Self::EmptyLocal => "email.empty_local",
            Self::EmptyDomain => "email.empty_domain",
            Self::Syntax(_) => "email.syntax",
        }
    }
}

impl Email {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let folded: String = super::text::nfkc(input)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let (local, domain) = folded.rsplit_once('@').ok_or(EmailError::MissingAt)?;
        if local.is_empty() {
            return Err(EmailError::EmptyLocal);
        }
        let domain = domain.trim_end_matches('.').to_lowercase();
        if domain.is_empty() {
            return Err(EmailError::EmptyDomain);
        }
        let address = format!("{local}@{domain}");
        if !email_address::EmailAddress::is_valid(&address) {
            // Ask for the parser's reason so the issue says what is wrong, not just that it is.
            let why = address
                .parse::<email_address::EmailAddress>()
                .err()
                .map(|e| e.to_string());
            return Err(EmailError::Syntax(
                why.unwrap_or_else(|| "invalid syntax".into()),
            ));
        }
        if !domain.contains('.') {
            return Err(EmailError::Syntax("the domain has no dot".into()));
        }
        let identity_key = address.to_lowercase();
        Ok(Self {
            address,
            identity_key,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The key identity matching uses: case-folded. Deepened per provider in later versions.
    pub fn identity_key(&self) -> &str {
        &self.identity_key
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_is_lowercased_local_part_kept() {
        let e = Email::parse(" Zhang.San@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "Zhang.San@example.com");
        assert_eq!(e.identity_key(), "zhang.san@example.com");
    }

    #[test]
    fn full_width_at_folds() {
        assert_eq!(
            Email::parse("ｌｉ＠ｑｑ．ｃｏｍ").unwrap().as_str(),
            "li@qq.com"
        );
    }

    #[test]
    fn reasons_are_specific() {
        assert_eq!(
            Email::parse("li.qq.com").unwrap_err(),
            EmailError::MissingAt
        );
        assert_eq!(Email::parse("@qq.com").unwrap_err(), EmailError::EmptyLocal);
        assert_eq!(Email::parse("li@").unwrap_err(), EmailError::EmptyDomain);
        assert_eq!(
            Email::parse("li@@qq.com").unwrap_err().code(),
            "email.syntax"
        );
        assert_eq!(
            Email::parse("li@localhost").unwrap_err().code(),
            "email.syntax"
        );
    }
}
