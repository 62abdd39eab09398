//! The store's contract, case by case, on both backends: lifecycle events,
//! webhook fan-out and ordering, consent, inbound deduplication, templates.

use std::time::Duration;

use serde_json::json;
use switchboard_core::webhook_endpoint::EndpointSettings;
use switchboard_store::{
    AcceptOutcome, AttemptOutcome, AttemptReport, ConsentChange, NewInbound, ReceiptKind,
    TemplateRecord, WebhookAttemptReport, WebhookOutcome,
};

use crate::{T0, conformance, request, simple};

const LEASE: Duration = Duration::from_secs(30);

fn endpoint(events: Option<Vec<&str>>, disable_after: u32) -> EndpointSettings {
    EndpointSettings::from_json(
        &json!({
            "url": "https://crm.example.com/hook",
            "event_types": events,
            "disable_after": disable_after,
            "retry_schedule": [1, 1, 1],
        }),
        true,
    )
    .unwrap()
}

/// What a claim of webhook deliveries at `at` takes, up to `limit`.
async fn claim_deliveries(
    f: &crate::Fixture,
    at: switchboard_core::Timestamp,
    limit: usize,
) -> Vec<switchboard_store::WebhookJob> {
    f.store
        .claim_webhook_deliveries(at, limit, LEASE)
        .await
        .unwrap()
}

/// Claims the one queued message and reports it accepted by the provider
/// as `provider_message_id` (`sending → sent`).
async fn send_the_only_queued(f: &crate::Fixture, provider_message_id: &str) {
    let claimed = f.store.claim_due(T0, 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    f.store
        .complete_attempt(AttemptReport {
            message_id: claimed[0].id.clone(),
            attempt: 1,
            provider_id: claimed[0].provider_id.clone(),
            started_at: T0,
            finished_at: T0,
            outcome: AttemptOutcome::Accepted {
                provider_message_id: provider_message_id.into(),
            },
        })
        .await
        .unwrap();
}

fn report(
    job: &switchboard_store::WebhookJob,
    status: u16,
    outcome: WebhookOutcome,
) -> WebhookAttemptReport {
    WebhookAttemptReport {
        delivery_id: job.delivery_id.clone(),
        endpoint_id: job.endpoint.id.clone(),
        event_id: job.event.id.clone(),
        attempt: job.attempt,
        trigger: job.trigger.clone(),
        status_code: Some(status),
        error: None,
        response_body: Some("ok".into()),
        duration_ms: 3,
        finished_at: T0,
        outcome,
    }
}

conformance!(
    every_transition_is_one_event_in_order,
    |f: crate::Fixture| async move {
        let AcceptOutcome::Created(a) = f.store.accept_message(simple(&f.ws)).await.unwrap() else {
            panic!("created")
        };
        send_the_only_queued(&f, "P1").await;
        for kind in [
            ReceiptKind::Delivered,
            ReceiptKind::Delivered,
            ReceiptKind::Read,
        ] {
            f.store
                .apply_receipt("pr_sim", "P1", kind, None, None, T0)
                .await
                .unwrap();
        }
        let detail = f.store.get_message(&f.ws, &a.id).await.unwrap().unwrap();
        let types = crate::event_types(&detail);
        assert_eq!(
            types,
            [
                "message.queued",
                "message.sending",
                "message.sent",
                "message.delivered",
                "message.read"
            ]
        );
        assert_eq!(detail.message.status.as_str(), "read");
        // A cancel after the fact changes nothing and records nothing.
        f.store.cancel_message(&f.ws, &a.id, T0).await.unwrap();
        let again = f.store.get_message(&f.ws, &a.id).await.unwrap().unwrap();
        assert_eq!(again.events.len(), 5);
    }
);

conformance!(
    events_fan_out_to_subscribed_endpoints_in_order_per_message,
    |f: crate::Fixture| async move {
        let all = f
            .store
            .create_endpoint(&f.ws, &endpoint(None, 5), "wh_all", "whsec_a", T0)
            .await
            .unwrap();
        let delivered_only = f
            .store
            .create_endpoint(
                &f.ws,
                &endpoint(Some(vec!["message.delivered"]), 5),
                "wh_dlv",
                "whsec_b",
                T0,
            )
            .await
            .unwrap();
        assert_eq!(f.store.list_endpoints(&f.ws).await.unwrap().len(), 2);
        f.store.accept_message(simple(&f.ws)).await.unwrap();
        let claimed = f.store.claim_due(T0, 10, LEASE).await.unwrap();
        assert_eq!(claimed.len(), 1);
        // queued and sending are out for `all`; `delivered_only` has nothing yet.
        let jobs = claim_deliveries(&f, T0, 100).await;
        let types: Vec<(&str, &str)> = jobs
            .iter()
            .map(|j| (j.endpoint.id.as_str(), j.event.event_type.as_str()))
            .collect();
        // One message, one endpoint: only the oldest pending delivery goes out.
        assert_eq!(types, [(all.id.as_str(), "message.queued")]);
        f.store
            .complete_webhook_attempt(report(&jobs[0], 200, WebhookOutcome::Succeeded))
            .await
            .unwrap();
        let next = claim_deliveries(&f, T0, 100).await;
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].event.event_type, "message.sending");
        // A failure keeps the order: nothing after it goes out before it.
        f.store
            .complete_webhook_attempt(report(
                &next[0],
                500,
                WebhookOutcome::RetryAt(T0.plus(Duration::from_secs(1))),
            ))
            .await
            .unwrap();
        assert!(claim_deliveries(&f, T0, 100).await.is_empty());
        let attempts = f
            .store
            .webhook_attempts(&f.ws, &all.id, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].status_code, Some(500), "newest first");
        assert!(
            f.store
                .webhook_attempts(&f.ws, &delivered_only.id, 10)
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
    }
);

conformance!(
    each_event_goes_to_exactly_the_enabled_endpoints_of_its_workspace_that_subscribe,
    |f: crate::Fixture| async move {
        let create = |events: Option<Vec<&'static str>>, id: &'static str| {
            let f = &f;
            async move {
                f.store
                    .create_endpoint(&f.ws, &endpoint(events, 5), id, "whsec_a", T0)
                    .await
                    .unwrap()
                    .id
            }
        };
        let all = create(None, "wh_all").await;
        let also_all = create(None, "wh_all2").await;
        let delivered = create(Some(vec!["message.delivered"]), "wh_dlv").await;
        let sent = create(Some(vec!["message.sent", "contact.opted_out"]), "wh_sent").await;
        let disabled = create(None, "wh_off").await;
        let deleted = create(None, "wh_gone").await;
        let off = EndpointSettings::from_json(&json!({"enabled": false}), false).unwrap();
        assert!(
            f.store
                .update_endpoint(&f.ws, &disabled, &off, T0)
                .await
                .unwrap()
                .is_some()
        );
        assert!(f.store.delete_endpoint(&f.ws, &deleted, T0).await.unwrap());
        let other = f.store.create_workspace("other", T0).await.unwrap().id;
        f.store
            .create_endpoint(&other, &endpoint(None, 5), "wh_other", "whsec_o", T0)
            .await
            .unwrap();
        f.store.accept_message(simple(&f.ws)).await.unwrap();
        send_the_only_queued(&f, "SIMfan").await;
        f.store
            .receive_receipt(
                "pr_sim",
                "SIMfan",
                switchboard_store::ReceiptKind::Delivered,
                None,
                None,
                T0,
            )
            .await
            .unwrap();
        f.store.process_receipts(T0, 100).await.unwrap();
        // Every delivery, claimed and answered until none is left.
        let mut got: Vec<(String, String, String)> = Vec::new();
        for _ in 0..20 {
            let jobs = claim_deliveries(&f, T0, 100).await;
            if jobs.is_empty() {
                break;
            }
            for j in jobs {
                assert_eq!(j.delivery_id, format!("{}/{}", j.event.id, j.endpoint.id));
                got.push((
                    j.endpoint.id.clone(),
                    j.event.event_type.clone(),
                    j.delivery_id.clone(),
                ));
                f.store
                    .complete_webhook_attempt(report(&j, 200, WebhookOutcome::Succeeded))
                    .await
                    .unwrap();
            }
        }
        let mut pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|(e, t, _)| (e.as_str(), t.as_str()))
            .collect();
        pairs.sort_unstable();
        let mut expected = Vec::new();
        for e in [all.as_str(), also_all.as_str()] {
            for t in [
                "message.delivered",
                "message.queued",
                "message.sending",
                "message.sent",
            ] {
                expected.push((e, t));
            }
        }
        expected.push((delivered.as_str(), "message.delivered"));
        expected.push((sent.as_str(), "message.sent"));
        expected.sort_unstable();
        assert_eq!(pairs, expected);
        let mut ids: Vec<&str> = got.iter().map(|(_, _, d)| d.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), got.len(), "one delivery per event and endpoint");
    }
);

conformance!(
    an_events_deliveries_claimed_together_each_carry_its_data,
    |f: crate::Fixture| async move {
        // `wh_a` fails once and has its retry in flight, so the claim
        // leaves out its delivery of the next event: the first of that
        // event's rows, whose data the other deliveries share.
        let failing = f
            .store
            .create_endpoint(&f.ws, &endpoint(None, 5), "wh_a", "whsec_a", T0)
            .await
            .unwrap();
        f.store.accept_message(simple(&f.ws)).await.unwrap();
        let first = claim_deliveries(&f, T0, 10).await;
        assert_eq!(first.len(), 1);
        let retry_at = T0.plus(Duration::from_secs(1));
        f.store
            .complete_webhook_attempt(report(&first[0], 500, WebhookOutcome::RetryAt(retry_at)))
            .await
            .unwrap();
        let retry = claim_deliveries(&f, retry_at, 10).await;
        assert_eq!(retry.len(), 1, "the retry is in flight");
        for id in ["wh_b", "wh_c", "wh_d"] {
            f.store
                .create_endpoint(&f.ws, &endpoint(None, 5), id, "whsec_b", T0)
                .await
                .unwrap();
        }
        let m = match f
            .store
            .accept_message(request(
                &f.ws,
                json!({"to": "+14155550199", "body": "fan \"out\" ✓", "client_ref": "r-2",
                       "metadata": {"crm": {"id": 7}}}),
                "h2",
            ))
            .await
            .unwrap()
        {
            AcceptOutcome::Created(m) => m,
            other => panic!("not created: {other:?}"),
        };
        let jobs = claim_deliveries(&f, retry_at, 100).await;
        let mut endpoints: Vec<&str> = jobs.iter().map(|j| j.endpoint.id.as_str()).collect();
        endpoints.sort_unstable();
        assert_eq!(endpoints, ["wh_b", "wh_c", "wh_d"]);
        assert!(!endpoints.contains(&failing.id.as_str()));
        for j in &jobs {
            assert_eq!(j.event.event_type, "message.queued");
            let data = j.event.data.value();
            assert_eq!(data["object"], "message");
            assert_eq!(data["id"], m.id.as_str());
            assert_eq!(data["to"], "+14155550199");
            assert_eq!(data["body"], "fan \"out\" ✓");
            assert_eq!(data["client_ref"], "r-2");
            assert_eq!(data["metadata"], json!({"crm": {"id": 7}}));
            assert_eq!(data["status"], "queued");
            assert_eq!(j.event.data, jobs[0].event.data);
            assert_eq!(j.event.id, jobs[0].event.id);
            assert_eq!(j.delivery_id, format!("{}/{}", j.event.id, j.endpoint.id));
        }
    }
);

conformance!(
    an_endpoint_that_keeps_failing_is_disabled,
    |f: crate::Fixture| async move {
        let ep = f
            .store
            .create_endpoint(&f.ws, &endpoint(None, 2), "wh_bad", "whsec_x", T0)
            .await
            .unwrap();
        f.store.accept_message(simple(&f.ws)).await.unwrap();
        let mut now = T0;
        for _ in 0..2 {
            let jobs = claim_deliveries(&f, now, 10).await;
            assert_eq!(jobs.len(), 1);
            now = now.plus(Duration::from_secs(5));
            f.store
                .complete_webhook_attempt(report(&jobs[0], 503, WebhookOutcome::RetryAt(now)))
                .await
                .unwrap();
        }
        let after = f.store.get_endpoint(&f.ws, &ep.id).await.unwrap().unwrap();
        assert!(!after.enabled, "disabled after 2 failures in a row");
        assert!(claim_deliveries(&f, now, 10).await.is_empty());
    }
);

conformance!(
    consent_has_a_history_and_suppresses_queued_messages,
    |f: crate::Fixture| async move {
        let change = |state: &str, source: &str| ConsentChange {
            workspace_id: f.ws.clone(),
            phone: "+14155550123".into(),
            channel: "sms".into(),
            state: state.into(),
            source: source.into(),
            jurisdiction: Some("US-TCPA".into()),
            detail: None,
            at: T0,
        };
        f.store.accept_message(simple(&f.ws)).await.unwrap();
        assert!(
            f.store
                .change_consent(change("opted_out", "api"))
                .await
                .unwrap()
        );
        assert!(
            !f.store
                .change_consent(change("opted_out", "api"))
                .await
                .unwrap(),
            "the same state again is no change"
        );
        // Refused at submit, suppressed at claim.
        assert!(matches!(
            f.store
                .accept_message(request(
                    &f.ws,
                    json!({"to": "+14155550123", "body": "again"}),
                    "h2"
                ))
                .await
                .unwrap(),
            AcceptOutcome::OptedOut
        ));
        assert!(f.store.claim_due(T0, 10, LEASE).await.unwrap().is_empty());
        let c = f
            .store
            .contact_consent(&f.ws, "+14155550123")
            .await
            .unwrap();
        assert_eq!(c.current[0].state, "opted_out");
        assert!(
            f.store
                .change_consent(change("opted_in", "keyword"))
                .await
                .unwrap()
        );
        let c = f
            .store
            .contact_consent(&f.ws, "+14155550123")
            .await
            .unwrap();
        assert_eq!(c.current[0].state, "opted_in");
        // Every request is in the history, the repeated one too.
        let states: Vec<&str> = c.history.iter().map(|h| h.state.as_str()).collect();
        assert_eq!(states, ["opted_out", "opted_out", "opted_in"]);
        // An import of many in one transaction.
        let many: Vec<ConsentChange> = (0..50)
            .map(|i| ConsentChange {
                phone: format!("+1415555{i:04}"),
                source: "import".into(),
                ..change("opted_out", "import")
            })
            .collect();
        let (changed, unchanged) = f.store.import_consent(many.clone()).await.unwrap();
        assert_eq!((changed, unchanged), (50, 0));
        let again = f.store.import_consent(many).await.unwrap();
        assert_eq!(
            again,
            (0, 50),
            "importing the same list twice changes nothing"
        );
        let page = f
            .store
            .list_contacts(&f.ws, Some("opted_out"), None, 100)
            .await
            .unwrap();
        assert_eq!(page.len(), 50);
    }
);

conformance!(
    inbound_messages_are_deduplicated_and_linked_to_the_conversation,
    |f: crate::Fixture| async move {
        let AcceptOutcome::Created(out) = f.store.accept_message(simple(&f.ws)).await.unwrap()
        else {
            panic!()
        };
        let n = NewInbound {
            workspace_id: f.ws.clone(),
            from: "+14155550123".into(),
            to: Some("Switchboard".into()),
            channel: "sms".into(),
            text: "STOP".into(),
            media_urls: Vec::new(),
            provider_id: "pr_sim".into(),
            provider_message_id: Some("IN1".into()),
            keyword: Some("stop".into()),
            now: T0,
        };
        let first = f.store.record_inbound(n.clone()).await.unwrap();
        let switchboard_store::InboundOutcome::Stored {
            inbound,
            consent_changed,
        } = first
        else {
            panic!("stored")
        };
        assert!(consent_changed);
        assert_eq!(
            inbound.conversation_message_id.as_deref(),
            Some(out.id.as_str())
        );
        assert!(matches!(
            f.store.record_inbound(n).await.unwrap(),
            switchboard_store::InboundOutcome::Duplicate(_)
        ));
        let list = f.store.list_inbound(&f.ws, None, None, 10).await.unwrap();
        assert_eq!(list.len(), 1);
        let c = f
            .store
            .contact_consent(&f.ws, "+14155550123")
            .await
            .unwrap();
        assert_eq!(c.current[0].state, "opted_out");
    }
);

conformance!(
    template_names_are_unique_per_workspace,
    |f: crate::Fixture| async move {
        let t = |id: &str, name: &str| TemplateRecord {
            id: id.into(),
            workspace_id: f.ws.clone(),
            name: name.into(),
            body: "Hi {{name}}".into(),
            variants: Default::default(),
            created_at: T0,
            updated_at: T0,
        };
        assert!(
            f.store
                .create_template(t("tpl_1", "hello"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            f.store
                .create_template(t("tpl_2", "hello"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            f.store
                .create_template(t("tpl_2", "bye"))
                .await
                .unwrap()
                .is_some()
        );
        // Renaming onto a taken name is refused; the store stays usable.
        assert_eq!(
            f.store.update_template(t("tpl_2", "hello")).await.unwrap(),
            Some(Err(()))
        );
        assert_eq!(
            f.store.update_template(t("tpl_9", "x")).await.unwrap(),
            None
        );
        let renamed = f
            .store
            .update_template(t("tpl_2", "farewell"))
            .await
            .unwrap();
        assert!(matches!(renamed, Some(Ok(ref r)) if r.name == "farewell"));
        assert_eq!(f.store.list_templates(&f.ws).await.unwrap().len(), 2);
        assert!(f.store.delete_template(&f.ws, "hello").await.unwrap());
        assert!(
            f.store
                .get_template(&f.ws, "tpl_1")
                .await
                .unwrap()
                .is_none()
        );
    }
);

conformance!(
    a_provider_throughput_limit_is_a_token_bucket,
    |f: crate::Fixture| async move {
        f.store
            .set_provider_rate("pr_sim", Some((10.0, 10.0)))
            .await
            .unwrap();
        for i in 0..40 {
            f.store
                .accept_message(request(
                    &f.ws,
                    json!({"to": "+14155550123", "body": format!("m{i}")}),
                    &format!("h{i}"),
                ))
                .await
                .unwrap();
        }
        let claim = |ms: u64| {
            let store = f.store.clone();
            async move {
                store
                    .claim_due(T0.plus(Duration::from_millis(ms)), 100, LEASE)
                    .await
                    .unwrap()
                    .len()
            }
        };
        assert_eq!(claim(0).await, 10, "the full burst");
        assert_eq!(claim(0).await, 0, "then nothing until tokens come back");
        assert_eq!(claim(500).await, 5, "10/s: five in half a second");
        assert_eq!(claim(10_000).await, 10, "never more than the burst");
        // Removing the limit releases the rest at once.
        f.store.set_provider_rate("pr_sim", None).await.unwrap();
        assert_eq!(claim(10_000).await, 15);
    }
);

conformance!(
    console_sessions_end_by_time_by_sign_out_and_with_their_key,
    |f: crate::Fixture| async move {
        use switchboard_store::ConsoleSession;
        let key = f
            .store
            .create_api_key(&f.ws, "keyhash", "…abcd", T0)
            .await
            .unwrap();
        let session = |hash: &str, ws: bool| ConsoleSession {
            id_hash: hash.to_owned(),
            workspace_id: ws.then(|| f.ws.clone()),
            key_id: ws.then(|| key.id.clone()),
            csrf_token: format!("csrf-{hash}"),
            created_at: T0,
            last_seen_at: T0,
            expires_at: T0.plus(Duration::from_secs(3600)),
        };
        f.store.create_session(session("a", true)).await.unwrap();
        f.store
            .create_session(session("admin", false))
            .await
            .unwrap();
        let found = f.store.find_session("a", T0).await.unwrap().unwrap();
        assert_eq!(found, session("a", true));
        assert!(f.store.find_session("nope", T0).await.unwrap().is_none());
        // Past its end it is gone; a touch moves the end.
        let later = T0.plus(Duration::from_secs(3601));
        assert!(f.store.find_session("a", later).await.unwrap().is_none());
        f.store
            .touch_session("a", T0.plus(Duration::from_secs(60)), later.plus(LEASE))
            .await
            .unwrap();
        let touched = f.store.find_session("a", later).await.unwrap().unwrap();
        assert_eq!(touched.last_seen_at, T0.plus(Duration::from_secs(60)));
        // Revoking the key ends its sessions, not the admin's.
        f.store.revoke_api_key(&f.ws, &key.id, T0).await.unwrap();
        assert!(f.store.find_session("a", T0).await.unwrap().is_none());
        assert!(f.store.find_session("admin", T0).await.unwrap().is_some());
        f.store.delete_session("admin").await.unwrap();
        assert!(f.store.find_session("admin", T0).await.unwrap().is_none());
    }
);

conformance!(
    console_stats_count_by_status_bucket_queue_and_provider,
    |f: crate::Fixture| async move {
        // Three messages: one delivered, one throttled then waiting, one
        // still queued (made later, in the last bucket).
        for (to, hash) in [("+14155550123", "a"), ("+14155550124", "b")] {
            f.store
                .accept_message(request(&f.ws, json!({"to": to, "body": "hi"}), hash))
                .await
                .unwrap();
        }
        let claimed = f.store.claim_due(T0, 10, LEASE).await.unwrap();
        assert_eq!(claimed.len(), 2);
        for (i, c) in claimed.iter().enumerate() {
            let outcome = if i == 0 {
                AttemptOutcome::Accepted {
                    provider_message_id: "S1".into(),
                }
            } else {
                AttemptOutcome::Retry {
                    class: switchboard_core::ErrorClass::Throttled,
                    code: "throttled".into(),
                    message: "slow down".into(),
                    next_at: T0.plus(Duration::from_secs(60)),
                }
            };
            f.store
                .complete_attempt(AttemptReport {
                    message_id: c.id.clone(),
                    attempt: 1,
                    provider_id: c.provider_id.clone(),
                    started_at: T0,
                    finished_at: T0,
                    outcome,
                })
                .await
                .unwrap();
        }
        f.store
            .apply_receipt("pr_sim", "S1", ReceiptKind::Delivered, None, None, T0)
            .await
            .unwrap();
        let mut late = request(&f.ws, json!({"to": "+14155550125", "body": "later"}), "c");
        late.now = T0.plus(Duration::from_secs(3000));
        f.store.accept_message(late).await.unwrap();

        let until = T0.plus(Duration::from_secs(3300));
        let s = f
            .store
            .workspace_stats(&f.ws, until.minus(Duration::from_secs(3600)), until, 12)
            .await
            .unwrap();
        let count = |list: &[(switchboard_core::Status, u64)], st: &str| {
            list.iter()
                .find(|(s, _)| s.as_str() == st)
                .map_or(0, |(_, n)| *n)
        };
        assert_eq!(count(&s.by_status, "delivered"), 1);
        assert_eq!(count(&s.by_status, "queued"), 2);
        assert_eq!(count(&s.queue, "queued"), 2);
        // T0 is 300 s into the window: bucket 1 of 12 (300 s each); the
        // late message is in bucket 11.
        let mut buckets: Vec<(u32, &str, u64)> = s
            .series
            .iter()
            .map(|(b, st, n)| (*b, st.as_str(), *n))
            .collect();
        buckets.sort();
        assert_eq!(
            buckets,
            vec![(1, "delivered", 1), (1, "queued", 1), (11, "queued", 1)]
        );
        assert_eq!(s.providers.len(), 1);
        let p = &s.providers[0];
        assert_eq!(
            (p.provider_id.as_str(), p.attempts, p.errors, p.throttled),
            ("pr_sim", 2, 1, 1)
        );
        // Another workspace sees none of it; a window before it all is empty.
        let other = f.store.create_workspace("other", T0).await.unwrap().id;
        let none = f
            .store
            .workspace_stats(&other, T0, until, 12)
            .await
            .unwrap();
        assert!(none.by_status.is_empty() && none.providers.is_empty());
        let before = f
            .store
            .workspace_stats(
                &f.ws,
                T0.minus(Duration::from_secs(7200)),
                T0.minus(Duration::from_secs(3600)),
                12,
            )
            .await
            .unwrap();
        assert!(before.series.is_empty());

        // Conversations: both directions, latest first.
        f.store
            .record_inbound(NewInbound {
                workspace_id: f.ws.clone(),
                from: "+14155550123".into(),
                to: Some("Switchboard".into()),
                channel: "sms".into(),
                text: "thanks".into(),
                media_urls: Vec::new(),
                provider_id: "pr_sim".into(),
                provider_message_id: Some("IN9".into()),
                keyword: None,
                now: T0.plus(Duration::from_secs(3200)),
            })
            .await
            .unwrap();
        let threads = f
            .store
            .conversations(&f.ws, T0.minus(Duration::from_secs(60)), 10)
            .await
            .unwrap();
        let view: Vec<(&str, u64, u64)> = threads
            .iter()
            .map(|c| (c.phone.as_str(), c.outbound, c.inbound))
            .collect();
        assert_eq!(
            view,
            vec![
                ("+14155550123", 1, 1),
                ("+14155550125", 1, 0),
                ("+14155550124", 1, 0)
            ]
        );
        assert_eq!(threads[0].last_at, T0.plus(Duration::from_secs(3200)));
        assert_eq!(f.store.conversations(&f.ws, T0, 1).await.unwrap().len(), 1);
    }
);

conformance!(
    webhook_results_written_together_decide_as_they_would_one_at_a_time,
    |f: crate::Fixture| async move {
        let ep = f
            .store
            .create_endpoint(&f.ws, &endpoint(None, 5), "wh_batch", "whsec_b", T0)
            .await
            .unwrap();
        for _ in 0..3 {
            f.store.accept_message(simple(&f.ws)).await.unwrap();
        }
        // Three messages, three ordering keys: three deliveries out at once.
        let jobs = claim_deliveries(&f, T0, 10).await;
        assert_eq!(jobs.len(), 3);
        let later = T0.plus(Duration::from_secs(1));
        f.store
            .complete_webhook_attempt(report(&jobs[0], 503, WebhookOutcome::RetryAt(later)))
            .await
            .unwrap();
        let failing = f.store.get_endpoint(&f.ws, &ep.id).await.unwrap().unwrap();
        assert_eq!(failing.consecutive_failures, 1);
        // Two successes together: both delivered, the failure count reset.
        let results = f
            .store
            .complete_webhook_attempts(vec![
                report(&jobs[1], 200, WebhookOutcome::Succeeded),
                report(&jobs[2], 204, WebhookOutcome::Succeeded),
            ])
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let healthy = f.store.get_endpoint(&f.ws, &ep.id).await.unwrap().unwrap();
        assert_eq!(healthy.consecutive_failures, 0);
        assert!(healthy.enabled);
        let attempts = f
            .store
            .webhook_attempts(&f.ws, &ep.id, 10)
            .await
            .unwrap()
            .unwrap();
        let mut codes: Vec<Option<u16>> = attempts.iter().map(|a| a.status_code).collect();
        codes.sort_unstable();
        assert_eq!(codes, [Some(200), Some(204), Some(503)]);
        assert!(
            attempts
                .iter()
                .all(|a| a.response_body.as_deref() == Some("ok"))
        );
        // Only the failed delivery is due again.
        let again = claim_deliveries(&f, later, 10).await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].delivery_id, jobs[0].delivery_id);
        // The same delivery reported twice in one write: the first report
        // settles it, the second is logged and changes nothing.
        let results = f
            .store
            .complete_webhook_attempts(vec![
                report(&again[0], 200, WebhookOutcome::Succeeded),
                report(&again[0], 200, WebhookOutcome::Succeeded),
            ])
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let attempts = f
            .store
            .webhook_attempts(&f.ws, &ep.id, 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(attempts.len(), 5);
        assert!(
            claim_deliveries(&f, later.plus(Duration::from_secs(60)), 10)
                .await
                .is_empty(),
            "every delivery settled"
        );
        // A success and a failure together are applied in order: the
        // failure after the success counts.
        f.store.accept_message(simple(&f.ws)).await.unwrap();
        f.store.accept_message(simple(&f.ws)).await.unwrap();
        let at = later.plus(Duration::from_secs(120));
        let mixed = claim_deliveries(&f, at, 10).await;
        assert_eq!(mixed.len(), 2);
        let results = f
            .store
            .complete_webhook_attempts(vec![
                report(&mixed[0], 200, WebhookOutcome::Succeeded),
                report(&mixed[1], 500, WebhookOutcome::RetryAt(at)),
            ])
            .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let after = f.store.get_endpoint(&f.ws, &ep.id).await.unwrap().unwrap();
        assert_eq!(after.consecutive_failures, 1);
    }
);

conformance!(
    a_delivery_in_flight_is_claimed_again_when_its_lease_ends_and_not_before,
    |f: crate::Fixture| async move {
        f.store
            .create_endpoint(&f.ws, &endpoint(None, 5), "wh_lease", "whsec_l", T0)
            .await
            .unwrap();
        f.store.accept_message(simple(&f.ws)).await.unwrap();
        let first = claim_deliveries(&f, T0, 10).await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].attempt, 1);
        let just_before = T0.plus(LEASE - Duration::from_millis(1));
        assert!(claim_deliveries(&f, T0, 10).await.is_empty());
        assert!(claim_deliveries(&f, just_before, 10).await.is_empty());
        // Its result never came: due again at the lease's end.
        let ended = T0.plus(LEASE);
        let again = claim_deliveries(&f, ended, 10).await;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].delivery_id, first[0].delivery_id);
        assert_eq!(again[0].attempt, 2);
        assert_eq!(again[0].event, first[0].event);
        // A late result of the first attempt and the second's both land;
        // the delivery is done and nothing is due.
        f.store
            .complete_webhook_attempt(report(&first[0], 200, WebhookOutcome::Succeeded))
            .await
            .unwrap();
        f.store
            .complete_webhook_attempt(report(&again[0], 200, WebhookOutcome::Succeeded))
            .await
            .unwrap();
        let far = ended.plus(LEASE).plus(LEASE);
        assert!(claim_deliveries(&f, far, 10).await.is_empty());
        assert_eq!(f.store.next_webhook_due_at(ended).await.unwrap(), None);
    }
);

conformance!(
    the_next_webhook_due_time_is_a_retry_or_a_lease_end_after_now,
    |f: crate::Fixture| async move {
        f.store
            .create_endpoint(&f.ws, &endpoint(None, 5), "wh_due", "whsec_d", T0)
            .await
            .unwrap();
        assert_eq!(f.store.next_webhook_due_at(T0).await.unwrap(), None);
        f.store.accept_message(simple(&f.ws)).await.unwrap();
        // `message.sending` waits behind `message.queued`: due, not claimable.
        f.store.claim_due(T0, 10, LEASE).await.unwrap();
        assert_eq!(
            f.store.next_webhook_due_at(T0).await.unwrap(),
            None,
            "what is due by now is the claim's, not a time to wait for"
        );
        let jobs = claim_deliveries(&f, T0, 10).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            f.store.next_webhook_due_at(T0).await.unwrap(),
            Some(T0.plus(LEASE)),
            "in flight: due again when its lease ends"
        );
        let retry = T0.plus(Duration::from_secs(5));
        f.store
            .complete_webhook_attempt(report(&jobs[0], 503, WebhookOutcome::RetryAt(retry)))
            .await
            .unwrap();
        assert_eq!(f.store.next_webhook_due_at(T0).await.unwrap(), Some(retry));
        assert_eq!(f.store.next_webhook_due_at(retry).await.unwrap(), None);
    }
);

conformance!(
    a_queued_acceptance_is_stored_for_its_subscribers_and_otherwise_shown_from_its_row,
    |f: crate::Fixture| async move {
        use switchboard_core::{EventId, MessageId};
        use switchboard_store::Redelivery;
        let accepted = |id: &MessageId| EventId::of_acceptance(id).to_string();
        let created = |o: AcceptOutcome| match o {
            AcceptOutcome::Created(a) => a.id,
            other => panic!("a new message: {other:?}"),
        };
        // Nobody subscribes to `message.queued`: the row says it all.
        let failed_only = f
            .store
            .create_endpoint(
                &f.ws,
                &endpoint(Some(vec!["message.failed"]), 5),
                "wh_f",
                "whsec_f",
                T0,
            )
            .await
            .unwrap();
        let a = created(f.store.accept_message(simple(&f.ws)).await.unwrap());
        let timeline = f
            .store
            .get_message(&f.ws, &a)
            .await
            .unwrap()
            .unwrap()
            .events;
        assert_eq!(timeline.len(), 1, "{timeline:?}");
        let e = &timeline[0];
        assert_eq!(
            (
                e.id.as_str(),
                e.event_type.as_str(),
                e.status.as_str(),
                e.detail.as_deref(),
                e.created_at
            ),
            (
                accepted(&a).as_str(),
                "message.queued",
                "queued",
                Some("accepted"),
                T0
            )
        );
        assert!(claim_deliveries(&f, T0, 100).await.is_empty());

        // An endpoint subscribes: the next acceptance is stored and fanned out.
        let all = f
            .store
            .create_endpoint(&f.ws, &endpoint(None, 5), "wh_all", "whsec_a", T0)
            .await
            .unwrap();
        let b = created(
            f.store
                .accept_message(request(
                    &f.ws,
                    json!({"to": "+14155550124", "body": "b"}),
                    "b",
                ))
                .await
                .unwrap(),
        );
        let jobs = claim_deliveries(&f, T0, 100).await;
        let got: Vec<(&str, &str, &str)> = jobs
            .iter()
            .map(|j| {
                (
                    j.endpoint.id.as_str(),
                    j.event.id.as_str(),
                    j.event.event_type.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [(all.id.as_str(), accepted(&b).as_str(), "message.queued")]
        );
        assert_eq!(jobs[0].event.data.value()["id"], b.as_str());
        let timeline = f
            .store
            .get_message(&f.ws, &b)
            .await
            .unwrap()
            .unwrap()
            .events;
        assert_eq!(
            timeline.len(),
            1,
            "stored and implied are one event: {timeline:?}"
        );
        f.store
            .complete_webhook_attempt(report(&jobs[0], 200, WebhookOutcome::Succeeded))
            .await
            .unwrap();

        // The first acceptance, redelivered by its id: stored now, and sent
        // with its message's data.
        let again = |endpoint: &str, what: Redelivery| {
            let (store, ws, endpoint) = (f.store.clone(), f.ws.clone(), endpoint.to_owned());
            async move { store.redeliver(&ws, &endpoint, &what, T0).await.unwrap() }
        };
        assert_eq!(
            again(&all.id, Redelivery::Event(accepted(&a))).await,
            Some(1)
        );
        let jobs = claim_deliveries(&f, T0, 100).await;
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (
                jobs[0].event.id.as_str(),
                jobs[0].event.data.value()["id"].as_str()
            ),
            (accepted(&a).as_str(), Some(a.as_str()))
        );
        f.store
            .complete_webhook_attempt(report(&jobs[0], 200, WebhookOutcome::Succeeded))
            .await
            .unwrap();
        assert_eq!(
            f.store
                .get_message(&f.ws, &a)
                .await
                .unwrap()
                .unwrap()
                .events
                .len(),
            1
        );
        // An id that names no message of the workspace queues nothing.
        let stranger = EventId::of_acceptance(&MessageId::new_at(T0)).to_string();
        assert_eq!(again(&all.id, Redelivery::Event(stranger)).await, Some(0));

        // A range: both acceptances once each, to the endpoint that
        // subscribes to them, none to the one that does not.
        let c = created(
            f.store
                .accept_message(request(
                    &f.ws,
                    json!({"to": "+14155550125", "body": "c"}),
                    "c",
                ))
                .await
                .unwrap(),
        );
        let range = || Redelivery::Range {
            since: T0,
            until: T0.plus(Duration::from_secs(1)),
        };
        assert_eq!(again(&failed_only.id, range()).await, Some(0));
        assert_eq!(again(&all.id, range()).await, Some(3));
        let mut ids: Vec<String> = claim_deliveries(&f, T0, 100)
            .await
            .into_iter()
            .map(|j| j.event.id)
            .collect();
        ids.sort();
        let mut want = vec![accepted(&a), accepted(&b), accepted(&c)];
        want.sort();
        assert_eq!(ids, want);
        assert_eq!(
            again(&all.id, range()).await,
            Some(3),
            "no event stored twice"
        );
    }
);

conformance!(
    a_claimed_delivery_carries_its_message_as_of_the_event,
    |f: crate::Fixture| async move {
        // Only the terminal events are subscribed to: the others of the
        // message are recorded and fan out to nobody.
        f.store
            .create_endpoint(
                &f.ws,
                &endpoint(Some(vec!["message.delivered", "message.failed"]), 5),
                "wh_end",
                "whsec_e",
                T0,
            )
            .await
            .unwrap();
        let AcceptOutcome::Created(a) = f
            .store
            .accept_message(request(
                &f.ws,
                json!({
                    "to": "+14155550125",
                    "body": "Your order shipped",
                    "client_ref": "order-77",
                    "metadata": {"crm_id": "c-1", "n": 2},
                    "priority": "high",
                }),
                "h",
            ))
            .await
            .unwrap()
        else {
            panic!("created")
        };
        send_the_only_queued(&f, "P77").await;
        assert!(
            claim_deliveries(&f, T0, 100).await.is_empty(),
            "nobody subscribes to sending or sent"
        );
        f.store
            .apply_receipt("pr_sim", "P77", ReceiptKind::Delivered, None, None, T0)
            .await
            .unwrap();
        let jobs = claim_deliveries(&f, T0, 100).await;
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(job.endpoint.id, "wh_end");
        assert_eq!(job.attempt, 1);
        assert_eq!(job.trigger, "scheduled");
        assert_eq!(job.event.event_type, "message.delivered");
        assert_eq!(job.event.workspace_id, f.ws);
        assert_eq!(job.event.created_at, T0);
        assert_eq!(
            job.event.data.value(),
            json!({
                "object": "message",
                "id": a.id.as_str(),
                "to": "+14155550125",
                "from": "Switchboard",
                "channel": "sms",
                "body": "Your order shipped",
                "media_urls": [],
                "status": "delivered",
                "encoding": "GSM-7",
                "segments": 1,
                "client_ref": "order-77",
                "metadata": {"crm_id": "c-1", "n": 2},
                "category": "transactional",
                "priority": "high",
                "provider_id": "pr_sim",
                "provider_message_id": "P77",
                "error_code": null,
                "detail": null,
                "created_at": T0.to_rfc3339(),
            })
        );
        // Leased: not claimed again until its lease ends.
        assert!(claim_deliveries(&f, T0, 100).await.is_empty());
    }
);

conformance!(
    a_range_of_more_events_than_one_statement_carries_is_redelivered_whole_and_once,
    |f: crate::Fixture| async move {
        use switchboard_store::Redelivery;
        // 150 acceptances: on SQLite five statements' runs (64, 64, 16, 4
        // and 2), on PostgreSQL one.
        let all = f
            .store
            .create_endpoint(&f.ws, &endpoint(None, 5), "wh_all", "whsec_a", T0)
            .await
            .unwrap();
        for _ in 0..150 {
            f.store.accept_message(simple(&f.ws)).await.unwrap();
        }
        let first = claim_deliveries(&f, T0, 1_000).await;
        assert_eq!(first.len(), 150);
        for j in &first {
            f.store
                .complete_webhook_attempt(report(j, 200, WebhookOutcome::Succeeded))
                .await
                .unwrap();
        }
        assert!(claim_deliveries(&f, T0, 1_000).await.is_empty());
        let range = || Redelivery::Range {
            since: T0,
            until: T0.plus(Duration::from_secs(1)),
        };
        let redeliver = || async {
            f.store
                .redeliver(&f.ws, &all.id, &range(), T0)
                .await
                .unwrap()
        };
        // Every event once more, as the same delivery (its id), manual.
        assert_eq!(redeliver().await, Some(150));
        let again = claim_deliveries(&f, T0, 1_000).await;
        assert_eq!(again.len(), 150);
        assert!(again.iter().all(|j| j.trigger == "manual"), "{again:?}");
        let mut ids: Vec<&str> = again.iter().map(|j| j.delivery_id.as_str()).collect();
        ids.sort_unstable();
        let mut before: Vec<&str> = first.iter().map(|j| j.delivery_id.as_str()).collect();
        before.sort_unstable();
        assert_eq!(ids, before);
        // Again while those are leased: their leases end, and they are
        // claimed once each, not twice.
        assert_eq!(redeliver().await, Some(150));
        let third = claim_deliveries(&f, T0, 1_000).await;
        assert_eq!(third.len(), 150);
        assert!(claim_deliveries(&f, T0, 1_000).await.is_empty());
    }
);
