use std::time::Duration;

use serde_json::json;
use switchboard_core::ProviderId;
use switchboard_store::{AcceptOutcome, AttemptOutcome, AttemptReport, TransitionOutcome};

use crate::{T0, request, simple, sqlite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_makes_one_message_under_concurrency() {
    let f = sqlite().await;
    let body = json!({"to": "+14155550123", "body": "hi", "idempotency_key": "k"});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (store, req) = (f.store.clone(), request(&f.ws, body.clone(), "same"));
        tasks.push(tokio::spawn(async move {
            store.accept_message(req).await.unwrap()
        }));
    }
    let mut created = 0;
    let mut ids = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            AcceptOutcome::Created(a) => {
                created += 1;
                ids.push(a.id);
            }
            AcceptOutcome::Replayed(a) => ids.push(a.id),
            AcceptOutcome::Conflict { .. } => panic!("same body is not a conflict"),
            AcceptOutcome::OptedOut | AcceptOutcome::OptInRequired => {
                panic!("no consent policy here")
            }
        }
    }
    ids.dedup();
    assert_eq!((created, ids.len()), (1, 1));
    let other = f
        .store
        .accept_message(request(&f.ws, body, "different"))
        .await
        .unwrap();
    assert!(matches!(other, AcceptOutcome::Conflict { .. }));
}

#[tokio::test]
async fn a_claim_is_a_lease_taken_over_only_after_it_runs_out() {
    let f = sqlite().await;
    let AcceptOutcome::Created(a) = f.store.accept_message(simple(&f.ws)).await.unwrap() else {
        panic!()
    };
    let lease = Duration::from_secs(30);
    let first = f.store.claim_due(T0, 10, lease).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    assert!(
        f.store
            .claim_due(T0.plus(Duration::from_secs(29)), 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "held while leased"
    );
    let second = f
        .store
        .claim_due(T0.plus(Duration::from_secs(31)), 10, lease)
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, 2);
    // The first claimant reports late: its report is stale and changes nothing.
    let late = AttemptReport {
        message_id: a.id.clone(),
        attempt: 1,
        provider_id: ProviderId::parse("pr_sim").unwrap(),
        started_at: T0,
        finished_at: T0.plus(Duration::from_secs(32)),
        outcome: AttemptOutcome::Accepted {
            provider_message_id: "SIMx".into(),
        },
    };
    assert_eq!(
        f.store.complete_attempt(late).await.unwrap(),
        TransitionOutcome::Stale
    );
    let detail = f.store.get_message(&f.ws, &a.id).await.unwrap().unwrap();
    let mut outcomes: Vec<&str> = detail.attempts.iter().map(|x| x.outcome.as_str()).collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        ["accepted", "interrupted"],
        "the late report is logged beside the interruption"
    );
    assert_eq!(
        detail.message.status.as_str(),
        "sending",
        "the current claim (attempt 2) is still in flight"
    );
}

#[tokio::test]
async fn recovery_makes_in_flight_work_claimable_at_once() {
    let f = sqlite().await;
    f.store.accept_message(simple(&f.ws)).await.unwrap();
    assert_eq!(
        f.store
            .claim_due(T0, 10, Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(f.store.recover_in_flight().await.unwrap(), 1);
    assert_eq!(
        f.store
            .claim_due(T0, 10, Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = switchboard_store::sqlite::SqliteStore::open(dir.path()).unwrap();
    let second = switchboard_store::sqlite::SqliteStore::open(dir.path());
    assert!(second.unwrap_err().to_string().contains("in use"));
}
