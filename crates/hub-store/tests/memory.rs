//! The conformance kit on the in-memory reference backend.

use hub_store::conformance::{self, StoresFactory};
use hub_store::{StoreLimits, memory::MemoryStore};

fn memory() -> StoresFactory {
    conformance::factory(|| async { MemoryStore::new(StoreLimits::default()).into_stores() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_passes_the_conformance_kit() {
    conformance::run_all(memory()).await;
}

#[test]
fn check_names_are_unique_and_stable() {
    let checks = conformance::checks();
    let mut names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert!(names.len() >= 20, "the kit has its checks: {names:?}");
    assert!(
        names
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')),
        "names are snake_case: {names:?}"
    );
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), checks.len(), "check names are unique");
}
