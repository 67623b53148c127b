//! The contract these tests pin: `GET /v1/filings` answers one page at a time, in id
//! order — 100 filings unless `limit` says otherwise, never more than 1000 — with
//! `next`, the `after` of the following page, null on the last one; following
//! `next` visits every filing exactly once, whatever the page size; `status=` still
//! filters the pages; a cursor past the end answers an empty last page; a bad
//! `limit` or `after` is a 400 that names it.

mod common;

use common::gate::TestGate;
use common::seed::filing;
use serde_json::Value;

/// `n` seed filings, `page-<i>.cn`, every third one rejected, the rest in review.
fn seed(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let status = if i % 3 == 0 {
                "rejected"
            } else {
                "initial_review"
            };
            filing(&[&format!("page-{i}.cn")], status, "storefront", None)
        })
        .collect()
}

fn ids(page: &Value) -> Vec<i64> {
    page["filings"]
        .as_array()
        .expect("filings array")
        .iter()
        .map(|f| f["id"].as_i64().expect("id"))
        .collect()
}

/// Every id of `query`'s pages of `limit`, following `next` to the end.
async fn page_through(gate: &TestGate, query: &str, limit: usize) -> (Vec<i64>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut after = String::new();
    loop {
        let path = format!("/v1/filings?{query}limit={limit}{after}");
        let (status, page) = gate.api("GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        let got = ids(&page);
        assert!(got.len() <= limit, "{path}: {} filings", got.len());
        seen.extend(&got);
        pages += 1;
        match page["next"].as_i64() {
            Some(next) => {
                assert_eq!(Some(&next), got.last(), "next is the page's last id");
                after = format!("&after={next}");
            }
            None => {
                assert!(page["next"].is_null(), "{page}");
                return (seen, pages);
            }
        }
    }
}

#[tokio::test]
async fn following_next_visits_every_filing_once_in_id_order() {
    let gate = TestGate::start(&seed(105), None, None, "").await;

    // No limit: the default page of 100, and a cursor to the rest.
    let (status, first) = gate.api("GET", "/v1/filings", None).await;
    assert_eq!(status, 200);
    let first_ids = ids(&first);
    assert_eq!(first_ids.len(), 100);
    assert_eq!(first["next"].as_i64(), first_ids.last().copied());

    let (all, pages) = page_through(&gate, "", 10).await;
    assert_eq!(all.len(), 105, "every filing once");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "id order, no repeats");
    assert_eq!(pages, 11);
    assert_eq!(&all[..100], &first_ids[..]);

    // A page size that divides the total: the last full page says there is no more.
    let (exact, pages) = page_through(&gate, "", 35).await;
    assert_eq!((exact, pages), (all.clone(), 3));

    // A filter pages the same way over its own filings (every third is rejected).
    let (rejected, _) = page_through(&gate, "status=rejected&", 7).await;
    assert_eq!(rejected.len(), 35);
    let want: Vec<i64> = all.iter().step_by(3).copied().collect();
    assert_eq!(rejected, want);

    // Empty pages: a filter that matches nothing, a cursor past the end.
    for path in [
        "/v1/filings?status=cancelled".to_string(),
        format!("/v1/filings?after={}", all[104]),
        "/v1/filings?after=99999999".to_string(),
    ] {
        let (status, page) = gate.api("GET", &path, None).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(ids(&page), Vec::<i64>::new(), "{path}");
        assert!(page["next"].is_null(), "{path}: {page}");
    }
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_a_400_naming_it() {
    let gate = TestGate::start(&seed(3), None, None, "").await;
    let cases = [
        // not a number
        ("after=abc", "after"),
        // ids are positive integers
        ("after=-1", "after"),
        // an empty page is no page
        ("limit=0", "limit"),
        // past the largest page
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
    ];
    for (query, names) in cases {
        let (status, body) = gate.api("GET", &format!("/v1/filings?{query}"), None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.to_string().contains(names), "{query}: {body}");
    }
    let (status, page) = gate.api("GET", "/v1/filings?limit=1000", None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page).len(), 3);
}
