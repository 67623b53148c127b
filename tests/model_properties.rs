//! The contract these properties pin, over generated inputs rather than chosen
//! cases: host normalisation is idempotent and a name's registrable domain is a
//! suffix of it on a label boundary; an internationalised name round-trips through
//! its Unicode form; an ICP number parses back to itself with the parts it was made
//! of; and no sequence of lifecycle steps takes a filing outside its transition
//! table (a refused step changes nothing, an accepted one was offered).

mod common;

use icpgate::model::filing::{
    Action, Filing, IcpNumber, Status, Submission, TransitionError, PROVINCES,
};
use icpgate::model::host::{Authority, HostName};
use proptest::prelude::*;

/// A DNS label: letters, digits and inner hyphens, sometimes upper-case.
fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,12}[a-zA-Z0-9])?"
}

/// A suffix from the PSL's ICANN and private sections, IDN ones included.
fn suffix() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "com",
        "cn",
        "com.cn",
        "net.cn",
        "org",
        "中国",
        "公司",
        "github.io",
        "co.uk",
        "jp",
        "example",
    ])
}

/// A raw authority as a client might send it: labels, a suffix, maybe a trailing
/// dot, maybe a port.
fn raw_authority() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 0..4),
        suffix(),
        any::<bool>(),
        prop::option::of(1u16..),
    )
        .prop_map(|(labels, suffix, dot, port)| {
            let mut host = labels.join(".");
            if !host.is_empty() {
                host.push('.');
            }
            host.push_str(suffix);
            if dot {
                host.push('.');
            }
            match port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
}

/// A name with CJK labels, which normalise to punycode.
fn unicode_name() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[\u{4e00}-\u{4e50}a-z]{1,6}", 1..3),
        suffix(),
    )
        .prop_map(|(labels, suffix)| format!("{}.{suffix}", labels.join(".")))
}

proptest! {
    #[test]
    fn normalisation_is_idempotent(raw in raw_authority()) {
        if let Ok(Authority::Name(host)) = Authority::parse(&raw) {
            let again = HostName::parse(host.as_str());
            prop_assert_eq!(again.as_ref().map(HostName::as_str), Ok(host.as_str()));
            prop_assert!(matches!(
                Authority::parse(host.as_str()),
                Ok(Authority::Name(h)) if h == host
            ));
        }
    }

    #[test]
    fn the_registrable_domain_is_a_suffix_on_a_label_boundary(raw in raw_authority()) {
        if let Ok(Authority::Name(host)) = Authority::parse(&raw) {
            if let Some(domain) = host.registrable_domain() {
                let (name, domain) = (host.as_str(), domain.as_str());
                prop_assert!(
                    name == domain || name.ends_with(&format!(".{domain}")),
                    "{} is not under {}", name, domain
                );
                // A registrable domain is its own registrable domain.
                let own = HostName::parse(domain).ok().and_then(|h| h.registrable_domain());
                prop_assert_eq!(own.as_ref().map(|d| d.as_str()), Some(domain));
            }
        }
    }

    #[test]
    fn an_idn_round_trips_through_its_unicode_form(name in unicode_name()) {
        if let Ok(host) = HostName::parse(&name) {
            prop_assert!(host.as_str().is_ascii(), "{}", host.as_str());
            let (unicode, result) = idna::domain_to_unicode(host.as_str());
            prop_assert!(result.is_ok());
            let back = HostName::parse(&unicode).map(|h| h.as_str().to_owned());
            prop_assert_eq!(back, Ok(host.as_str().to_owned()));
        }
    }

    #[test]
    fn an_icp_number_parses_back_to_its_parts(
        province in prop::sample::select(PROVINCES.to_vec()),
        entity in "[0-9]{4,10}",
        index in prop::option::of(1u32..10_000),
    ) {
        let suffix = index.map(|n| format!("-{n}")).unwrap_or_default();
        let text = format!("{province}ICP备{entity}号{suffix}");
        let number = IcpNumber::parse(&text);
        prop_assert!(number.is_ok(), "{}: {:?}", text, number);
        let number = number.expect("checked");
        prop_assert_eq!(number.as_str(), text.as_str());
        prop_assert_eq!(number.province(), province);
        prop_assert_eq!(number.entity_number(), entity.as_str());
        prop_assert_eq!(number.website_index(), index);
        prop_assert_eq!(IcpNumber::parse(number.as_str()), Ok(number.clone()));
        prop_assert_eq!(
            IcpNumber::parse(&format!("  {text} ")).map(|n| n.as_str().to_owned()),
            Ok(text.clone())
        );
    }

    #[test]
    fn any_icp_number_that_parses_is_stable(text in "\\PC{0,24}") {
        if let Ok(number) = IcpNumber::parse(&text) {
            prop_assert_eq!(IcpNumber::parse(number.as_str()), Ok(number));
        }
    }

    #[test]
    fn no_sequence_of_steps_leaves_the_transition_table(
        steps in prop::collection::vec((0usize..7, any::<bool>()), 0..24),
        access_existing in any::<bool>(),
    ) {
        let mut filing = submitted(access_existing);
        for (step, (which, approve)) in steps.into_iter().enumerate() {
            let action = action(which, approve);
            let name = action.name();
            let offered = filing.allowed_actions().contains(&name);
            let before = filing.clone();
            match filing.apply(action, "prop", &format!("2024-05-01T08:{:02}:00Z", step % 60)) {
                Ok(()) => {
                    prop_assert!(offered, "{} applied in {} but not offered", name, before.status);
                    prop_assert!(Status::ALL.contains(&filing.status));
                    prop_assert_eq!(filing.history.len(), before.history.len() + 1);
                    if filing.status == Status::Approved {
                        prop_assert!(filing.icp_number.is_some(), "approved without a number");
                    }
                }
                Err(TransitionError::Illegal { .. }) => {
                    prop_assert!(!offered, "{} offered in {} but refused", name, before.status);
                    prop_assert_eq!(&filing, &before, "a refused step changed the filing");
                }
                Err(other) => {
                    prop_assert_eq!(&filing, &before, "a refused step changed the filing: {}", other);
                }
            }
        }
    }
}

/// A freshly submitted filing, new or access-existing (which carries its number).
fn submitted(access_existing: bool) -> Filing {
    let (kind, icp) = if access_existing {
        ("access_existing", Some("浙ICP备12345678号-1"))
    } else {
        ("new", None)
    };
    let body = common::submission(&["example.com.cn"], kind, icp);
    let submission: Submission = serde_json::from_value(body).expect("a valid submission");
    Filing::submit(7, submission, "alice", "2024-05-01T08:00:00Z").expect("submitted")
}

/// One of the seven steps, with a legal payload.
fn action(which: usize, approve: bool) -> Action {
    let number = || IcpNumber::parse("浙ICP备12345678号-1").ok();
    match which {
        0 => Action::InitialReview {
            approve,
            reason: (!approve).then(|| "incomplete".to_owned()),
        },
        1 => Action::AuthorityReview {
            approve,
            icp_number: approve.then(number).flatten(),
            reason: (!approve).then(|| "rejected by the authority".to_owned()),
        },
        2 => Action::Resubmit {
            entity: None,
            website: None,
            product: None,
            icp_number: None,
            filing_password: None,
        },
        3 => Action::Abandon { reason: None },
        4 => Action::Cancel { reason: None },
        5 => Action::Disconnect { reason: None },
        _ => Action::ChangeDetails {
            entity: None,
            website: None,
        },
    }
}
