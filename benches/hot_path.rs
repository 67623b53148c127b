//! The per-request hot path, piece by piece and whole: normalise the authority
//! (`Authority::parse` + registrable domain), decide, and answer from a warm decision
//! cache. Run with `cargo bench --bench hot_path`; results and the command that made
//! them go in BENCHMARKS.md.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use icpgate::gate::decision::{decide, RulePolicy};
use icpgate::gate::decision_cache::{CacheSettings, DecisionCache};
use icpgate::model::host::{Authority, HostName};
use icpgate::observe::metrics::Metrics;
use icpgate::registry::sqlite::SqliteRegistry;
use icpgate::registry::{jsonl, Registry};

const HOSTS: [&str; 4] = [
    "shop.example.com",
    "WWW.Example.COM.CN.:8080",
    "www.例子.中国",
    "a.b.c.d.example.org",
];

fn normalise(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalise");
    for host in HOSTS {
        group.bench_function(host, |b| {
            b.iter(|| match Authority::parse(std::hint::black_box(host)) {
                Ok(Authority::Name(name)) => name.registrable_domain(),
                _ => None,
            })
        });
    }
    group.finish();
}

fn seeded_cache(runtime: &tokio::runtime::Runtime, dir: &tempfile::TempDir) -> Arc<DecisionCache> {
    runtime.block_on(async {
        let registry = SqliteRegistry::open(&dir.path().join("bench.db")).expect("open registry");
        let seed = r#"{"domains":["example.com"],"product":"storefront","status":"approved","icp_number":"浙ICP备12345678号-1"}"#;
        registry.import(jsonl::parse(seed).expect("seed")).await.expect("import");
        let settings = CacheSettings {
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(3600),
            stale_if_error: Duration::from_secs(3600),
            max_entries: 100_000,
        };
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        Arc::new(DecisionCache::new(Arc::new(registry), metrics, settings))
    })
}

fn cache_hit_and_whole_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = seeded_cache(&runtime, &dir);
    let domain = HostName::parse("shop.example.com")
        .ok()
        .and_then(|h| h.registrable_domain())
        .expect("domain");
    runtime
        .block_on(cache.lookup(&domain))
        .expect("warm the cache");

    c.bench_function("cache_hit", |b| {
        b.to_async(&runtime).iter(|| cache.lookup(&domain))
    });
    c.bench_function("normalise_decide_cache_hit", |b| {
        b.to_async(&runtime).iter(|| async {
            let Ok(Authority::Name(host)) =
                Authority::parse(std::hint::black_box("Shop.Example.com:443"))
            else {
                return None;
            };
            let domain = host.registrable_domain()?;
            let answer = cache.lookup(&domain).await.ok()?;
            Some(decide(answer.filing.as_deref(), RulePolicy::default()))
        })
    });
}

criterion_group!(benches, normalise, cache_hit_and_whole_path);
criterion_main!(benches);
