//! The lifecycle contract: every (status × action) pair against an expected table,
//! history on every step, refusals leave the filing untouched, serde shape.

use super::*;

const T0: &str = "2024-05-01T08:00:00Z";
const T1: &str = "2024-05-02T09:30:00Z";

fn number(s: &str) -> IcpNumber {
    IcpNumber::parse(s).unwrap()
}

use super::details::tests::{entity, website};

fn submission(kind: Kind) -> Submission {
    Submission {
        kind,
        product: Product::Storefront,
        domains: vec!["example.com.cn".into(), "xn--fsqu00a.xn--fiqs8s".into()],
        icp_number: (kind == Kind::AccessExisting).then(|| number("浙ICP备12345678号-1")),
        entity: entity(),
        website: website(),
        filing_password: (kind == Kind::AccessExisting)
            .then(|| FilingPassword::new("pw-123456".into()).unwrap()),
    }
}

/// A filing of `kind` in `status`, with an ICP number wherever that status needs one.
fn filing_in(kind: Kind, status: Status) -> Filing {
    let mut f = Filing::submit(7, submission(kind), "alice", T0).unwrap();
    f.status = status;
    if status != Status::InitialReview && f.icp_number.is_none() {
        let approved_once = matches!(
            status,
            Status::Approved | Status::Cancelled | Status::Disconnected
        );
        f.icp_number = approved_once.then(|| number("浙ICP备12345678号-1"));
    }
    f
}

/// A legal-payload sample of every action, in `Action::NAMES` order.
fn sample_actions() -> Vec<Action> {
    vec![
        Action::InitialReview {
            approve: true,
            reason: None,
        },
        Action::AuthorityReview {
            approve: true,
            icp_number: Some(number("浙ICP备12345678号-1")),
            reason: None,
        },
        Action::Resubmit {
            entity: None,
            website: None,
            product: None,
            icp_number: None,
            filing_password: None,
        },
        Action::Abandon { reason: None },
        Action::Cancel { reason: None },
        Action::Disconnect { reason: None },
        Action::ChangeDetails {
            entity: Some(entity()),
            website: None,
        },
    ]
}

#[test]
fn action_names_match_samples() {
    let names: Vec<_> = sample_actions().iter().map(Action::name).collect();
    assert_eq!(names, Action::NAMES);
}

/// The full (status × action) matrix: resulting status, or "-" when refused as illegal.
#[test]
fn transition_matrix() {
    #[rustfmt::skip]
    let expected: [(Status, [&str; 7]); 7] = [
        //                         initial-review      authority-review resubmit          abandon      cancel       disconnect      change
        (Status::InitialReview,   ["authority_review", "-",             "-",              "abandoned", "-",         "-",            "initial_review"]),
        (Status::AuthorityReview, ["-",                "approved",      "-",              "abandoned", "-",         "-",            "authority_review"]),
        (Status::Approved,        ["-",                "-",             "-",              "abandoned", "cancelled", "disconnected", "approved"]),
        (Status::Rejected,        ["-",                "-",             "initial_review", "abandoned", "-",         "-",            "rejected"]),
        (Status::Abandoned,       ["-",                "-",             "-",              "-",         "cancelled", "-",            "-"]),
        (Status::Cancelled,       ["-",                "-",             "-",              "-",         "-",         "-",            "-"]),
        (Status::Disconnected,    ["-",                "-",             "-",              "-",         "cancelled", "-",            "-"]),
    ];
    assert_eq!(expected.map(|(s, _)| s), Status::ALL);
    for kind in [Kind::New, Kind::AccessExisting] {
        for (status, row) in expected {
            for (action, want) in sample_actions().into_iter().zip(row) {
                let name = action.name();
                let mut f = filing_in(kind, status);
                let before = f.clone();
                let got = match f.apply(action, "bob", T1) {
                    Ok(()) => f.status.as_str().to_owned(),
                    Err(TransitionError::Illegal { .. }) => "-".to_owned(),
                    Err(e) => panic!("{kind:?} {status} {name}: unexpected {e}"),
                };
                assert_eq!(got, want, "{kind:?} {status} {name}");
                if want == "-" {
                    assert_eq!(f, before, "refused {name} changed the filing");
                }
            }
            let allowed: Vec<&str> = Action::NAMES
                .into_iter()
                .zip(row)
                .filter(|(_, to)| *to != "-")
                .map(|(name, _)| name)
                .collect();
            assert_eq!(filing_in(kind, status).allowed_actions(), allowed);
        }
    }
}

#[test]
fn illegal_message_names_allowed_steps() {
    let mut f = filing_in(Kind::New, Status::Rejected);
    let err = f
        .apply(Action::Cancel { reason: None }, "bob", T1)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot cancel a filing in status rejected; allowed next steps: resubmit, abandon, change"
    );
    let mut f = filing_in(Kind::New, Status::Cancelled);
    let err = f
        .apply(Action::Abandon { reason: None }, "bob", T1)
        .unwrap_err();
    assert!(
        err.to_string().contains("none (cancelled is final)"),
        "{err}"
    );
}

#[test]
fn submission_records_history() {
    let f = Filing::submit(1, submission(Kind::New), " alice ", T0).unwrap();
    assert_eq!(f.status, Status::InitialReview);
    assert_eq!((f.created_at.as_str(), f.updated_at.as_str()), (T0, T0));
    assert_eq!(
        f.history,
        vec![HistoryEntry {
            at: T0.into(),
            actor: "alice".into(),
            from: None,
            to: Status::InitialReview,
            reason: None,
        }]
    );
}

#[test]
fn submission_is_validated() {
    let cases: Vec<(&str, Submission, TransitionError)> = vec![
        // a new filing gets its number on approval
        (
            "new with number",
            Submission {
                icp_number: Some(number("浙ICP备12345678号")),
                ..submission(Kind::New)
            },
            TransitionError::IcpNumberOnNewFiling,
        ),
        // access-existing must name the existing number
        (
            "access without number",
            Submission {
                icp_number: None,
                ..submission(Kind::AccessExisting)
            },
            TransitionError::AccessExistingRequiresIcpNumber,
        ),
        // ... and carry its filing password; a new filing has none
        (
            "access without password",
            Submission {
                filing_password: None,
                ..submission(Kind::AccessExisting)
            },
            TransitionError::FilingPasswordRequired,
        ),
        (
            "new with password",
            Submission {
                filing_password: FilingPassword::new("pw-123456".into()).ok(),
                ..submission(Kind::New)
            },
            TransitionError::FilingPasswordOnNewFiling,
        ),
        // the number is the entity's province's, and names a website
        (
            "access with another province's number",
            Submission {
                icp_number: Some(number("京ICP备12345678号-1")),
                ..submission(Kind::AccessExisting)
            },
            TransitionError::IcpNumberProvince {
                number: number("京ICP备12345678号-1"),
                province: "浙".into(),
            },
        ),
        (
            "access with an entity number",
            Submission {
                icp_number: Some(number("浙ICP备12345678号")),
                ..submission(Kind::AccessExisting)
            },
            TransitionError::IcpNumberWithoutWebsite(number("浙ICP备12345678号")),
        ),
        // no domains, an empty one, a duplicate
        (
            "no domains",
            Submission {
                domains: vec![],
                ..submission(Kind::New)
            },
            TransitionError::DomainsRequired,
        ),
        (
            "empty domain",
            Submission {
                domains: vec![" ".into()],
                ..submission(Kind::New)
            },
            TransitionError::EmptyDomain,
        ),
        (
            "duplicate domain",
            Submission {
                domains: vec!["a.cn".into(), "a.cn".into()],
                ..submission(Kind::New)
            },
            TransitionError::DuplicateDomain("a.cn".into()),
        ),
        // a filing names registrable domains, never a subdomain of one
        (
            "subdomain",
            Submission {
                domains: vec!["www.a.cn".into()],
                ..submission(Kind::New)
            },
            TransitionError::NotRegistrable {
                domain: "www.a.cn".into(),
                file: "a.cn".into(),
            },
        ),
        // details are validated
        (
            "bad entity",
            Submission {
                entity: Entity::default(),
                ..submission(Kind::New)
            },
            TransitionError::Detail(DetailError::Empty {
                field: "entity.name",
            }),
        ),
    ];
    for (name, s, want) in cases {
        assert_eq!(Filing::submit(1, s, "alice", T0), Err(want), "{name}");
    }
    assert_eq!(
        Filing::submit(1, submission(Kind::New), " ", T0),
        Err(TransitionError::ActorRequired)
    );
}

/// Walk the happy path and a rejection loop; every step leaves one history entry.
#[test]
fn history_records_every_step() {
    let mut f = Filing::submit(1, submission(Kind::New), "alice", T0).unwrap();
    let steps = vec![
        (
            Action::InitialReview {
                approve: false,
                reason: Some(" 网站名称不符 ".into()),
            },
            "reviewer",
            Status::Rejected,
            Some("网站名称不符"),
        ),
        (
            Action::Resubmit {
                entity: None,
                website: Some(Website {
                    name: "新名称".into(),
                    owner: None,
                }),
                product: Some(Product::CorporateSite),
                icp_number: None,
                filing_password: None,
            },
            "alice",
            Status::InitialReview,
            None,
        ),
        (
            Action::InitialReview {
                approve: true,
                reason: None,
            },
            "reviewer",
            Status::AuthorityReview,
            None,
        ),
        (
            Action::AuthorityReview {
                approve: true,
                icp_number: Some(number("浙ICP备12345678号-2")),
                reason: None,
            },
            "authority",
            Status::Approved,
            None,
        ),
        (
            Action::ChangeDetails {
                entity: None,
                website: Some(website()),
            },
            "alice",
            Status::Approved,
            Some("changed website"),
        ),
        (
            Action::Disconnect {
                reason: Some("moved".into()),
            },
            "ops",
            Status::Disconnected,
            Some("moved"),
        ),
    ];
    for (i, (action, actor, to, reason)) in steps.into_iter().enumerate() {
        let from = f.status;
        let at = format!("2024-05-0{}T00:00:00Z", i + 2);
        f.apply(action, actor, &at).unwrap();
        let last = f.history.last().unwrap();
        let want = HistoryEntry {
            at: at.clone(),
            actor: actor.into(),
            from: Some(from),
            to,
            reason: reason.map(str::to_owned),
        };
        assert_eq!(last, &want, "step {i}");
        assert_eq!(f.history.len(), i + 2);
        assert_eq!((f.status, f.updated_at.as_str()), (to, at.as_str()));
        assert_eq!(f.created_at, T0);
    }
    assert_eq!(f.product, Product::CorporateSite);
    assert_eq!(f.website, website());
    assert_eq!(f.icp_number, Some(number("浙ICP备12345678号-2")));
}

/// Refused steps with legal names (payload errors) leave the filing untouched.
#[test]
fn failed_apply_leaves_filing_unchanged() {
    use Status::*;
    let bad_website = Website {
        name: String::new(),
        owner: None,
    };
    let cases: Vec<(Kind, Status, Action, &str, TransitionError)> = vec![
        // rejection without a reason (blank counts as none)
        (
            Kind::New,
            InitialReview,
            Action::InitialReview {
                approve: false,
                reason: Some("  ".into()),
            },
            "r",
            TransitionError::ReasonRequired,
        ),
        (
            Kind::New,
            AuthorityReview,
            Action::AuthorityReview {
                approve: false,
                icp_number: None,
                reason: None,
            },
            "r",
            TransitionError::ReasonRequired,
        ),
        // approving a new filing without a number
        (
            Kind::New,
            AuthorityReview,
            Action::AuthorityReview {
                approve: true,
                icp_number: None,
                reason: None,
            },
            "r",
            TransitionError::IcpNumberRequired,
        ),
        // approving access-existing with a different number
        (
            Kind::AccessExisting,
            AuthorityReview,
            Action::AuthorityReview {
                approve: true,
                icp_number: Some(number("京ICP备05001234号")),
                reason: None,
            },
            "r",
            TransitionError::IcpNumberMismatch {
                existing: number("浙ICP备12345678号-1"),
                given: number("京ICP备05001234号"),
            },
        ),
        // a number on a rejection
        (
            Kind::New,
            AuthorityReview,
            Action::AuthorityReview {
                approve: false,
                icp_number: Some(number("浙ICP备12345678号")),
                reason: Some("x".into()),
            },
            "r",
            TransitionError::IcpNumberOnRejection,
        ),
        // invalid replacement details on resubmit and on change
        (
            Kind::New,
            Rejected,
            Action::Resubmit {
                entity: None,
                website: Some(bad_website.clone()),
                product: Some(Product::CorporateSite),
                icp_number: None,
                filing_password: None,
            },
            "a",
            TransitionError::Detail(DetailError::Empty {
                field: "website.name",
            }),
        ),
        (
            Kind::New,
            Approved,
            Action::ChangeDetails {
                entity: Some(entity()),
                website: Some(bad_website),
            },
            "a",
            TransitionError::Detail(DetailError::Empty {
                field: "website.name",
            }),
        ),
        // a change with nothing in it
        (
            Kind::New,
            Approved,
            Action::ChangeDetails {
                entity: None,
                website: None,
            },
            "a",
            TransitionError::NothingToChange,
        ),
        // no actor
        (
            Kind::New,
            Approved,
            Action::Abandon { reason: None },
            " ",
            TransitionError::ActorRequired,
        ),
    ];
    for (kind, status, action, actor, want) in cases {
        let mut f = filing_in(kind, status);
        let before = f.clone();
        let name = action.name();
        assert_eq!(f.apply(action, actor, T1), Err(want), "{status} {name}");
        assert_eq!(f, before, "{status} {name} changed the filing");
    }
}

#[test]
fn authority_approval_settles_the_number() {
    // access-existing: no number given keeps the existing one; the same one is fine
    for given in [None, Some(number("浙ICP备12345678号-1"))] {
        let mut f = filing_in(Kind::AccessExisting, Status::AuthorityReview);
        let action = Action::AuthorityReview {
            approve: true,
            icp_number: given,
            reason: None,
        };
        f.apply(action, "authority", T1).unwrap();
        assert_eq!(f.icp_number, Some(number("浙ICP备12345678号-1")));
    }
    // a new filing gets the number given
    let mut f = filing_in(Kind::New, Status::AuthorityReview);
    assert_eq!(f.icp_number, None);
    let action = Action::AuthorityReview {
        approve: true,
        icp_number: Some(number("浙ICP备1234号-2")),
        reason: Some("ok".into()),
    };
    f.apply(action, "authority", T1).unwrap();
    assert_eq!(f.icp_number, Some(number("浙ICP备1234号-2")));
    assert_eq!(f.history.last().unwrap().reason.as_deref(), Some("ok"));
}

#[test]
fn status_and_product_names() {
    let live: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_live()).collect();
    assert_eq!(
        live,
        [
            Status::InitialReview,
            Status::AuthorityReview,
            Status::Approved,
            Status::Rejected
        ]
    );
    for s in Status::ALL {
        assert_eq!(Status::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
    assert_eq!(Status::parse("Approved"), None);
    for p in Product::ALL {
        assert_eq!(Product::parse(p.as_str()), Some(p));
        assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
    }
    assert_eq!(Product::CorporateSite.as_str(), "corporate_site");
    assert_eq!(Product::parse("corporate-site"), None);
    assert_eq!(
        serde_json::to_value(Kind::AccessExisting).unwrap(),
        "access_existing"
    );
}

#[test]
fn filing_json_round_trip_and_shape() {
    let mut f = Filing::submit(42, submission(Kind::AccessExisting), "alice", T0).unwrap();
    let pass = Action::InitialReview {
        approve: true,
        reason: None,
    };
    f.apply(pass, "reviewer", T1).unwrap();
    let json = serde_json::to_value(&f).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = [
        "id",
        "kind",
        "product",
        "status",
        "domains",
        "icp_number",
        "entity",
        "website",
        "history",
        "created_at",
        "updated_at",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(json["kind"], "access_existing");
    assert_eq!(json["status"], "authority_review");
    assert_eq!(json["icp_number"], "浙ICP备12345678号-1");
    assert_eq!(json["entity"]["type"], "enterprise");
    assert_eq!(json["website"]["owner"]["phone"], "13800000000");
    assert_eq!(json["history"][0]["from"], serde_json::Value::Null);
    assert_eq!(json["history"][1]["from"], "initial_review");
    assert_eq!(json["history"][1]["to"], "authority_review");
    assert_eq!(json["history"][1]["actor"], "reviewer");
    let back: Filing = serde_json::from_value(json).unwrap();
    assert_eq!(back, f);
    assert_eq!(back.validate(), Ok(()));
}

#[test]
fn filing_json_rejects_bad_input() {
    let f = filing_in(Kind::New, Status::Approved);
    let mut json = serde_json::to_value(&f).unwrap();
    json["icp_number"] = "浙ICP备12345678号-01".into();
    let err = serde_json::from_value::<Filing>(json.clone()).unwrap_err();
    assert!(err.to_string().contains("website index"), "{err}");
    json["icp_number"] = serde_json::Value::Null;
    json["unknown"] = 1.into();
    assert!(serde_json::from_value::<Filing>(json.clone()).is_err());
    let no_number = Filing {
        icp_number: None,
        ..f
    };
    assert_eq!(
        no_number.validate(),
        Err(TransitionError::MissingIcpNumber(Status::Approved))
    );
}

#[test]
fn masked_filing_hides_personal_data() {
    let f = filing_in(Kind::New, Status::Approved).masked();
    assert_eq!(
        f.entity.certificate_number.as_deref(),
        Some("913***********XX1X")
    );
    let owner = f.website.owner.unwrap();
    assert_eq!(owner.phone.as_deref(), Some("138****0000"));
    assert_eq!(owner.email.as_deref(), Some("o**@example.cn"));
}

#[test]
fn now_is_rfc3339_utc() {
    let now = now_rfc3339();
    assert_eq!(now.len(), "2024-05-01T08:00:00Z".len(), "{now}");
    assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
}
