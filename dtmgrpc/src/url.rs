//! gRPC branch addresses: `"<host:port>/<package>.<Service>/<Method>"` (dtm-protocol.md §3.3).

use dtmcli::{Error, Result};

/// A parsed gRPC branch URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BranchUrl {
    /// The branch service's address, what to dial: everything before the first `/`
    /// (`localhost:58081`).
    pub address: String,
    /// The method path, leading `/` included (`/busi.Busi/TransIn`).
    pub method: String,
}

impl std::fmt::Display for BranchUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.address, self.method)
    }
}

/// Splits a gRPC branch URL as DTM's default driver does: at the first `/`, the part before
/// it is the dial target and the rest (with its `/`) the method path.
///
/// Errors ([`Error::InvalidInput`]): a URL with a scheme (`://`; DTM needs a service-discovery
/// driver for those, and `http(s)://` branches are called over HTTP, not parsed here), no
/// `/`, an empty target, a target that is not `host:port`, or a method path that is not
/// `/<package.Service>/<Method>`.
///
/// ```
/// let u = dtmgrpc::parse_branch_url("localhost:58081/busi.Busi/TransIn").unwrap();
/// assert_eq!((u.address.as_str(), u.method.as_str()), ("localhost:58081", "/busi.Busi/TransIn"));
/// assert!(dtmgrpc::parse_branch_url("localhost:58081").is_err());
/// ```
pub fn parse_branch_url(url: &str) -> Result<BranchUrl> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "bad gRPC branch url {:?}: {why}",
            dtmcli::redact::redact_url(url)
        )))
    };
    if url.contains("://") {
        return bad(
            "a scheme needs a DTM service-discovery driver; use host:port/package.Service/Method",
        );
    }
    let Some(slash) = url.find('/') else {
        return bad("no '/' found; expected host:port/package.Service/Method");
    };
    let (target, method) = url.split_at(slash);
    if target.is_empty() {
        return bad("empty host:port before the method");
    }
    let port_ok = target
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok || target.chars().any(|c| c.is_whitespace() || c == '@') {
        return bad("the target must be host:port");
    }
    let mut parts = method[1..].split('/');
    let service = parts.next().unwrap_or("");
    let name = parts.next().unwrap_or("");
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    if parts.next().is_some() || !valid(service) || !valid(name) || name.contains('.') {
        return bad("the method must be /package.Service/Method");
    }
    Ok(BranchUrl {
        address: target.to_string(),
        method: method.to_string(),
    })
}

/// True when DTM calls this branch URL over HTTP even inside a gRPC transaction.
pub(crate) fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Checks a branch URL of a gRPC transaction: empty (an immediate success), `http(s)://`,
/// or a valid gRPC branch URL.
pub(crate) fn check_branch_url(url: &str) -> Result<()> {
    if url.is_empty() || is_http(url) {
        return Ok(());
    }
    parse_branch_url(url).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_first_slash() {
        let u = parse_branch_url("127.0.0.1:58081/busi.Busi/TransOut").unwrap();
        assert_eq!(u.address, "127.0.0.1:58081");
        assert_eq!(u.method, "/busi.Busi/TransOut");
        assert_eq!(u.to_string(), "127.0.0.1:58081/busi.Busi/TransOut");
        let u = parse_branch_url("[::1]:9/a.b.C/D").unwrap();
        assert_eq!(u.address, "[::1]:9");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "localhost:58081",
            "/busi.Busi/TransIn",
            "discov://busi/busi.Busi/TransIn",
            "http://h:1/busi.Busi/TransIn",
            "localhost/busi.Busi/TransIn",
            "localhost:abc/busi.Busi/TransIn",
            "localhost:1/",
            "localhost:1/busi.Busi",
            "localhost:1/busi.Busi/",
            "localhost:1/busi.Busi/Trans/In",
            "localhost:1/busi Busi/TransIn",
            "user@localhost:1/busi.Busi/TransIn",
        ] {
            let e = parse_branch_url(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{bad}: {e}");
        }
        assert!(check_branch_url("").is_ok());
        assert!(check_branch_url("http://h/x").is_ok());
        assert!(check_branch_url("h:1/x").is_err());
    }
}
