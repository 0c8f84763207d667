//! Masking personal data for people who need to see that a value is there and roughly what it
//! looks like, not the value: `138****8000`, `z***@example.com`, `王*`. The console's lists of
//! rejected leads hold only masked values.

/// A phone number with the four digits before its last four starred, in the format it was
/// written in (`+86138****8000`, `138 **** 8000`); a number of fewer than nine digits keeps only
/// its first and last character.
pub fn phone(text: &str) -> String {
    let text = text.trim();
    let digits = text.chars().filter(char::is_ascii_digit).count();
    if digits < 9 {
        return other(text);
    }
    let mut seen = 0;
    text.chars()
        .map(|c| {
            if !c.is_ascii_digit() {
                return c;
            }
            seen += 1;
            if seen > digits - 8 && seen <= digits - 4 {
                '*'
            } else {
                c
            }
        })
        .collect()
}

/// An email address: the local part's first character, then `***`, then the domain
/// (`z***@example.com`).
pub fn email(text: &str) -> String {
    let text = text.trim();
    match text.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        _ => other(text),
    }
}

/// Any other text: its first character, stars for the rest (at most eight of them), and its last
/// character when it has more than four (`王*`, `张**`, `S***8`, `北*****3`).
pub fn other(text: &str) -> String {
    let chars: Vec<char> = text.trim().chars().collect();
    match chars.len() {
        0 => String::new(),
        1 => "*".into(),
        n @ 2..=4 => {
            let mut out = chars[0].to_string();
            out.push_str(&"*".repeat(n - 1));
            out
        }
        n => {
            let mut out = chars[0].to_string();
            out.push_str(&"*".repeat((n - 2).min(8)));
            out.push(chars[n - 1]);
            out
        }
    }
}

/// A value of unknown meaning (a raw form field): as an address when it has an `@`, as a phone
/// number when it is mostly digits, as text otherwise.
pub fn guess(text: &str) -> String {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let others = text
        .chars()
        .filter(|c| !c.is_ascii_digit() && !" +-().".contains(*c))
        .count();
    if text.contains('@') {
        email(text)
    } else if digits >= 7 && others == 0 {
        phone(text)
    } else {
        other(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_shape_and_never_the_value() {
        assert_eq!(phone("+8613800138000"), "+86138****8000");
        assert_eq!(phone("13800138000"), "138****8000");
        assert_eq!(phone("12345"), "1***5");
        assert_eq!(email("Zhang.San@Example.COM"), "Z***@Example.COM");
        assert_eq!(email("@example.com"), "@********m");
        assert_eq!(other("王芳"), "王*");
        assert_eq!(other("欧阳娜娜"), "欧***");
        assert_eq!(other("北京市朝阳区建国路 88 号"), "北********号");
        assert_eq!(other(""), "");
        assert_eq!(other("x"), "*");
        assert_eq!(guess("138 0013 8000"), "138 **** 8000");
        assert_eq!(guess("+86 139-1111-2222"), "+86 139-****-2222");
        assert_eq!(guess("wang@corp.cn"), "w***@corp.cn");
        assert_eq!(guess("张三"), "张*");
        assert_eq!(guess("5000"), "5***");
        // A phone number's four digits before its last four never survive, in any format.
        for text in [
            "13911115678",
            "+86 139 1111 5678",
            "+86-139-1111-5678",
            "(0755) 1111 5678",
        ] {
            let digits: String = guess(text).chars().filter(char::is_ascii_digit).collect();
            assert!(!digits.contains("1111"), "{text} -> {}", guess(text));
            assert!(digits.ends_with("5678"), "{text}");
        }
    }
}
