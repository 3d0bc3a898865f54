//! Secrets out of printed URLs: the one function every log line, `doctor` finding,
//! stored `last_error` and delivery alert passes a URL (or a text that may quote one,
//! such as a reqwest error) through before a person sees it.
//!
//! What goes: a `user:password@`, every query value (`?key=…`, `?token=…`), a
//! fragment, a Telegram `bot<token>` path segment, and path segments that look like
//! tokens (long runs of letters and digits, as in Slack or Discord hook URLs). What
//! stays: scheme, host, port and the plain path, which is what a person needs to
//! recognise the receiver.

/// `text` with every `http://` or `https://` URL in it redacted. Pure.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_scheme(rest) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(tail.len());
        // A URL quoted in prose may end with punctuation that is not part of it.
        let mut url = &tail[..end];
        while let Some(stripped) = url.strip_suffix([')', ']', ',', '.', ';', ':', '!']) {
            url = stripped;
        }
        out.push_str(&redact_url(url));
        rest = &tail[url.len()..];
    }
    out.push_str(rest);
    out
}

fn find_scheme(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One URL, redacted. Pure.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return redact_unparsed(url);
    };
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_password(None);
        let _ = u.set_username("***");
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if v.is_empty() {
                    String::new()
                } else {
                    "***".into()
                };
                (k.into_owned(), v)
            })
            .collect();
        if pairs.is_empty() {
            u.set_query(None);
        } else {
            let q: Vec<String> = pairs
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            u.set_query(Some(&q.join("&")));
        }
    }
    if u.fragment().is_some() {
        u.set_fragment(Some("***"));
    }
    let segments: Option<Vec<String>> = u
        .path_segments()
        .map(|s| s.map(|seg| redact_segment(seg).into_owned()).collect());
    if let Some(segments) = segments {
        u.set_path(&segments.join("/"));
    }
    u.to_string()
}

/// A path segment: `bot<token>` (Telegram) keeps `bot`, a token-like one goes whole.
fn redact_segment(seg: &str) -> std::borrow::Cow<'_, str> {
    if let Some(token) = seg.strip_prefix("bot") {
        if token.contains(':')
            && token
                .split(':')
                .next()
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        {
            return "bot***".into();
        }
    }
    if looks_like_token(seg) {
        "***".into()
    } else {
        seg.into()
    }
}

/// At least 20 characters of letters, digits, `-` and `_` with both letters and
/// digits in it: a key, not a word a person chose for a path.
fn looks_like_token(s: &str) -> bool {
    s.len() >= 20
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// A URL the parser refused: cut what may hold a secret by hand.
fn redact_unparsed(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let path = match path.find(['?', '#']) {
        Some(i) => format!("{}?***", &path[..i]),
        None => path.to_string(),
    };
    let path: Vec<String> = path
        .split('/')
        .map(|s| redact_segment(s).into_owned())
        .collect();
    let prefix = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{prefix}{authority}{}", path.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_queries_and_tokens_go() {
        assert_eq!(
            redact_url("https://user:s3cret@hooks.example.org/alerts?key=abc123&x=1"),
            "https://***@hooks.example.org/alerts?key=***&x=***"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000/alerts"),
            "http://127.0.0.1:9000/alerts"
        );
        assert_eq!(
            redact_url("https://api.telegram.org/bot123456:ABC-def_ghi/SendMessage"),
            "https://api.telegram.org/bot***/SendMessage"
        );
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0001/B0002/aB3dE5gH7jK9mN1pQ3sT5vX7"),
            "https://hooks.slack.com/services/T0001/B0002/***"
        );
        assert_eq!(
            redact_url("https://x.example/a#access_token=zzz"),
            "https://x.example/a#***"
        );
    }

    #[test]
    fn urls_inside_texts_are_found() {
        let e = "error sending request for url (https://u:pw@h.example/p?token=t0k): connection refused";
        assert_eq!(
            redact_urls(e),
            "error sending request for url (https://***@h.example/p?token=***): connection refused"
        );
        let two = "http://a:b@one.example and HTTPS://two.example/?k=v.";
        assert_eq!(
            redact_urls(two),
            "http://***@one.example/ and https://two.example/?k=***."
        );
        assert_eq!(redact_urls("no url here"), "no url here");
        // Not parseable as a URL: still cut by hand.
        assert_eq!(
            redact_urls("http://u:p@[bad/x?k=v"),
            "http://***@[bad/x?***"
        );
    }
}
