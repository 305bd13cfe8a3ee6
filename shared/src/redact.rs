//! Masking the secrets in values that get printed: configuration errors and logs.

/// `value` with every URL password (`scheme://user:password@host` → `user:***@host`)
/// and every `password=` query parameter replaced by `***`. Safe on any value: text
/// that holds no credentials comes back unchanged. Values are split into words at
/// whitespace, commas and quotes (a broker list is comma-separated), and each word is
/// masked on its own:
///
/// - with `://`, whatever follows the first `:` of the user info, up to the last `@`;
/// - without `://` (a mistyped scheme such as `amqp:/user:pw@host`), everything before
///   the last `@` when that part holds a `:`, since where the password starts cannot be
///   told.
pub fn mask_secrets(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut word = String::new();
    for c in value.chars() {
        if c.is_whitespace() || matches!(c, ',' | '"' | '\'') {
            out.push_str(&mask_word(&word));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.push_str(&mask_word(&word));
    out
}

fn mask_word(word: &str) -> String {
    mask_password_param(&mask_userinfo(word))
}

fn mask_userinfo(word: &str) -> String {
    let Some(at) = word.rfind('@') else {
        return word.to_string();
    };
    let (before, after) = word.split_at(at);
    match before.find("://") {
        Some(i) => {
            let start = i + 3;
            match before[start..].find(':') {
                Some(colon) => format!("{}:***{after}", &before[..start + colon]),
                None => word.to_string(),
            }
        }
        None if before.contains(':') => format!("***{after}"),
        None => word.to_string(),
    }
}

fn mask_password_param(word: &str) -> String {
    const KEY: &str = "password=";
    let lower = word.to_ascii_lowercase();
    let mut out = String::with_capacity(word.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let value_start = from + found + KEY.len();
        let value_end = word[value_start..]
            .find(['&', '#', ';'])
            .map_or(word.len(), |e| value_start + e);
        out.push_str(&word[from..value_start]);
        if value_end > value_start {
            out.push_str("***");
        }
        from = value_end;
    }
    out.push_str(&word[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        for (raw, masked) in [
            (
                "amqp://pixmill:s3cret@broker:5672/%2f?heartbeat=10",
                "amqp://pixmill:***@broker:5672/%2f?heartbeat=10",
            ),
            (
                "postgres://app:p@ss/w:rd@db.internal/pixmill",
                "postgres://app:***@db.internal/pixmill",
            ),
            (
                "http://guest:guest@127.0.0.1:15672/api",
                "http://guest:***@127.0.0.1:15672/api",
            ),
            // A broker list: each URL on its own.
            (
                "amqp://a:one@h1/%2f,amqp://b:two@h2/%2f",
                "amqp://a:***@h1/%2f,amqp://b:***@h2/%2f",
            ),
            // A mistyped scheme: the whole user info goes.
            ("amqp:/pixmill:s3cret@broker/%2f", "***@broker/%2f"),
            ("amqp//pixmill:s3cret@broker", "***@broker"),
            // Quoted inside a message.
            (
                "\"amqps//u:s3cret@h\" is not amqp://user:password@host:port/vhost",
                "\"***@h\" is not amqp://user:***@host:port/vhost",
            ),
        ] {
            assert_eq!(mask_secrets(raw), masked, "{raw}");
        }
    }

    #[test]
    fn password_parameters_are_masked() {
        assert_eq!(
            mask_secrets("postgres://db/pixmill?user=app&password=s3cret&sslmode=require"),
            "postgres://db/pixmill?user=app&password=***&sslmode=require"
        );
        assert_eq!(
            mask_secrets("postgres://db/p?PASSWORD=s3cret"),
            "postgres://db/p?PASSWORD=***"
        );
        assert_eq!(
            mask_secrets("postgres://db/p?sslpassword=x&password=y"),
            "postgres://db/p?sslpassword=***&password=***"
        );
    }

    #[test]
    fn values_without_credentials_are_unchanged() {
        for plain in [
            "",
            "8080",
            "127.0.0.1:8080",
            "s3://bucket/prefix",
            "amqp://broker:5672/%2f",
            "file:///var/data/blobs",
            "ops@example.com",
            "must be between 1 and 50",
            "http://host/path?email=a@b",
        ] {
            assert_eq!(mask_secrets(plain), plain);
        }
    }
}
