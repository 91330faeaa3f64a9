//! The hosts an app's outbound HTTP may reach (`allowed_hosts` in the
//! manifest).
//!
//! Grammar: `name` (that host, any port), `name:port` (that port only),
//! `*.suffix` (any host strictly below `suffix`, any port). IPv6 literals are
//! bracketed: `[::1]`, `[::1]:8080`. Names compare case-insensitively; a
//! trailing dot is ignored.

use std::fmt;

/// One allowed host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: Host,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(String),
    /// `*.suffix`, stored with the leading dot (`.suffix`).
    Below(String),
}

/// Why an `allowed_hosts` entry is not a host pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} is not a host pattern ({reason}); use name, name:port, *.suffix or [ipv6]")]
pub struct HostPatternError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl HostPattern {
    /// Parse one entry.
    pub fn parse(entry: &str) -> Result<Self, HostPatternError> {
        let err = |reason| HostPatternError { entry: entry.to_owned(), reason };
        if entry.contains('/') {
            return Err(err("a host, not a URL"));
        }
        let (host, port) = split_port(entry).ok_or_else(|| err("bad port"))?;
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let name = normalise(name);
        if name.is_empty() {
            return Err(err("empty host"));
        }
        if name.starts_with('[') {
            let inner = name.trim_start_matches('[').trim_end_matches(']');
            if wildcard || !name.ends_with(']') || inner.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("bad IPv6 literal"));
            }
        } else if !name.split('.').all(is_label) {
            return Err(err("not a DNS name or IPv4 address"));
        }
        let host = if wildcard { Host::Below(format!(".{name}")) } else { Host::Exact(name) };
        Ok(Self { host, port })
    }

    /// Whether a request to `host:port` fits this pattern. `host` is the
    /// request URI's host (IPv6 in brackets, as `http::Uri::host` gives it).
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = normalise(host);
        match &self.host {
            Host::Exact(name) => host == *name,
            Host::Below(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Exact(name) => f.write_str(name)?,
            Host::Below(suffix) => write!(f, "*{suffix}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// `host[:port]`, where an IPv6 host is bracketed. `None` for a bad port.
fn split_port(entry: &str) -> Option<(&str, Option<u16>)> {
    let colon = match entry.rfind(']') {
        Some(close) => entry[close..].find(':').map(|i| close + i),
        None => entry.find(':'),
    };
    match colon {
        None => Some((entry, None)),
        Some(i) => entry[i + 1..].parse::<u16>().ok().filter(|p| *p != 0).map(|p| (&entry[..i], Some(p))),
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn exact_names_match_any_port_and_ignore_case() {
        assert!(p("api.example.com").matches("API.example.com", 443));
        assert!(p("api.example.com").matches("api.example.com.", 8080));
        assert!(!p("api.example.com").matches("x.api.example.com", 443));
        assert!(!p("api.example.com").matches("example.com", 443));
    }

    #[test]
    fn wildcards_match_strictly_below_the_suffix() {
        let w = p("*.example.com");
        assert!(w.matches("a.example.com", 443));
        assert!(w.matches("a.b.example.com", 443));
        assert!(!w.matches("example.com", 443));
        assert!(!w.matches("badexample.com", 443));
        assert_eq!(w.to_string(), "*.example.com");
    }

    #[test]
    fn ports_and_ip_literals() {
        assert!(p("127.0.0.1:8080").matches("127.0.0.1", 8080));
        assert!(!p("127.0.0.1:8080").matches("127.0.0.1", 8081));
        assert!(p("[::1]").matches("[::1]", 1));
        assert!(p("[::1]:99").matches("[::1]", 99));
        assert_eq!(p("[::1]:99").to_string(), "[::1]:99");
    }

    #[test]
    fn bad_entries_are_refused_with_a_reason() {
        for (entry, reason) in [
            ("", "empty host"),
            ("*.", "empty host"),
            ("a b", "not a DNS name or IPv4 address"),
            ("http://x", "a host, not a URL"),
            ("x.com/path", "a host, not a URL"),
            ("x:0", "bad port"),
            ("x:70000", "bad port"),
            ("*.[::1]", "bad IPv6 literal"),
            ("[zz]", "bad IPv6 literal"),
            ("-x.com", "not a DNS name or IPv4 address"),
            ("a..b", "not a DNS name or IPv4 address"),
            ("*", "not a DNS name or IPv4 address"),
        ] {
            assert_eq!(HostPattern::parse(entry).unwrap_err().reason, reason, "{entry:?}");
        }
    }
}
