//! Email addresses: parsed into a typed [`Email`] or rejected with a specific reason.
//! NFKC folds full-width `＠` and letters; the domain is lowercased and internationalized domains
//! become punycode (`idna`); syntax is checked by the `email_address` crate (RFC 5321/5322).
//! Valid addresses may still carry findings ([`Email::findings`]): a likely typo of a common
//! provider (never rewritten), a disposable domain (mailchecker's maintained list), a role mailbox.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

/// A syntactically valid address, domain lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    identity_key: String,
    findings: Vec<Finding>,
}

/// Something worth knowing about a valid address. Each maps to a stable issue code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The domain is one edit away from a common provider's: the suggested address.
    TypoSuggested(String),
    /// A throwaway-inbox domain.
    Disposable,
    /// A shared mailbox (info@, sales@...), not a person: never used to match people.
    Role,
}

impl Finding {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TypoSuggested(_) => "email.typo_suggested",
            Self::Disposable => "email.disposable",
            Self::Role => "email.role",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::TypoSuggested(s) => format!("did you mean {s}? (kept as typed)"),
            Self::Disposable => "a disposable (throwaway) mailbox domain".into(),
            Self::Role => "a role mailbox shared by a team, not a person".into(),
        }
    }
}

/// Providers whose near misses are worth a suggestion, Chinese ones first.
const COMMON_DOMAINS: &[&str] = &[
    "qq.com",
    "163.com",
    "126.com",
    "sina.com",
    "sina.cn",
    "sohu.com",
    "foxmail.com",
    "yeah.net",
    "139.com",
    "aliyun.com",
    "gmail.com",
    "outlook.com",
    "hotmail.com",
    "yahoo.com",
    "icloud.com",
    "live.com",
];

/// Local parts that name a function, not a person.
const ROLE_MAILBOXES: &[&str] = &[
    "admin",
    "administrator",
    "billing",
    "contact",
    "enquiries",
    "help",
    "hr",
    "info",
    "jobs",
    "kefu",
    "mail",
    "marketing",
    "noreply",
    "no-reply",
    "office",
    "postmaster",
    "press",
    "sales",
    "service",
    "support",
    "webmaster",
];

static DISPOSABLE: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| mailchecker::blacklist().into_iter().collect());

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
    #[error("the domain is not a valid internationalized domain name")]
    BadIdn,
}

impl EmailError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAt => "email.missing_at",
            Self::EmptyLocal => "email.empty_local",
            Self::EmptyDomain => "email.empty_domain",
            Self::Syntax(_) => "email.syntax",
            Self::BadIdn => "email.bad_idn",
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
        let domain = if domain.is_ascii() {
            domain
        } else {
            idna::domain_to_ascii(&domain).map_err(|_| EmailError::BadIdn)?
        };
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
        let findings = findings(local, &domain);
        let identity_key = identity_key(local, &domain);
        Ok(Self {
            address,
            identity_key,
            findings,
        })
    }

    /// Typo, disposable and role findings (empty for an ordinary address).
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// A role mailbox: shared, so it must not join people.
    pub fn is_role(&self) -> bool {
        self.findings.contains(&Finding::Role)
    }

    pub fn as_str(&self) -> &str {
        &self.address
    }

    /// The key identity matching uses, separate from the displayed address: case-folded, and
    /// folded the way the provider delivers (Gmail ignores dots and `+tags`; Outlook and most
    /// others ignore `+tags`).
    pub fn identity_key(&self) -> &str {
        &self.identity_key
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

fn findings(local: &str, domain: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    if !COMMON_DOMAINS.contains(&domain)
        && let Some(best) = COMMON_DOMAINS
            .iter()
            .find(|d| strsim::damerau_levenshtein(domain, d) == 1)
    {
        out.push(Finding::TypoSuggested(format!("{local}@{best}")));
    }
    // The domain or any parent of it (x.throwaway.com is as disposable as throwaway.com).
    let mut d = domain;
    loop {
        if DISPOSABLE.contains(d) {
            out.push(Finding::Disposable);
            break;
        }
        match d.split_once('.') {
            Some((_, parent)) if parent.contains('.') => d = parent,
            _ => break,
        }
    }
    let mailbox = local
        .split('+')
        .next()
        .unwrap_or(local)
        .to_ascii_lowercase();
    if ROLE_MAILBOXES.contains(&mailbox.as_str()) {
        out.push(Finding::Role);
    }
    out
}

fn identity_key(local: &str, domain: &str) -> String {
    let local = local.to_lowercase();
    let untagged = local.split('+').next().unwrap_or(&local);
    match domain {
        "gmail.com" | "googlemail.com" => format!("{}@gmail.com", untagged.replace('.', "")),
        "qq.com" | "foxmail.com" | "163.com" | "126.com" => format!("{local}@{domain}"),
        _ if untagged.is_empty() => format!("{local}@{domain}"),
        _ => format!("{untagged}@{domain}"),
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
    fn idn_domains_become_punycode() {
        assert_eq!(
            Email::parse("张三@例子.中国").unwrap().as_str(),
            "张三@xn--fsqu00a.xn--fiqs8s"
        );
        assert_eq!(
            Email::parse("a@Bücher.DE").unwrap().as_str(),
            "a@xn--bcher-kva.de"
        );
    }

    #[test]
    fn findings_flag_without_rewriting() {
        let e = Email::parse("li.lei@qq.con").unwrap();
        assert_eq!(e.as_str(), "li.lei@qq.con");
        assert_eq!(
            e.findings(),
            [Finding::TypoSuggested("li.lei@qq.com".into())]
        );
        assert_eq!(
            Email::parse("x@gmial.com").unwrap().findings()[0].code(),
            "email.typo_suggested"
        );
        assert!(Email::parse("x@163.com").unwrap().findings().is_empty());
        assert_eq!(
            Email::parse("x@mailinator.com").unwrap().findings(),
            [Finding::Disposable]
        );
        assert_eq!(
            Email::parse("x@eu.mailinator.com").unwrap().findings(),
            [Finding::Disposable]
        );
        let role = Email::parse("Sales+cn@company.cn").unwrap();
        assert!(role.is_role());
        assert!(!Email::parse("zhang.san@company.cn").unwrap().is_role());
    }

    #[test]
    fn identity_keys_fold_like_the_provider() {
        let key = |s: &str| Email::parse(s).unwrap().identity_key().to_owned();
        assert_eq!(key("Zhang.San+crm@GMail.com"), "zhangsan@gmail.com");
        assert_eq!(key("zhangsan@googlemail.com"), "zhangsan@gmail.com");
        assert_eq!(key("Li+x@Outlook.com"), "li@outlook.com");
        assert_eq!(key("Li.Lei@qq.com"), "li.lei@qq.com");
        assert_eq!(
            Email::parse("Zhang.San@GMail.com").unwrap().as_str(),
            "Zhang.San@gmail.com",
            "display keeps dots"
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
