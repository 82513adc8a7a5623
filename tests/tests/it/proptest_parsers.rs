//! Property tests for every parser of outside input: branch query strings, gRPC metadata,
//! DTM's answers, branch results, branch URLs, table names, identities, xids, URL redaction.
//!
//! Each property runs proptest's default 256 cases in CI; run them long with
//! `PROPTEST_CASES=100000 cargo test --workspace --all-features --test proptest_parsers`.
//! What is checked: no parser panics on any input; what a parser accepts satisfies the rules
//! the stores rely on (identity rules, printable metadata); what the SDK writes it reads back
//! unchanged; two different identities never share a Redis key or an XA xid.

use std::collections::BTreeMap;

use dtmcli::identity::{check_branch_id, check_branch_id_unseparated, check_gid};
use dtmcli::redact::redact_url;
use dtmcli::{Op, TransInfo, TransType};
use proptest::prelude::*;

/// Strings biased towards what breaks parsers: separators, control characters, non-ASCII,
/// percent signs, SQL quotes.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[a-zA-Z0-9_;:/?&=%+\\-\\. \t\r\n\u{0}'\"\\\\é]{0,40}",
        "[0-9\\-]{0,12}",
    ]
}

fn legal_gid() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9_\\-\\.:é ]{0,60}[a-zA-Z0-9]"
}

fn trans_type() -> impl Strategy<Value = TransType> {
    prop_oneof![
        Just(TransType::Saga),
        Just(TransType::Msg),
        Just(TransType::Tcc),
        Just(TransType::Xa),
        Just(TransType::Workflow),
    ]
}

fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

proptest! {
    /// Any query string: no panic; an accepted one has identity values the stores can hold.
    #[test]
    fn query_string_never_panics(q in nasty()) {
        if let Ok(info) = TransInfo::from_query(&q) {
            prop_assert!(check_gid(&info.gid).is_ok());
            prop_assert!(check_branch_id(&info.branch_id).is_ok());
        }
    }

    /// Arbitrary values in each field: accepted only when every rule holds.
    #[test]
    fn query_fields_validated(gid in nasty(), bid in nasty(), op in nasty(), dtm in nasty()) {
        let q = encode(&[("gid", &gid), ("trans_type", "saga"), ("branch_id", &bid), ("op", &op), ("dtm", &dtm)]);
        match TransInfo::from_query(&q) {
            Ok(info) => {
                prop_assert_eq!(&info.gid, &gid);
                prop_assert_eq!(&info.branch_id, &bid);
                prop_assert_eq!(info.op.as_str(), op.as_str());
                prop_assert!(check_gid(&gid).is_ok() && check_branch_id(&bid).is_ok());
                prop_assert!(!dtm.chars().any(char::is_control));
            }
            Err(e) => prop_assert!(matches!(e, dtmcli::Error::InvalidInput(_))),
        }
    }

    /// What the SDK sends to a branch (query pairs) reads back as the same info.
    #[test]
    fn query_round_trip(gid in legal_gid(), tt in trans_type(), bid in "[0-9]{2,8}", op in "[a-z]{1,10}") {
        let mut info = TransInfo::new(gid, tt, bid, Op::parse(&op));
        info.dtm = Some("http://127.0.0.1:36789/api/dtmsvr".into());
        let q = encode(&info.query_pairs());
        prop_assert_eq!(TransInfo::from_query(&q).ok(), Some(info));
    }

    /// gRPC metadata: what is read can be sent on, and what is sent reads back unchanged.
    #[test]
    fn metadata_both_directions(gid in nasty(), bid in nasty(), op in nasty()) {
        let mut md = tonic::metadata::MetadataMap::new();
        for (k, v) in [("dtm-gid", &gid), ("dtm-trans_type", &"tcc".to_string()), ("dtm-branch_id", &bid), ("dtm-op", &op)] {
            if let Ok(v) = tonic::metadata::AsciiMetadataValue::try_from(v.as_str()) {
                md.insert(k, v);
            }
        }
        if let Ok(info) = dtmgrpc::metadata::trans_info_from_metadata(&md) {
            let sent = dtmgrpc::metadata::branch_metadata(&info, &BTreeMap::new());
            prop_assert!(sent.is_ok(), "read but not sendable: {:?}", info);
            let back = dtmgrpc::metadata::trans_info_from_metadata(&sent.unwrap_or_default());
            prop_assert_eq!(back.ok(), Some(info));
        }
    }

    /// DTM's answers: no panic whatever the body.
    #[test]
    fn dtm_answers_never_panic(body in prop_oneof![".*".prop_map(String::into_bytes), proptest::collection::vec(any::<u8>(), 0..200)]) {
        let _ = serde_json::from_slice::<dtmcli::QueryResult>(&body);
        let _ = serde_json::from_slice::<dtmcli::WorkflowProgress>(&body);
        let _ = serde_json::from_slice::<dtmcli::TransRequest>(&body);
    }

    /// Branch results: DTM's rules, in DTM's order, never a panic.
    #[test]
    fn branch_results(status in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..100)) {
        let r = dtmcli::branch::http_result("u", status, &body);
        let text = String::from_utf8_lossy(&body);
        if status == 425 || text.contains("ONGOING") {
            prop_assert!(r.unwrap_err().is_ongoing());
        } else if status == 409 || text.contains("FAILURE") {
            prop_assert!(r.unwrap_err().is_failure());
        } else {
            prop_assert_eq!(r.is_ok(), status == 200);
        }
    }

    /// gRPC branch URLs: no panic; an accepted one splits back into the same text.
    #[test]
    fn grpc_branch_urls(url in prop_oneof![nasty(), "[a-z0-9\\.]{1,10}:[0-9]{1,6}/[a-z]{1,5}\\.[A-Z][a-z]{0,5}/[A-Z][a-z]{0,6}"]) {
        if let Ok(u) = dtmgrpc::parse_branch_url(&url) {
            prop_assert_eq!(u.to_string(), url);
            prop_assert!(!u.address.contains('/') && u.method.starts_with('/'));
        }
    }

    /// Barrier table names: an accepted name is made of identifier characters only, so it
    /// can be spliced into SQL.
    #[test]
    fn table_names(name in nasty()) {
        if dtm_barrier::TableName::new(&name).is_ok() {
            prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.')));
        }
    }

    /// Identities joined with `-` (Redis keys, XA xids) never collide: two accepted pairs
    /// with the same joined text are the same pair.
    #[test]
    fn joined_identities_are_injective(
        g1 in "[a-z0-9\\-]{1,8}", b1 in "[0-9\\-]{1,6}",
        g2 in "[a-z0-9\\-]{1,8}", b2 in "[0-9\\-]{1,6}",
    ) {
        let ok = |g: &str, b: &str| check_gid(g).is_ok() && check_branch_id_unseparated(b).is_ok();
        if ok(&g1, &b1) && ok(&g2, &b2) && format!("{g1}-{b1}") == format!("{g2}-{b2}") {
            prop_assert_eq!((g1, b1), (g2, b2));
        }
    }

    /// The XA xid builder: no panic; an accepted xid is `<gid>-<branch>` and safe to quote.
    #[test]
    fn xids(gid in nasty(), bid in nasty()) {
        let info = TransInfo::new(gid.clone(), TransType::Xa, bid.clone(), Op::Action);
        if let Ok(xid) = dtm_barrier::xa::xid(&info) {
            prop_assert_eq!(xid.clone(), format!("{gid}-{bid}"));
            prop_assert!(!xid.contains('\'') && !xid.contains('\\') && xid.len() <= 64);
        }
    }

    /// Redaction: no panic; a password in the authority never survives.
    #[test]
    fn redaction(scheme in "(https?://)?", user in "[a-z]{0,6}", pw in "[A-Za-z0-9]{8,16}", host in "[a-z]{1,8}(:[0-9]{1,5})?", path in "(/[a-z@:]{0,8}){0,3}") {
        let url = format!("{scheme}{user}:{pw}@{host}{path}");
        let red = redact_url(&url);
        prop_assert!(!red.contains(&format!(":{pw}@")), "{}", red);
        prop_assert!(red.contains(&host));
    }

    /// Redaction of anything: no panic, and text without `@` is unchanged.
    #[test]
    fn redaction_never_panics(s in nasty()) {
        let red = redact_url(&s);
        if !s.contains('@') {
            prop_assert_eq!(red.as_ref(), s.as_str());
        }
    }
}
