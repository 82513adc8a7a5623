//! Which DTM servers a branch-side helper agrees to call.
//!
//! A branch request may name a DTM server (`dtm=` in the query, `dtm-dtm` in gRPC metadata):
//! the SDK that called a TCC try or an XA action puts its server there, so that nested TCC
//! branches and XA branches register with the right one. The Go SDK calls whatever server
//! the request names, so anyone who can reach a branch can make the service send requests
//! (with the branch's headers) to an address of their choosing.
//!
//! Here a client only switches to a server its [`TrustedServers`] accepts; a request naming
//! another one is refused with [`Error::InvalidInput`] before anything is sent. The check
//! lives inside [`crate::DtmClient::with_server`], the one way the branch-side helpers (nested
//! [`crate::Tcc::nested`], the barrier crate's XA registration) reach a named server, so
//! none of them can skip it. Set the list with [`crate::DtmClientBuilder::trusted_servers`]. The default,
//! [`TrustedServers::Own`], accepts just the server the client was built for: in a
//! single-server deployment every legitimate request names that one (or none). List every
//! member of a DTM cluster with [`TrustedServers::List`] (the same server under another name,
//! `localhost` against `127.0.0.1`, also needs listing); [`TrustedServers::Any`] restores the
//! Go SDK's behaviour.

use crate::error::{Error, Result};
use crate::redact::redact_url;

/// The DTM servers a client accepts when a branch request names one (see the
/// [module docs](self)).
///
/// Its `Debug` output shows the listed servers without credentials.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustedServers {
    /// Only the server the client was built for (the default).
    #[default]
    Own,
    /// The client's own server and these (compared after the same normalisation as the
    /// client's own address: trailing `/` removed).
    List(Vec<String>),
    /// Any server a request names: the Go SDK's behaviour. Only for services that no
    /// untrusted party can reach.
    Any,
}

impl std::fmt::Debug for TrustedServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustedServers::Own => f.write_str("Own"),
            TrustedServers::List(list) => f
                .debug_tuple("List")
                .field(&list.iter().map(|s| redact_url(s)).collect::<Vec<_>>())
                .finish(),
            TrustedServers::Any => f.write_str("Any"),
        }
    }
}

impl TrustedServers {
    /// Trusts these servers besides the client's own.
    pub fn list<I, S>(servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TrustedServers::List(servers.into_iter().map(Into::into).collect())
    }

    /// Ok when `named` (already normalised by the caller) is `own` or trusted.
    pub fn check(&self, own: &str, named: &str, normalize: impl Fn(&str) -> String) -> Result<()> {
        let trusted = named == own
            || match self {
                TrustedServers::Own => false,
                TrustedServers::List(list) => list.iter().any(|s| normalize(s) == named),
                TrustedServers::Any => true,
            };
        if trusted {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "the request names DTM server {:?}, which this service does not trust (trusted: {}); list it with TrustedServers::List",
                redact_url(named),
                self.describe(own)
            )))
        }
    }

    fn describe(&self, own: &str) -> String {
        let mut v = vec![redact_url(own).into_owned()];
        if let TrustedServers::List(list) = self {
            v.extend(list.iter().map(|s| redact_url(s).into_owned()));
        }
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.trim_end_matches('/').to_string()
    }

    #[test]
    fn own_list_any() {
        let own = "http://dtm:36789/api/dtmsvr";
        assert!(TrustedServers::Own.check(own, own, norm).is_ok());
        let e = TrustedServers::Own
            .check(own, "http://u:pw@evil:1/api", norm)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)));
        assert!(!e.to_string().contains("pw"), "{e}");
        let list = TrustedServers::list(["http://dtm2:36789/api/dtmsvr/"]);
        assert!(list
            .check(own, "http://dtm2:36789/api/dtmsvr", norm)
            .is_ok());
        assert!(list
            .check(own, "http://dtm3:36789/api/dtmsvr", norm)
            .is_err());
        assert!(TrustedServers::Any.check(own, "http://x", norm).is_ok());
        let dbg = format!("{:?}", TrustedServers::list(["http://u:pw@h:1/api"]));
        assert_eq!(dbg, r#"List(["http://***@h:1/api"])"#);
    }
}
