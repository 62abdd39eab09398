use std::time::Duration;

use serde_json::json;
use switchboard_core::ProviderId;
use switchboard_store::{AcceptOutcome, AttemptOutcome, AttemptReport, TransitionOutcome};

use crate::{T0, conformance, request, simple, sqlite};

conformance!(
    one_idempotency_key_makes_one_message_under_concurrency,
    |f: crate::Fixture| async move {
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
);

conformance!(
    a_claim_is_a_lease_taken_over_only_after_it_runs_out,
    |f: crate::Fixture| async move {
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
);

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
    let _first = switchboard_store::sql::SqliteStore::open(dir.path()).unwrap();
    let second = switchboard_store::sql::SqliteStore::open(dir.path());
    assert!(second.unwrap_err().to_string().contains("in use"));
}

fn events_of(detail: &switchboard_store::MessageDetail) -> Vec<String> {
    detail.events.iter().map(|e| e.event_type.clone()).collect()
}

conformance!(
    duplicated_and_reordered_receipts_that_arrive_before_the_send_is_recorded_converge,
    |f: crate::Fixture| async move {
        use switchboard_store::ReceiptKind::{Delivered, Read};
        let AcceptOutcome::Created(a) = f.store.accept_message(simple(&f.ws)).await.unwrap() else {
            panic!()
        };
        let claim = f
            .store
            .claim_due(T0, 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(claim.len(), 1);
        // The provider's callbacks overtake its answer to the send, reordered and repeated.
        let mut fresh = Vec::new();
        for kind in [Read, Delivered, Delivered, Read, Delivered] {
            fresh.push(
                f.store
                    .receive_receipt("pr_sim", "SIMlate", kind, Some("{}"), T0)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(
            fresh,
            [true, true, false, false, false],
            "duplicates are dropped at the door"
        );
        let pass = f.store.process_receipts(T0, 100).await.unwrap();
        assert_eq!(
            (pass.applied, pass.waiting),
            (0, 2),
            "no message has that provider id yet"
        );
        // The send's result commits late.
        let report = AttemptReport {
            message_id: a.id.clone(),
            attempt: 1,
            provider_id: ProviderId::parse("pr_sim").unwrap(),
            started_at: T0,
            finished_at: T0.plus(Duration::from_millis(10)),
            outcome: AttemptOutcome::Accepted {
                provider_message_id: "SIMlate".into(),
            },
        };
        f.store.complete_attempt(report).await.unwrap();
        // Not due for another check yet; then reconciled, in lifecycle order.
        assert_eq!(
            f.store
                .process_receipts(T0.plus(Duration::from_millis(500)), 100)
                .await
                .unwrap()
                .applied,
            0
        );
        let pass = f
            .store
            .process_receipts(T0.plus(Duration::from_secs(2)), 100)
            .await
            .unwrap();
        assert_eq!(pass.applied, 2);
        let detail = f.store.get_message(&f.ws, &a.id).await.unwrap().unwrap();
        assert_eq!(detail.message.status.as_str(), "read");
        assert_eq!(
            events_of(&detail),
            [
                "message.queued",
                "message.sending",
                "message.sent",
                "message.delivered",
                "message.read"
            ],
            "one event each"
        );
        // A late duplicate after all that changes nothing.
        assert!(
            !f.store
                .receive_receipt("pr_sim", "SIMlate", Delivered, None, T0)
                .await
                .unwrap()
        );
        assert_eq!(
            f.store
                .process_receipts(T0.plus(Duration::from_secs(10)), 100)
                .await
                .unwrap(),
            switchboard_store::ReceiptPass::default()
        );
    }
);

conformance!(
    a_late_receipt_for_a_finished_message_is_recorded_and_ignored,
    |f: crate::Fixture| async move {
        use switchboard_store::ReceiptKind::{Delivered, Undelivered};
        let AcceptOutcome::Created(a) = f.store.accept_message(simple(&f.ws)).await.unwrap() else {
            panic!()
        };
        f.store
            .claim_due(T0, 10, Duration::from_secs(30))
            .await
            .unwrap();
        let report = AttemptReport {
            message_id: a.id.clone(),
            attempt: 1,
            provider_id: ProviderId::parse("pr_sim").unwrap(),
            started_at: T0,
            finished_at: T0,
            outcome: AttemptOutcome::Accepted {
                provider_message_id: "SIMx".into(),
            },
        };
        f.store.complete_attempt(report).await.unwrap();
        f.store
            .receive_receipt("pr_sim", "SIMx", Delivered, None, T0)
            .await
            .unwrap();
        f.store
            .receive_receipt("pr_sim", "SIMx", Undelivered, None, T0)
            .await
            .unwrap();
        let pass = f.store.process_receipts(T0, 100).await.unwrap();
        assert_eq!((pass.applied, pass.ignored), (1, 1));
        let detail = f.store.get_message(&f.ws, &a.id).await.unwrap().unwrap();
        assert_eq!(
            detail.message.status.as_str(),
            "delivered",
            "an undelivered after delivered does not move it back"
        );
    }
);
