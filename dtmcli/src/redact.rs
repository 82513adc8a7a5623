//! Keeping credentials out of errors, `Debug` output and spans.
//!
//! A DTM or branch URL may carry `user:password@` in its authority (basic auth through a
//! proxy, a gRPC target behind an authenticating gateway). Everything the SDK prints about a
//! URL goes through [`redact_url`] first.

use std::borrow::Cow;

/// `url` with any `user:password@` of its authority replaced by `***@`. Works on full URLs
/// (`https://u:p@host/path`) and on gRPC targets without a scheme (`u:p@host:port/pkg.Svc/M`).
pub fn redact_url(url: &str) -> Cow<'_, str> {
    // A scheme only counts when it is one (`://` later in a path is not a scheme).
    let start = url
        .find("://")
        .filter(|&i| {
            i > 0
                && url[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        })
        .map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => Cow::Owned(format!("{}***{}", &url[..start], &rest[at..])),
        None => Cow::Borrowed(url),
    }
}

/// `text` (a message from another library) with [`redact_url`] applied to every word that
/// contains `://`, quotes and brackets around it kept.
pub fn redact_urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if word.contains("://") {
            let inner =
                word.trim_matches(|c: char| matches!(c, '"' | '\'' | '(' | ')' | '<' | '>' | ','));
            let at = word.find(inner).unwrap_or(0);
            out.push_str(&word[..at]);
            out.push_str(&redact_url(inner));
            out.push_str(&word[at + inner.len()..]);
        } else {
            out.push_str(word);
        }
    }
    out
}

/// What is wrong with a JSON text or value, without quoting it: serde's messages repeat the
/// offending value, and an input, a record or a branch's params may carry a secret into an
/// error or a log. The category, and where in a text.
#[doc(hidden)]
pub fn json_error(e: &serde_json::Error) -> String {
    match e.line() {
        0 => format!("{:?} error", e.classify()),
        line => format!(
            "{:?} error at line {line} column {}",
            e.classify(),
            e.column()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_url, redact_urls_in};

    #[test]
    fn redacts_every_url_in_a_message() {
        assert_eq!(
            redact_urls_in("retry 3 of \"http://u:pw@h/x\" failed (https://a:b@c)"),
            "retry 3 of \"http://***@h/x\" failed (https://***@c)"
        );
        assert_eq!(redact_urls_in("no url here"), "no url here");
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(
            redact_url("http://u:s3cret@h:1/api/dtmsvr?x=1"),
            "http://***@h:1/api/dtmsvr?x=1"
        );
        assert_eq!(redact_url("u:s3cret@h:1/busi.B/M"), "***@h:1/busi.B/M");
        assert_eq!(redact_url("https://a@b:c@h"), "https://***@h");
        assert_eq!(redact_url("http://h:1/p@x"), "http://h:1/p@x");
        assert_eq!(redact_url("h:1"), "h:1");
        assert_eq!(redact_url("u:pw@a/://"), "***@a/://");
        assert_eq!(redact_url(""), "");
    }
}
