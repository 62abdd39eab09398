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
async fn recovery_makes_an_in_flight_webhook_delivery_claimable_at_once() {
    let f = sqlite().await;
    let settings = switchboard_core::webhook_endpoint::EndpointSettings::from_json(
        &serde_json::json!({"url": "https://crm.example.com/hook"}),
        true,
    )
    .unwrap();
    f.store
        .create_endpoint(&f.ws, &settings, "wh_r", "whsec_r", T0)
        .await
        .unwrap();
    f.store.accept_message(simple(&f.ws)).await.unwrap();
    let lease = Duration::from_secs(60);
    let first = f
        .store
        .claim_webhook_deliveries(T0, 10, lease)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let later = T0.plus(Duration::from_secs(1));
    assert!(
        f.store
            .claim_webhook_deliveries(later, 10, lease)
            .await
            .unwrap()
            .is_empty(),
        "in flight"
    );
    assert_eq!(f.store.recover_in_flight().await.unwrap(), 1);
    let again = f
        .store
        .claim_webhook_deliveries(later, 10, lease)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "claimable at once, not at its lease's end");
    assert_eq!(again[0].delivery_id, first[0].delivery_id);
    assert_eq!(again[0].attempt, 2);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = switchboard_store::sql::SqliteStore::open(dir.path()).unwrap();
    let second = switchboard_store::sql::SqliteStore::open(dir.path());
    assert!(second.unwrap_err().to_string().contains("in use"));
}

/// The timeline of a message sent, delivered and read.
const READ_TIMELINE: [&str; 5] = [
    "message.queued",
    "message.sending",
    "message.sent",
    "message.delivered",
    "message.read",
];

/// `n` messages accepted and claimed for sending; their ids, in order.
async fn claimed(
    store: &dyn switchboard_store::Store,
    ws: &switchboard_core::WorkspaceId,
    n: usize,
) -> Vec<switchboard_core::MessageId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let AcceptOutcome::Created(a) = store.accept_message(simple(ws)).await.unwrap() else {
            panic!("a new message")
        };
        ids.push(a.id);
    }
    let claimed = store
        .claim_due(T0, n + 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), n);
    ids
}

/// The report of attempt `attempt` of message `id`, accepted by `pr_sim`
/// as `pmid` at `T0`.
fn accepted_as(id: &switchboard_core::MessageId, attempt: u32, pmid: &str) -> AttemptReport {
    AttemptReport {
        message_id: id.clone(),
        attempt,
        provider_id: ProviderId::parse("pr_sim").unwrap(),
        started_at: T0,
        finished_at: T0,
        outcome: AttemptOutcome::Accepted {
            provider_message_id: pmid.into(),
        },
    }
}

/// Whether the store applies a receipt whose message is known in the write
/// that stores it (SQLite, `receipts::receive_settling`), so the pass finds
/// it settled; PostgreSQL leaves every receipt to the pass.
fn settles_on_receipt(f: &crate::Fixture) -> bool {
    f.url.is_none()
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
                    .receive_receipt("pr_sim", "SIMlate", kind, None, Some("{}"), T0)
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
        assert_eq!(events_of(&detail), READ_TIMELINE, "one event each");
        // A late duplicate after all that changes nothing.
        assert!(
            !f.store
                .receive_receipt("pr_sim", "SIMlate", Delivered, None, None, T0)
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
            .receive_receipt("pr_sim", "SIMx", Delivered, None, None, T0)
            .await
            .unwrap();
        f.store
            .receive_receipt("pr_sim", "SIMx", Undelivered, None, None, T0)
            .await
            .unwrap();
        let pass = f.store.process_receipts(T0, 100).await.unwrap();
        assert_eq!(
            (pass.applied, pass.ignored),
            if settles_on_receipt(&f) {
                (0, 0)
            } else {
                (1, 1)
            }
        );
        let detail = f.store.get_message(&f.ws, &a.id).await.unwrap().unwrap();
        assert_eq!(
            detail.message.status.as_str(),
            "delivered",
            "an undelivered after delivered does not move it back"
        );
        assert_eq!(
            events_of(&detail),
            [
                "message.queued",
                "message.sending",
                "message.sent",
                "message.delivered"
            ]
        );
    }
);

conformance!(
    accepts_stored_together_decide_as_they_would_one_at_a_time,
    |f: crate::Fixture| async move {
        use std::collections::HashMap;

        use switchboard_core::webhook_endpoint::EndpointSettings;

        let endpoint = |events: Option<Vec<&str>>| {
            EndpointSettings::from_json(
                &json!({"url": "https://crm.example.com/hook", "event_types": events}),
                true,
            )
            .unwrap()
        };
        let all = f
            .store
            .create_endpoint(&f.ws, &endpoint(None), "wh_all", "whsec_a", T0)
            .await
            .unwrap();
        f.store
            .create_endpoint(
                &f.ws,
                &endpoint(Some(vec!["message.delivered"])),
                "wh_dlv",
                "whsec_b",
                T0,
            )
            .await
            .unwrap();
        opt_out(&f, "+14155550999").await;
        // (label, request): submitted all at once, so the writer takes them
        // in batches, with duplicates of a key inside one batch.
        let mut reqs = Vec::new();
        for k in 0..40 {
            let body = json!({"to": "+14155550123", "body": format!("k{k}"), "idempotency_key": format!("k{k}")});
            for _ in 0..3 {
                reqs.push((
                    format!("k{k}"),
                    request(&f.ws, body.clone(), &format!("h{k}")),
                ));
            }
        }
        for hash in ["a", "a", "a", "b", "b", "b"] {
            let body = json!({"to": "+14155550123", "body": hash, "idempotency_key": "clash"});
            reqs.push(("clash".into(), request(&f.ws, body, hash)));
        }
        for n in 0..20 {
            let mut r = request(&f.ws, json!({"to": "+14155550999", "body": "x"}), "o");
            r.consent_exempt = n < 5;
            reqs.push((if n < 5 { "exempt" } else { "opted_out" }.into(), r));
        }
        for n in 0..100 {
            let to = format!("+1415555{:04}", 1000 + n);
            reqs.push((
                "plain".into(),
                request(&f.ws, json!({"to": to, "body": "y"}), "p"),
            ));
        }
        let mut tasks = Vec::new();
        for (label, req) in reqs {
            let store = f.store.clone();
            tasks.push(tokio::spawn(async move {
                let hash = req.request_hash.clone();
                (label, hash, store.accept_message(req).await.unwrap())
            }));
        }
        let mut by_key: HashMap<String, Vec<(String, AcceptOutcome)>> = HashMap::new();
        let mut created = Vec::new();
        for t in tasks {
            let (label, hash, outcome) = t.await.unwrap();
            if let AcceptOutcome::Created(a) = &outcome {
                created.push(a.id.clone());
            }
            by_key.entry(label).or_default().push((hash, outcome));
        }
        for k in 0..40 {
            let outcomes = &by_key[&format!("k{k}")];
            let ids: Vec<_> = outcomes
                .iter()
                .map(|(_, o)| match o {
                    AcceptOutcome::Created(a) | AcceptOutcome::Replayed(a) => a.id.clone(),
                    other => panic!("k{k}: {other:?}"),
                })
                .collect();
            let fresh = outcomes
                .iter()
                .filter(|(_, o)| matches!(o, AcceptOutcome::Created(_)))
                .count();
            assert_eq!(fresh, 1, "k{k}: one message per key");
            assert!(
                ids.iter().all(|id| *id == ids[0]),
                "k{k}: replays answer the same id"
            );
        }
        let clash = &by_key["clash"];
        let (winner_hash, winner) = clash
            .iter()
            .find_map(|(h, o)| match o {
                AcceptOutcome::Created(a) => Some((h.clone(), a.id.clone())),
                _ => None,
            })
            .expect("one of the clashing requests is stored");
        for (h, o) in clash {
            match o {
                AcceptOutcome::Created(a) => assert_eq!(a.id, winner),
                AcceptOutcome::Replayed(a) => {
                    assert_eq!((h, &a.id), (&winner_hash, &winner));
                }
                AcceptOutcome::Conflict { existing } => {
                    assert!(h != &winner_hash && *existing == winner, "{h}: {o:?}");
                }
                other => panic!("clash: {other:?}"),
            }
        }
        assert_eq!(
            clash
                .iter()
                .filter(|(_, o)| matches!(o, AcceptOutcome::Created(_)))
                .count(),
            1
        );
        assert!(
            by_key["opted_out"]
                .iter()
                .all(|(_, o)| *o == AcceptOutcome::OptedOut)
        );
        assert!(
            by_key["exempt"]
                .iter()
                .all(|(_, o)| matches!(o, AcceptOutcome::Created(_)))
        );
        assert!(
            by_key["plain"]
                .iter()
                .all(|(_, o)| matches!(o, AcceptOutcome::Created(_)))
        );
        assert_eq!(created.len(), 40 + 1 + 5 + 100);
        assert!(
            f.store.group_commit_stats().max_batch > 1,
            "the accepts were stored in batches"
        );
        // Each stored message has its one event, fanned out to the endpoint
        // that takes every event and not to the one that takes deliveries.
        let mut events = Vec::new();
        for id in &created {
            let d = f.store.get_message(&f.ws, id).await.unwrap().unwrap();
            let types = crate::event_types(&d);
            assert_eq!(types, ["message.queued"], "{id}");
            events.push(d.events[0].id.clone());
        }
        let jobs = f
            .store
            .claim_webhook_deliveries(T0, 1000, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(jobs.iter().all(|j| j.endpoint.id == all.id));
        let (messages, other): (Vec<_>, Vec<_>) = jobs
            .iter()
            .partition(|j| j.event.event_type.starts_with("message."));
        let other: Vec<&str> = other.iter().map(|j| j.event.event_type.as_str()).collect();
        assert_eq!(other, ["contact.opted_out"]);
        let mut delivered: Vec<_> = messages.iter().map(|j| j.event.id.clone()).collect();
        delivered.sort();
        events.sort();
        assert_eq!(delivered, events);
    }
);

conformance!(
    results_and_receipts_written_together_decide_as_they_would_one_at_a_time,
    |f: crate::Fixture| async move {
        use switchboard_store::IncomingReceipt;
        use switchboard_store::ReceiptKind::{Delivered, Read};
        let ids = claimed(f.store.as_ref(), &f.ws, 4).await;
        let report = |id: &switchboard_core::MessageId, attempt, pmid: &str| AttemptReport {
            finished_at: T0.plus(Duration::from_millis(5)),
            ..accepted_as(id, attempt, pmid)
        };
        // A stale report (wrong attempt) changes nothing; the others apply.
        let results = f
            .store
            .complete_attempts(vec![
                report(&ids[0], 1, "SIMa"),
                report(&ids[1], 7, "SIMstale"),
                report(&ids[2], 1, "SIMc"),
            ])
            .await;
        assert_eq!(results.len(), 3);
        assert!(matches!(results[0], Ok(TransitionOutcome::Applied { .. })));
        assert_eq!(results[1].as_ref().unwrap(), &TransitionOutcome::Stale);
        assert!(matches!(results[2], Ok(TransitionOutcome::Applied { .. })));
        // A report for a message that does not exist fails alone.
        let ghost = switchboard_core::MessageId::new_at(T0);
        let results = f
            .store
            .complete_attempts(vec![
                report(&ghost, 1, "SIMghost"),
                report(&ids[3], 1, "SIMd"),
            ])
            .await;
        assert!(results[0].is_err(), "{:?}", results[0]);
        assert!(matches!(results[1], Ok(TransitionOutcome::Applied { .. })));
        let status = |i: usize| {
            let (store, ws, id) = (f.store.clone(), f.ws.clone(), ids[i].clone());
            async move {
                store
                    .get_message(&ws, &id)
                    .await
                    .unwrap()
                    .unwrap()
                    .message
                    .status
                    .as_str()
                    .to_owned()
            }
        };
        assert_eq!(
            [status(0).await, status(1).await, status(2).await],
            ["sent", "sending", "sent"]
        );
        // Applied together, each exactly as alone: its event, its attempt
        // row, its provider id.
        for (i, pmid) in [(0, "SIMa"), (2, "SIMc"), (3, "SIMd")] {
            let d = f.store.get_message(&f.ws, &ids[i]).await.unwrap().unwrap();
            assert_eq!(
                events_of(&d),
                ["message.queued", "message.sending", "message.sent"]
            );
            assert_eq!(
                d.events[2].detail.as_deref(),
                Some(format!("accepted by pr_sim as {pmid}").as_str())
            );
            assert_eq!(d.attempts.len(), 1);
            assert_eq!(d.attempts[0].outcome, "accepted");
            assert_eq!(d.attempts[0].duration_ms, 5);
            assert_eq!(d.attempts[0].provider_message_id.as_deref(), Some(pmid));
            assert_eq!(d.message.provider_message_id.as_deref(), Some(pmid));
        }
        // The stale report is logged and changed nothing.
        let d = f.store.get_message(&f.ws, &ids[1]).await.unwrap().unwrap();
        assert_eq!(events_of(&d), ["message.queued", "message.sending"]);
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].attempt, 7);
        // One callback's receipts in one write: a repeat inside the list and
        // one already stored are both duplicates.
        let incoming = |pmid: &str, kind| IncomingReceipt {
            provider_message_id: pmid.into(),
            kind,
            error_code: None,
            raw: Some("{}".into()),
        };
        assert_eq!(
            f.store
                .receive_receipts("pr_sim", vec![incoming("SIMa", Delivered)], T0)
                .await
                .unwrap(),
            [true]
        );
        assert_eq!(
            f.store
                .receive_receipts(
                    "pr_sim",
                    vec![
                        incoming("SIMa", Delivered),
                        incoming("SIMc", Delivered),
                        incoming("SIMc", Delivered),
                        incoming("SIMc", Read),
                    ],
                    T0
                )
                .await
                .unwrap(),
            [false, true, false, true]
        );
        let mut failed = incoming("SIMd", switchboard_store::ReceiptKind::Undelivered);
        failed.error_code = Some("carrier_unreachable".into());
        assert_eq!(
            f.store
                .receive_receipts("pr_sim", vec![failed, incoming("SIMnobody", Delivered)], T0)
                .await
                .unwrap(),
            [true, true]
        );
        // One pass (on SQLite, the writes that stored them): delivered then
        // read for one message, an undelivered with the provider's code, and
        // one for a provider id no message has yet, which waits.
        let pass = f.store.process_receipts(T0, 100).await.unwrap();
        assert_eq!(
            (pass.applied, pass.waiting),
            if settles_on_receipt(&f) {
                (0, 1)
            } else {
                (4, 1)
            }
        );
        assert_eq!(
            [status(0).await, status(2).await, status(3).await],
            ["delivered", "read", "undelivered"]
        );
        let d = f.store.get_message(&f.ws, &ids[2]).await.unwrap().unwrap();
        assert_eq!(events_of(&d), READ_TIMELINE);
        let d = f.store.get_message(&f.ws, &ids[3]).await.unwrap().unwrap();
        assert_eq!(d.message.error_code.as_deref(), Some("carrier_unreachable"));
        assert_eq!(
            d.events.last().unwrap().error_code.as_deref(),
            Some("carrier_unreachable")
        );
        // Settled receipts are not applied again; a later one is.
        assert_eq!(
            f.store
                .receive_receipts("pr_sim", vec![incoming("SIMa", Read)], T0)
                .await
                .unwrap(),
            [true]
        );
        let pass = f.store.process_receipts(T0, 100).await.unwrap();
        assert_eq!(
            (pass.applied, pass.ignored, pass.waiting),
            if settles_on_receipt(&f) {
                (0, 0, 0)
            } else {
                (1, 0, 0)
            }
        );
        assert_eq!(status(0).await, "read");
        // An empty batch is no write and no error.
        assert!(f.store.complete_attempts(Vec::new()).await.is_empty());
    }
);

conformance!(
    a_callback_of_receipts_spanning_many_runs_ends_as_one_at_a_time_would,
    |f: crate::Fixture| async move {
        use switchboard_store::IncomingReceipt;
        use switchboard_store::ReceiptKind::{Delivered, Read, Undelivered};
        // 70 messages, each with a read that overtakes its delivered in one
        // callback, every tenth delivered repeated and every seventh with a
        // late undelivered: 157 receipts, more than two runs of a set-based
        // statement (`Db::chunks`).
        let ids = claimed(f.store.as_ref(), &f.ws, 70).await;
        let reports = ids
            .iter()
            .enumerate()
            .map(|(i, id)| accepted_as(id, 1, &format!("SIM{i}")))
            .collect();
        for r in f.store.complete_attempts(reports).await {
            assert!(matches!(r, Ok(TransitionOutcome::Applied { .. })), "{r:?}");
        }
        let mut receipts = Vec::new();
        let mut expected = Vec::new();
        for i in 0..70 {
            let mut kinds = vec![Read, Delivered];
            if i % 10 == 0 {
                kinds.push(Delivered);
            }
            if i % 7 == 0 {
                kinds.push(Undelivered);
            }
            for (n, kind) in kinds.into_iter().enumerate() {
                receipts.push(IncomingReceipt {
                    provider_message_id: format!("SIM{i}"),
                    kind,
                    error_code: None,
                    raw: Some(format!("{{\"n\":{n}}}")),
                });
                // The repeated delivered is the third of its message's.
                expected.push(!(i % 10 == 0 && n == 2));
            }
        }
        assert_eq!(receipts.len(), 157);
        assert_eq!(
            f.store
                .receive_receipts("pr_sim", receipts.clone(), T0)
                .await
                .unwrap(),
            expected
        );
        let pass = f.store.process_receipts(T0, 1000).await.unwrap();
        if settles_on_receipt(&f) {
            assert_eq!(pass, switchboard_store::ReceiptPass::default());
        } else {
            assert_eq!((pass.applied, pass.ignored, pass.waiting), (140, 10, 0));
        }
        for id in &ids {
            let d = f.store.get_message(&f.ws, id).await.unwrap().unwrap();
            assert_eq!(d.message.status.as_str(), "read");
            assert_eq!(events_of(&d), READ_TIMELINE);
        }
        // The same callback again: every receipt a duplicate, nothing moves.
        assert!(
            f.store
                .receive_receipts("pr_sim", receipts, T0)
                .await
                .unwrap()
                .iter()
                .all(|new| !new)
        );
        assert_eq!(
            f.store.process_receipts(T0, 1000).await.unwrap(),
            switchboard_store::ReceiptPass::default()
        );
    }
);

conformance!(
    a_claim_suppresses_exactly_the_messages_whose_recipient_opted_out_meanwhile,
    |f: crate::Fixture| async move {
        use switchboard_store::ConsentChange;
        let mut ids = Vec::new();
        // 0 and 1 to a number that opts out after they were accepted (1 is
        // consent-exempt, like a STOP confirmation); 2 to a number that opts
        // out and back in; 3 to a number that opts out on another channel;
        // 4 to a number without a consent record.
        for (n, to) in [
            "+14155550101",
            "+14155550101",
            "+14155550102",
            "+14155550103",
            "+14155550104",
        ]
        .iter()
        .enumerate()
        {
            let mut req = request(&f.ws, json!({"to": to, "body": "hi"}), "h");
            req.consent_exempt = n == 1;
            let AcceptOutcome::Created(a) = f.store.accept_message(req).await.unwrap() else {
                panic!()
            };
            ids.push(a.id);
        }
        let change = |to: &str, channel: &str, state: &str| ConsentChange {
            workspace_id: f.ws.clone(),
            phone: to.into(),
            channel: channel.into(),
            state: state.into(),
            source: "api".into(),
            jurisdiction: None,
            detail: None,
            at: T0,
        };
        for c in [
            change("+14155550101", "sms", "opted_out"),
            change("+14155550102", "sms", "opted_out"),
            change("+14155550102", "sms", "opted_in"),
            change("+14155550103", "whatsapp", "opted_out"),
        ] {
            f.store.change_consent(c).await.unwrap();
        }
        let claimed = f
            .store
            .claim_due(T0, 10, Duration::from_secs(30))
            .await
            .unwrap();
        let mut got: Vec<_> = claimed.iter().map(|m| (m.id.clone(), m.attempt)).collect();
        got.sort();
        let mut want: Vec<_> = ids[1..].iter().map(|id| (id.clone(), 1)).collect();
        want.sort();
        assert_eq!(got, want, "all but the first are claimed, as attempt 1");
        let detail = f.store.get_message(&f.ws, &ids[0]).await.unwrap().unwrap();
        assert_eq!(detail.message.status.as_str(), "suppressed");
        for id in &ids[1..] {
            let d = f.store.get_message(&f.ws, id).await.unwrap().unwrap();
            assert_eq!(d.message.status.as_str(), "sending", "{id}");
        }
        // The claims are leases: nothing more until they run out, then the
        // same four again as attempt 2.
        assert!(
            f.store
                .claim_due(
                    T0.plus(Duration::from_secs(29)),
                    10,
                    Duration::from_secs(30)
                )
                .await
                .unwrap()
                .is_empty()
        );
        let again = f
            .store
            .claim_due(
                T0.plus(Duration::from_secs(31)),
                10,
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(again.len(), 4);
        assert!(again.iter().all(|m| m.attempt == 2));
    }
);

conformance!(
    the_listing_by_recipient_pages_through_its_messages_newest_first,
    |f: crate::Fixture| async move {
        let to = |n: usize| {
            if n.is_multiple_of(3) {
                "+14155550199"
            } else {
                "+14155550123"
            }
        };
        // (n, id) of the messages to +14155550123.
        let mut ours = Vec::new();
        for n in 0..9 {
            let body = json!({"to": to(n), "body": "hi", "client_ref": format!("r{}", n % 2)});
            let AcceptOutcome::Created(a) = f
                .store
                .accept_message(request(&f.ws, body, "h"))
                .await
                .unwrap()
            else {
                panic!("created")
            };
            if to(n) == "+14155550123" {
                ours.push((n, a.id));
            }
        }
        // All in one millisecond (the clock is T0): the id orders them.
        ours.sort_by(|a, b| b.1.as_str().cmp(a.1.as_str()));
        let ids: Vec<_> = ours.iter().map(|(_, id)| id.clone()).collect();
        let pages = |client_ref, limit| {
            recipient_pages(&*f.store, &f.ws, "+14155550123", client_ref, limit)
        };
        assert_eq!(pages(None, 4).await, [&ids[..4], &ids[4..]]);
        assert_eq!(pages(None, 6).await, [&ids[..]]);
        // With another filter.
        let odd: Vec<_> = ours
            .iter()
            .filter(|(n, _)| n % 2 == 1)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(pages(Some("r1"), 2).await, [&odd[..2], &odd[2..]]);
        // And to a number with no messages: one empty page, no cursor.
        let none = recipient_pages(&*f.store, &f.ws, "+14155550100", None, 10).await;
        assert_eq!(none, [Vec::<switchboard_core::MessageId>::new()]);
    }
);

/// Every page of the listing to `to` (with a `client_ref` filter if
/// given), following the cursors.
async fn recipient_pages(
    store: &dyn switchboard_store::Store,
    ws: &switchboard_core::WorkspaceId,
    to: &str,
    client_ref: Option<&str>,
    limit: usize,
) -> Vec<Vec<switchboard_core::MessageId>> {
    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_messages(
                ws,
                &switchboard_store::MessageFilter {
                    to: Some(to.into()),
                    client_ref: client_ref.map(str::to_owned),
                    cursor,
                    limit,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(page.data.iter().all(|m| m.to == to));
        pages.push(page.data.into_iter().map(|m| m.id).collect());
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return pages,
        }
    }
}

conformance!(
    on_postgres_accepts_are_stored_without_reading_until_one_is_refused,
    |f: crate::Fixture| async move {
        let pg = f.url.is_some();
        let rechecked = || f.store.group_commit_stats().rechecked;
        // Fresh keys and recipients, all at once: stored without a read on
        // PostgreSQL, none refused.
        let mut tasks = Vec::new();
        for k in 0..60 {
            let store = f.store.clone();
            let req = keyed(&f.ws, &format!("fresh{k}"), "h");
            tasks.push(tokio::spawn(async move {
                store.accept_message(req).await.unwrap()
            }));
        }
        let mut first = None;
        for t in tasks {
            let outcome = t.await.unwrap();
            let AcceptOutcome::Created(a) = outcome else {
                panic!("{outcome:?}")
            };
            first.get_or_insert(a.id);
        }
        assert_eq!(rechecked(), 0, "no fresh accept is refused");
        // A stored key: the blind insert is refused by the unique index,
        // and the batch runs again with its reads, which find the replay.
        let again = f
            .store
            .accept_message(keyed(&f.ws, "fresh0", "h"))
            .await
            .unwrap();
        assert!(matches!(again, AcceptOutcome::Replayed(_)), "{again:?}");
        assert_eq!(rechecked(), u64::from(pg));
        // Within the pause the writer reads first: nothing more is refused.
        let clash = f
            .store
            .accept_message(keyed(&f.ws, "fresh1", "other"))
            .await
            .unwrap();
        assert!(matches!(clash, AcceptOutcome::Conflict { .. }), "{clash:?}");
        assert_eq!(rechecked(), u64::from(pg));
        // After it, a consent-exempt message to an opted-out recipient (a
        // STOP's confirmation) is not checked: stored without a read.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        opt_out(&f, "+14155550999").await;
        let mut exempt = request(&f.ws, json!({"to": "+14155550999", "body": "bye"}), "e");
        exempt.consent_exempt = true;
        let exempt = f.store.accept_message(exempt).await.unwrap();
        assert!(matches!(exempt, AcceptOutcome::Created(_)), "{exempt:?}");
        assert_eq!(rechecked(), u64::from(pg), "an exemption is not refused");
        // One that is not exempt: the insert leaves the row out and fails,
        // and the batch runs again with its reads; a fresh message sent
        // beside it (in its batch or the next) is stored.
        let before = rechecked();
        let (out, ws) = (f.store.clone(), f.ws.clone());
        let opted_out = tokio::spawn(async move {
            let req = request(&ws, json!({"to": "+14155550999", "body": "x"}), "o");
            out.accept_message(req).await.unwrap()
        });
        let fresh = f
            .store
            .accept_message(keyed(&f.ws, "fresh-after", "h"))
            .await
            .unwrap();
        assert!(matches!(fresh, AcceptOutcome::Created(_)), "{fresh:?}");
        assert_eq!(opted_out.await.unwrap(), AcceptOutcome::OptedOut);
        if pg {
            assert_eq!(rechecked(), before + 1);
        } else {
            assert_eq!(rechecked(), 0, "SQLite reads without a round trip");
        }
        // Nothing refused was stored: the replay and the conflict made no
        // message, nor did the opt-out (61 and the exempt one).
        assert_eq!(stored(&f).await, 62);
        let d = f.store.get_message(&f.ws, &first.unwrap()).await.unwrap();
        assert_eq!(d.map(|d| d.events.len()), Some(1), "one event, once");
    }
);

conformance!(
    accepts_in_flight_each_get_their_own_outcome_when_a_batch_is_refused,
    |f: crate::Fixture| async move {
        // Stored first: keys a later request replays or conflicts with, and
        // an opted-out recipient.
        for j in 0..20 {
            let a = f
                .store
                .accept_message(keyed(&f.ws, &format!("pre{j}"), "h"))
                .await
                .unwrap();
            assert!(matches!(a, AcceptOutcome::Created(_)), "{a:?}");
        }
        opt_out(&f, "+14155550888").await;
        // Then many at once, so that on PostgreSQL batches are in flight
        // behind each other (`group_commit::send_accepts`) when one of them
        // is refused: fresh ones, replays, conflicts, a key sent twice in
        // the wave and messages to the opted-out recipient, interleaved.
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Want {
            Created,
            Replayed,
            Conflict,
            OptedOut,
            CreatedOrReplayed,
        }
        let mut tasks = Vec::new();
        for k in 0..400 {
            let (req, want) = match k % 10 {
                3 => (keyed(&f.ws, &format!("pre{}", k % 20), "h"), Want::Replayed),
                5 => (keyed(&f.ws, &format!("pre{}", k % 20), "x"), Want::Conflict),
                7 => (
                    request(&f.ws, json!({"to": "+14155550888", "body": "hi"}), "o"),
                    Want::OptedOut,
                ),
                9 => (keyed(&f.ws, "twice", "t"), Want::CreatedOrReplayed),
                _ => (keyed(&f.ws, &format!("wave{k}"), "h"), Want::Created),
            };
            let store = f.store.clone();
            tasks.push(tokio::spawn(async move {
                (want, store.accept_message(req).await.unwrap())
            }));
        }
        let mut twice = std::collections::BTreeSet::new();
        let mut created = 0;
        for t in tasks {
            let (want, outcome) = t.await.unwrap();
            let got = match &outcome {
                AcceptOutcome::Created(a) if want == Want::CreatedOrReplayed => {
                    twice.insert(a.id.clone());
                    want
                }
                AcceptOutcome::Replayed(a) if want == Want::CreatedOrReplayed => {
                    twice.insert(a.id.clone());
                    want
                }
                AcceptOutcome::Created(_) => {
                    created += 1;
                    Want::Created
                }
                AcceptOutcome::Replayed(_) => Want::Replayed,
                AcceptOutcome::Conflict { .. } => Want::Conflict,
                AcceptOutcome::OptedOut => Want::OptedOut,
                other => panic!("{other:?}"),
            };
            assert_eq!(got, want, "{outcome:?}");
        }
        assert_eq!(created, 240);
        assert_eq!(twice.len(), 1, "one message for the key sent 40 times");
        if f.url.is_some() {
            assert!(f.store.group_commit_stats().rechecked >= 1);
        }
        // Stored: the 20 first, the 240 fresh and the one sent twice.
        assert_eq!(stored(&f).await, 261);
    }
);

/// How many messages the fixture's store holds, in every status.
async fn stored(f: &crate::Fixture) -> u64 {
    let counts = f.store.status_counts().await.unwrap();
    counts.by_status.iter().map(|(_, n)| n).sum()
}

/// `phone` opts out of SMS in the fixture's workspace.
async fn opt_out(f: &crate::Fixture, phone: &str) {
    f.store
        .change_consent(switchboard_store::ConsentChange {
            workspace_id: f.ws.clone(),
            phone: phone.into(),
            channel: "sms".into(),
            state: "opted_out".into(),
            source: "api".into(),
            jurisdiction: None,
            detail: None,
            at: T0,
        })
        .await
        .unwrap();
}

/// A message with an idempotency key.
fn keyed(
    ws: &switchboard_core::WorkspaceId,
    key: &str,
    hash: &str,
) -> switchboard_store::AcceptRequest {
    request(
        ws,
        json!({"to": "+14155550123", "body": "hi", "idempotency_key": key}),
        hash,
    )
}

/// The key's replay answers its message, and a different body under it is
/// a conflict with that message.
async fn key_holds(
    store: &switchboard_store::sql::SqlStore,
    ws: &switchboard_core::WorkspaceId,
    key: &str,
    id: &switchboard_core::MessageId,
) {
    use switchboard_store::Store;
    let again = store.accept_message(keyed(ws, key, "h")).await.unwrap();
    assert!(
        matches!(&again, AcceptOutcome::Replayed(r) if r.id == *id),
        "{key}: {again:?}"
    );
    let clash = store.accept_message(keyed(ws, key, "other")).await.unwrap();
    assert!(
        matches!(&clash, AcceptOutcome::Conflict { existing } if existing == id),
        "{key}: {clash:?}"
    );
}

/// On SQLite the idempotency keys and recipients are written behind the
/// accepts (`written_behind`): a key is found while it is pending in the
/// writer's memory, after it has been swept to its table, and after a
/// restart, and the listing by recipient has every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_key_holds_while_pending_after_its_move_and_after_a_restart() {
    use switchboard_store::Store;
    let dir = tempfile::tempdir().unwrap();
    // How many keys are in the table: all (`None`) or the one named.
    let moved = |key: Option<&str>| -> i64 {
        rusqlite::Connection::open(dir.path().join(switchboard_store::sql::DB_FILE))
            .unwrap()
            .query_row(
                "SELECT count(*) FROM message_keys WHERE ?1 IS NULL OR idempotency_key = ?1",
                [key],
                |r| r.get(0),
            )
            .unwrap()
    };
    let (ws, tries, a_key, a, b) = {
        let store = switchboard_store::sql::SqliteStore::open(dir.path()).unwrap();
        let ws = store.create_workspace("test", T0).await.unwrap().id;
        // Pending: found while it is not in the table yet. Keys move
        // away in sweeps that begin at most once a second, so a key
        // still out of the table after it was found was found pending.
        // On a loaded machine a sweep may come first; then another key,
        // accepted as that sweep has just begun, is tried.
        let mut tries = 0;
        let (a_key, a) = loop {
            let key = format!("a{tries}");
            let AcceptOutcome::Created(a) =
                store.accept_message(keyed(&ws, &key, "h")).await.unwrap()
            else {
                panic!("a new key")
            };
            key_holds(&store, &ws, &key, &a.id).await;
            if moved(Some(&key)) == 0 {
                break (key, a);
            }
            tries += 1;
            assert!(tries < 10, "every key was swept before it was looked up");
        };
        // The writer moves pending keys in steps before batches, at most
        // every 20 ms (a sweep at most once a second): writes keep
        // arriving until it has.
        let mut n = 0;
        while moved(Some(&a_key)) == 0 {
            assert!(n < 100, "the key was never moved");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            store.accept_message(simple(&ws)).await.unwrap();
            n += 1;
        }
        key_holds(&store, &ws, &a_key, &a.id).await;
        let AcceptOutcome::Created(b) = store.accept_message(keyed(&ws, "b", "h")).await.unwrap()
        else {
            panic!("a new key")
        };
        (ws, tries, a_key, a, b)
    };
    // The stopped writer moves what is pending on its way out; the next
    // start copies whatever it did not.
    let mut n = 0;
    let store = loop {
        match switchboard_store::sql::SqliteStore::open(dir.path()) {
            Ok(s) => break s,
            Err(e) => {
                assert!(n < 100, "{e}");
                n += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    // Every key: `a0` to the one kept, and `b`.
    assert_eq!(moved(None), i64::from(tries + 2));
    key_holds(&store, &ws, &a_key, &a.id).await;
    key_holds(&store, &ws, "b", &b.id).await;
    // The recipients were written behind with the keys: the listing by
    // recipient has every message, swept or not.
    let stored: i64 = rusqlite::Connection::open(dir.path().join(switchboard_store::sql::DB_FILE))
        .unwrap()
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    let listed = recipient_pages(&store, &ws, "+14155550123", None, 100).await;
    let [listed] = &listed[..] else {
        panic!("one page: {listed:?}")
    };
    assert_eq!(listed.len() as i64, stored);
    assert!(listed.contains(&a.id) && listed.contains(&b.id));
}

/// The entries of a burst of accepts reach their tables, and the mark the
/// last message row, with no write after the burst: the writer's sweep
/// steps by the clock while it has work left (`written_behind::due`), not
/// only before batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_burst_is_swept_with_no_write_after_it() {
    use switchboard_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let store = switchboard_store::sql::SqliteStore::open(dir.path()).unwrap();
    let ws = store.create_workspace("test", T0).await.unwrap().id;
    let mut ids = Vec::new();
    for i in 0..300 {
        let AcceptOutcome::Created(a) = store
            .accept_message(keyed(&ws, &format!("key-{i}"), "h"))
            .await
            .unwrap()
        else {
            panic!("a new key")
        };
        ids.push(a.id);
    }
    let state = || -> (i64, i64, i64, i64) {
        rusqlite::Connection::open(dir.path().join(switchboard_store::sql::DB_FILE))
            .unwrap()
            .query_row(
                "SELECT (SELECT count(*) FROM message_keys), (SELECT count(*) FROM message_phones),
                        (SELECT upto FROM written_behind WHERE name = 'messages'),
                        (SELECT max(rowid) FROM messages)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap()
    };
    // A sweep begins at most once a second and takes up to a second; the
    // mark reaches the last row at the start of the sweep after that.
    let started = std::time::Instant::now();
    loop {
        let (keys, phones, mark, last) = state();
        if (keys, phones, mark) == (300, 300, last) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "10 s after the burst: {keys} keys and {phones} recipients swept, mark {mark} of {last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Swept, every key holds, and the listing by recipient has them all.
    key_holds(&store, &ws, "key-0", &ids[0]).await;
    key_holds(&store, &ws, "key-299", &ids[299]).await;
    let listed: std::collections::HashSet<_> =
        recipient_pages(&store, &ws, "+14155550123", None, 100)
            .await
            .into_iter()
            .flatten()
            .collect();
    assert_eq!(listed, ids.into_iter().collect());
}

/// On PostgreSQL an event is written to two indexes, its id's and its
/// message's (migration 0009): none on its sequence number. Its id is still
/// its unique key, and a message's timeline is still in sequence order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_events_are_keyed_by_id_with_no_index_on_their_sequence() {
    let Some(f) = crate::postgres().await else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: PostgreSQL case skipped");
        return;
    };
    let AcceptOutcome::Created(a) = f.store.accept_message(simple(&f.ws)).await.unwrap() else {
        panic!("a new message");
    };
    f.store
        .cancel_message(&f.ws, &a.id, T0.plus(Duration::from_secs(1)))
        .await
        .unwrap()
        .expect("a queued message is canceled");
    let detail = f.store.get_message(&f.ws, &a.id).await.unwrap().unwrap();
    let types = crate::event_types(&detail);
    assert_eq!(types, ["message.queued", "message.canceled"]);

    let url = f.url.clone().unwrap();
    let stored_id = detail.events[1].id.clone(); // the cancel's (the acceptance is the row's)
    let keep = f.keep();
    crate::on_server(&url, move |c| {
        let indexes: Vec<String> = c
            .query(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'events' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(indexes, ["events_by_message", "events_id_key"]);
        // The id is still unique: a second event under it is refused.
        let again = c.execute(
            "INSERT INTO events (id, workspace_id, message_id, type, status, created_at)
             SELECT id, workspace_id, message_id, type, status, created_at FROM events WHERE id = $1",
            &[&stored_id],
        );
        let err = again.expect_err("a duplicate event id is refused");
        assert_eq!(
            err.code(),
            Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            "{err}"
        );
    })
    .await;
    drop(keep);
}

/// The text columns of this schema's tables that do not compare as bytes
/// (collation "C"), as `table.column`.
fn columns_not_binary(c: &mut postgres::Client) -> Vec<String> {
    c.query(
        "SELECT c.relname || '.' || a.attname FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
           AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid = 'text'::regtype
           AND a.attcollation <> 'pg_catalog.\"C\"'::regcollation
         ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// On PostgreSQL every text column compares as bytes, as on SQLite
/// (migration 0011): an index insert compares ids and keys with one
/// `memcmp`, not `strcoll`. A store made before the migration is upgraded
/// in place: its columns change collation, its indexes are rebuilt and
/// valid, and what it stored is still found by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_text_compares_as_bytes_and_an_older_store_is_upgraded() {
    let Some(f) = crate::postgres().await else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: PostgreSQL case skipped");
        return;
    };
    let keyed = |key: &str, hash: &str| {
        request(
            &f.ws,
            json!({"to": "+14155550123", "body": "hi", "idempotency_key": key, "client_ref": key}),
            hash,
        )
    };
    let mut ids = Vec::new();
    for key in ["k-a", "K-a", "k_a", "ka"] {
        let AcceptOutcome::Created(a) = f.store.accept_message(keyed(key, key)).await.unwrap()
        else {
            panic!("a new message for {key}");
        };
        ids.push(a.id);
    }
    let url = f.url.clone().unwrap();
    let keep = f.keep();

    // As a store made before migration 0011 was: its text in the
    // database's collation, the migration not recorded.
    crate::on_server(&url, move |c| {
        assert_eq!(columns_not_binary(c), Vec::<String>::new());
        c.batch_execute(
            r#"ALTER TABLE messages ALTER COLUMN id TYPE text COLLATE "default",
                   ALTER COLUMN workspace_id TYPE text COLLATE "default",
                   ALTER COLUMN idempotency_key TYPE text COLLATE "default",
                   ALTER COLUMN client_ref TYPE text COLLATE "default";
               ALTER TABLE contacts ALTER COLUMN phone TYPE text COLLATE "default";
               DELETE FROM schema_migrations WHERE name = '0011_binary_collation'"#,
        )
        .unwrap();
        assert_eq!(
            columns_not_binary(c),
            [
                "contacts.phone",
                "messages.client_ref",
                "messages.id",
                "messages.idempotency_key",
                "messages.workspace_id"
            ]
        );
    })
    .await;

    // A node of the new version starts on it, and migrates it.
    let store = switchboard_store::sql::SqlStore::connect_postgres_async(&url, 2)
        .await
        .unwrap();
    crate::on_server(&url, move |c| {
        assert_eq!(columns_not_binary(c), Vec::<String>::new());
        let invalid: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_index i JOIN pg_class r ON r.oid = i.indexrelid
                 JOIN pg_namespace n ON n.oid = r.relnamespace
                 WHERE n.nspname = current_schema() AND NOT (i.indisvalid AND i.indisready)",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(invalid, 0, "every index rebuilt and valid");
    })
    .await;

    // What was stored is found through the rebuilt indexes: each key
    // replays its own message, a different body under it conflicts, and a
    // new key makes a new message.
    use switchboard_store::Store;
    for (key, id) in ["k-a", "K-a", "k_a", "ka"].iter().zip(&ids) {
        match store.accept_message(keyed(key, key)).await.unwrap() {
            AcceptOutcome::Replayed(a) => assert_eq!(&a.id, id, "{key}"),
            other => panic!("{key}: {other:?}"),
        }
        assert!(matches!(
            store.accept_message(keyed(key, "other")).await.unwrap(),
            AcceptOutcome::Conflict { existing } if &existing == id
        ));
    }
    assert!(matches!(
        store.accept_message(keyed("K_a", "K_a")).await.unwrap(),
        AcceptOutcome::Created(_)
    ));
    for (key, id) in ["k-a", "K-a"].iter().zip(&ids) {
        let page = store
            .list_messages(
                &f.ws,
                &switchboard_store::MessageFilter {
                    client_ref: Some((*key).to_owned()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let listed: Vec<_> = page.data.into_iter().map(|m| m.id).collect();
        assert_eq!(listed, std::slice::from_ref(id), "{key}");
    }
    drop(store);
    drop(keep);
}

/// On SQLite a receipt whose one message is known, and for whose provider
/// id nothing waits in the inbox, is applied in the write that stores it
/// (`receipts::receive_settling`), in the pass's order, and stored settled
/// with its raw payload; the rest wait for the pass as on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_receipt_whose_message_is_known_is_settled_as_it_is_stored() {
    use switchboard_store::ReceiptKind::{Delivered, Read, Undelivered};
    use switchboard_store::{IncomingReceipt, ReceiptKind, ReceiptPass, Store};
    let dir = tempfile::tempdir().unwrap();
    let inbox = |pmid: &str| -> Vec<(String, String, Option<i64>, Option<String>)> {
        let c =
            rusqlite::Connection::open(dir.path().join(switchboard_store::sql::DB_FILE)).unwrap();
        let mut s = c
            .prepare("SELECT kind, state, processed_at, raw FROM receipt_inbox WHERE provider_message_id = ?1 ORDER BY id")
            .unwrap();
        s.query_map([pmid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let store = switchboard_store::sql::SqliteStore::open(dir.path()).unwrap();
    let ws = store.create_workspace("test", T0).await.unwrap().id;
    let ids = claimed(&store, &ws, 5).await;
    let incoming = |pmid: &str, kind: ReceiptKind| IncomingReceipt {
        provider_message_id: pmid.into(),
        kind,
        error_code: None,
        raw: Some(format!(
            "{{\"id\":\"{pmid}\",\"status\":\"{}\"}}",
            kind.as_str()
        )),
    };
    // SIMb's delivered overtakes the send's result: it waits.
    assert_eq!(
        store
            .receive_receipts("pr_sim", vec![incoming("SIMb", Delivered)], T0)
            .await
            .unwrap(),
        [true]
    );
    let report = |id: &switchboard_core::MessageId, pmid: &str| accepted_as(id, 1, pmid);
    // Two messages share SIMs (a provider that reuses ids).
    for r in store
        .complete_attempts(vec![
            report(&ids[0], "SIMa"),
            report(&ids[1], "SIMb"),
            report(&ids[2], "SIMs"),
            report(&ids[3], "SIMs"),
            report(&ids[4], "SIMr"),
        ])
        .await
    {
        assert!(matches!(r, Ok(TransitionOutcome::Applied { .. })), "{r:?}");
    }
    // One callback: SIMa's read before its delivered and a repeat, SIMb's
    // read, SIMs's delivered, and SIMr's read, whose delivered comes later.
    let t1 = T0.plus(Duration::from_millis(100));
    assert_eq!(
        store
            .receive_receipts(
                "pr_sim",
                vec![
                    incoming("SIMa", Read),
                    incoming("SIMa", Delivered),
                    incoming("SIMa", Delivered),
                    incoming("SIMb", Read),
                    incoming("SIMs", Delivered),
                    incoming("SIMr", Read),
                ],
                t1,
            )
            .await
            .unwrap(),
        [true, true, false, true, true, true]
    );
    let status = |i: usize| {
        let (store, ws, id) = (&store, &ws, ids[i].clone());
        async move {
            let d = store.get_message(ws, &id).await.unwrap().unwrap();
            (d.message.status.as_str().to_owned(), events_of(&d))
        }
    };
    // SIMa: applied as it was stored, delivered before read, with no pass.
    let (st, events) = status(0).await;
    assert_eq!(st, "read");
    assert_eq!(events, READ_TIMELINE);
    let raw = |pmid: &str, kind: &str| format!("{{\"id\":\"{pmid}\",\"status\":\"{kind}\"}}");
    assert_eq!(
        inbox("SIMa"),
        [
            (
                "read".to_owned(),
                "applied".to_owned(),
                Some(t1.as_millis()),
                Some(raw("SIMa", "read"))
            ),
            (
                "delivered".to_owned(),
                "applied".to_owned(),
                Some(t1.as_millis()),
                Some(raw("SIMa", "delivered"))
            ),
        ]
    );
    // SIMb's read waits behind its pending delivered; SIMs names two
    // messages: both for the pass, untouched until then.
    assert_eq!(status(1).await.0, "sent");
    assert_eq!(
        inbox("SIMb")
            .into_iter()
            .map(|r| (r.0, r.1, r.2))
            .collect::<Vec<_>>(),
        [
            ("delivered".to_owned(), "pending".to_owned(), None),
            ("read".to_owned(), "pending".to_owned(), None)
        ]
    );
    assert_eq!(inbox("SIMs")[0].1, "pending");
    assert_eq!(
        (status(2).await.0, status(3).await.0),
        ("sent".to_owned(), "sent".to_owned())
    );
    // SIMr's read overtook its delivered: it waits, and so does the
    // delivered when it comes, behind it.
    assert_eq!(status(4).await.0, "sent");
    assert_eq!(inbox("SIMr")[0].1, "pending");
    assert_eq!(
        store
            .receive_receipts("pr_sim", vec![incoming("SIMr", Delivered)], t1)
            .await
            .unwrap(),
        [true]
    );
    assert_eq!(status(4).await.0, "sent");
    assert_eq!(inbox("SIMr")[1].1, "pending");
    // A late undelivered is stored settled as ignored; a repeat of a settled
    // receipt is a duplicate, and neither moves the message.
    assert_eq!(
        store
            .receive_receipts(
                "pr_sim",
                vec![incoming("SIMa", Undelivered), incoming("SIMa", Delivered)],
                t1,
            )
            .await
            .unwrap(),
        [true, false]
    );
    assert_eq!(
        inbox("SIMa")[2],
        (
            "undelivered".to_owned(),
            "ignored".to_owned(),
            Some(t1.as_millis()),
            Some(raw("SIMa", "undelivered"))
        )
    );
    assert_eq!(status(0).await.1.len(), 5, "no event for the ignored one");
    // The pass applies what waited, SIMb's and SIMr's in lifecycle order,
    // and one of SIMs's messages.
    let pass = store
        .process_receipts(T0.plus(Duration::from_secs(2)), 100)
        .await
        .unwrap();
    assert_eq!(
        pass,
        ReceiptPass {
            applied: 5,
            ..ReceiptPass::default()
        }
    );
    for i in [1, 4] {
        let (st, events) = status(i).await;
        assert_eq!(st, "read");
        assert_eq!(
            &events[3..],
            ["message.delivered", "message.read"],
            "delivered before read"
        );
    }
    let mut shared = [status(2).await.0, status(3).await.0];
    shared.sort();
    assert_eq!(shared, ["delivered", "sent"]);
    assert!(
        [inbox("SIMb"), inbox("SIMs"), inbox("SIMr")]
            .iter()
            .flatten()
            .all(|r| r.1 == "applied")
    );
}

conformance!(
    a_listing_of_every_status_pages_through_the_workspace_newest_first,
    |f: crate::Fixture| async move {
        use switchboard_core::{MessageId, Status};
        use switchboard_store::MessageFilter;
        let other = f.store.create_workspace("other", T0).await.unwrap().id;
        // 40 messages a millisecond apart, another workspace's between
        // them, in five statuses: queued, scheduled, canceled, sending,
        // and (sent or failed after their claim) whatever the rest became.
        let mut ours: Vec<(i64, MessageId)> = Vec::new();
        for k in 0..40_i64 {
            let at = T0.plus(std::time::Duration::from_millis(k as u64));
            let body = if k % 5 == 0 {
                json!({"to": "+14155550123", "body": "later", "send_at": "2026-10-01T00:00:00Z"})
            } else {
                json!({"to": format!("+1415555{:04}", k), "body": "hi"})
            };
            let mut req = crate::request(&f.ws, body, &format!("h{k}"));
            req.now = at;
            let AcceptOutcome::Created(a) = f.store.accept_message(req).await.unwrap() else {
                panic!("created")
            };
            ours.push((k, a.id));
            let mut theirs =
                crate::request(&other, json!({"to": "+14155550100", "body": "x"}), "o");
            theirs.now = at;
            f.store.accept_message(theirs).await.unwrap();
        }
        for (k, id) in &ours {
            if k % 5 == 1 {
                f.store
                    .cancel_message(&f.ws, id, T0)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        let later = T0.plus(std::time::Duration::from_secs(1));
        f.store
            .claim_due(later, 6, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let mut statuses = std::collections::BTreeSet::new();
        let page = |filter: MessageFilter| {
            let store = f.store.clone();
            let ws = f.ws.clone();
            async move { store.list_messages(&ws, &filter).await.unwrap() }
        };
        // Every page size, following the cursors: every message of the
        // workspace once, newest first, none of the other's.
        let newest_first: Vec<MessageId> = ours.iter().rev().map(|(_, id)| id.clone()).collect();
        for limit in [1, 3, 7, 40, 100] {
            let mut listed = Vec::new();
            let mut cursor = None;
            loop {
                let p = page(MessageFilter {
                    cursor,
                    limit,
                    ..Default::default()
                })
                .await;
                assert!(p.data.len() <= limit);
                for m in &p.data {
                    assert_eq!(m.workspace_id, f.ws);
                    statuses.insert(m.status.as_str());
                }
                listed.extend(p.data.into_iter().map(|m| m.id));
                match p.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(listed, newest_first, "pages of {limit}");
        }
        assert!(statuses.len() >= 4, "{statuses:?}");
        // A time window, with and without a cursor, as ids' bounds.
        let window: Vec<MessageId> = ours
            .iter()
            .rev()
            .filter(|(k, _)| (10..30).contains(k))
            .map(|(_, id)| id.clone())
            .collect();
        let in_window = |cursor: Option<MessageId>, limit| MessageFilter {
            created_after: Some(T0.plus(std::time::Duration::from_millis(10))),
            created_before: Some(T0.plus(std::time::Duration::from_millis(30))),
            cursor,
            limit,
            ..Default::default()
        };
        let all = page(in_window(None, 100)).await;
        assert_eq!(
            all.data.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
            window
        );
        assert!(all.next_cursor.is_none());
        let first = page(in_window(None, 8)).await;
        assert_eq!(
            first.data.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
            window[..8]
        );
        let second = page(in_window(first.next_cursor.clone(), 100)).await;
        assert_eq!(
            second.data.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
            window[8..]
        );
        // One status, through the same index.
        let scheduled = page(MessageFilter {
            status: Some(Status::Scheduled),
            limit: 100,
            ..Default::default()
        })
        .await;
        let want: Vec<MessageId> = ours
            .iter()
            .rev()
            .filter(|(k, _)| k % 5 == 0)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(
            scheduled
                .data
                .iter()
                .map(|m| m.id.clone())
                .collect::<Vec<_>>(),
            want
        );
        // An empty window: one empty page.
        let none = page(MessageFilter {
            created_before: Some(T0),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert!(none.data.is_empty() && none.next_cursor.is_none());
    }
);

/// With a count of every status that is never due again, a later call
/// takes the queue's statuses from a count of its own and the settled
/// ones from the first count, and says how old that is; with the default
/// policy (a small database) every call counts everything.
async fn counts_reuse_the_settled_statuses_and_count_the_queue(f: crate::Fixture) {
    use switchboard_core::Status;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({"to": "+14155550123", "body": "hi", "idempotency_key": format!("k{n}")});
        let AcceptOutcome::Created(a) = f
            .store
            .accept_message(request(&f.ws, body, &format!("h{n}")))
            .await
            .unwrap()
        else {
            panic!()
        };
        ids.push(a.id);
    }
    let first = f.store.status_counts().await.unwrap();
    assert_eq!(first.of(Status::Queued), 3);
    assert_eq!(first.age, Duration::ZERO);
    f.store
        .cancel_message(&f.ws, &ids[0], T0)
        .await
        .unwrap()
        .unwrap();
    let body = json!({"to": "+14155550123", "body": "later", "send_at": "2026-09-30T00:00:00Z"});
    f.store
        .accept_message(request(&f.ws, body, "later"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let later = f.store.status_counts().await.unwrap();
    // The queue as it is now: two queued (one canceled), one scheduled.
    assert_eq!(later.of(Status::Queued), 2);
    assert_eq!(later.of(Status::Scheduled), 1);
    assert_eq!(later.of(Status::Sending), 0);
    // The settled statuses as the first count found them.
    assert_eq!(later.of(Status::Canceled), 0);
    assert!(later.age >= Duration::from_millis(5), "{:?}", later.age);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_counts_reuse_the_settled_statuses_and_count_the_queue() {
    let f = crate::sqlite_with(never_due()).await;
    let keep = f.keep();
    counts_reuse_the_settled_statuses_and_count_the_queue(f).await;
    drop(keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_counts_reuse_the_settled_statuses_and_count_the_queue() {
    let Some(f) = crate::postgres_with(never_due()).await else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: PostgreSQL case skipped");
        return;
    };
    let keep = f.keep();
    counts_reuse_the_settled_statuses_and_count_the_queue(f).await;
    drop(keep);
}

/// A policy under which a count, once made, is not due again in a test.
fn never_due() -> switchboard_store::sql::counts::RecountPolicy {
    switchboard_store::sql::counts::RecountPolicy {
        fresh_below: Duration::ZERO,
        times: u32::MAX,
    }
}

conformance!(
    on_a_small_database_every_count_is_current,
    |f: crate::Fixture| async move {
        use switchboard_core::Status;
        let AcceptOutcome::Created(a) = f.store.accept_message(simple(&f.ws)).await.unwrap() else {
            panic!()
        };
        assert_eq!(f.store.status_counts().await.unwrap().of(Status::Queued), 1);
        f.store
            .cancel_message(&f.ws, &a.id, T0)
            .await
            .unwrap()
            .unwrap();
        let now = f.store.status_counts().await.unwrap();
        assert_eq!((now.of(Status::Queued), now.of(Status::Canceled)), (0, 1));
        assert_eq!(now.age, Duration::ZERO);
    }
);
