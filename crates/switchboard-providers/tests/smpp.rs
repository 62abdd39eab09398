//! The SMPP 3.4 client against the fake SMSC on 127.0.0.1: bind, submit,
//! receipts and replies, concatenation, the window, throttling, a dropped
//! link, a refused bind, error statuses and PDUs that cannot be read.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard_core::{ErrorClass, ReceiptKind};
use switchboard_providers::callback::{CallbackItem, Delivered};
use switchboard_providers::smpp::pdu::{self, Pdu, status};
use switchboard_providers::smpp::smsc::{Behaviour, FakeSmsc};
use switchboard_providers::smpp::{Smpp, SmppConfig, text};
use switchboard_providers::{Provider, SendRequest};
use tokio::sync::mpsc;

fn config(smsc: &FakeSmsc, password: &str, window: usize) -> SmppConfig {
    let mut cfg = SmppConfig::from_spec(
        &json!({"host": "127.0.0.1", "port": smsc.addr().port(), "system_id": "switchboard", "window": window, "response_timeout_ms": 2000}),
        &json!({"password": password}),
    )
    .unwrap();
    cfg.reconnect = (Duration::from_millis(50), Duration::from_millis(200));
    cfg
}

fn request(to: &str, body: &str) -> SendRequest {
    SendRequest {
        idempotency_key: "msg_1".into(),
        to: to.into(),
        from: "+14155550100".into(),
        channel: "sms".into(),
        body: body.into(),
        media_urls: Vec::new(),
        template: None,
    }
}

/// Starts a client whose sink answers `stored` for everything it gets.
fn client(cfg: SmppConfig, stored: bool) -> (Smpp, mpsc::Receiver<Delivered>) {
    let (tx, mut rx) = mpsc::channel::<Delivered>(64);
    let (seen_tx, seen_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            let (done, rest) = (d.done, d.items);
            let (fwd, _) = tokio::sync::oneshot::channel();
            let _ = done.send(stored);
            let _ = seen_tx
                .send(Delivered {
                    provider_id: d.provider_id,
                    items: rest,
                    done: fwd,
                })
                .await;
        }
    });
    (Smpp::start(cfg, "pr_smpp", Some(tx)), seen_rx)
}

async fn next_items(rx: &mut mpsc::Receiver<Delivered>) -> Vec<CallbackItem> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("something delivered")
        .expect("sink open")
        .items
}

#[tokio::test]
async fn binds_submits_and_reads_receipts_and_replies() {
    let smsc = FakeSmsc::start(Behaviour {
        receipts: true,
        ..Behaviour::default()
    })
    .await
    .unwrap();
    let (c, mut seen) = client(config(&smsc, "secret", 10), true);
    let id = c
        .send(&request("+14155550123", "Hello {world} €5"))
        .await
        .unwrap()
        .provider_message_id;
    assert_eq!(c.link_state(), "bound");
    let sub = &smsc.submitted()[0];
    assert_eq!(sub.message_id, id);
    assert_eq!(
        (
            sub.sm.dest_ton,
            sub.sm.dest_npi,
            sub.sm.destination_addr.as_str()
        ),
        (1, 1, "14155550123")
    );
    assert_eq!(sub.sm.source_addr, "14155550100");
    assert_eq!(sub.sm.registered_delivery, 1, "receipts are asked for");
    assert_eq!(sub.sm.data_coding, text::DC_DEFAULT);
    assert_eq!(text::gsm7_decode(&sub.sm.short_message), "Hello {world} €5");
    // The SMSC's receipt (TLVs and Appendix B text) becomes a delivered receipt.
    let items = next_items(&mut seen).await;
    assert!(
        matches!(&items[..], [CallbackItem::Receipt { provider_message_id, kind: ReceiptKind::Delivered, .. }] if *provider_message_id == id),
        "{items:?}"
    );
    // A failure receipt as text only, and an intermediate one that says nothing.
    assert_eq!(smsc.receipt(&id, "UNDELIV", false).await, Some(status::OK));
    let items = next_items(&mut seen).await;
    assert!(
        matches!(&items[..], [CallbackItem::Receipt { kind: ReceiptKind::Undelivered, error_code: Some(code), .. }] if code == "undeliverable"),
        "{items:?}"
    );
    assert_eq!(smsc.receipt(&id, "ACCEPTD", true).await, Some(status::OK));
    // A reply from a handset, in UCS-2.
    assert_eq!(
        smsc.mo("+14155550123", "+14155550100", "STOP 🙏").await,
        Some(status::OK)
    );
    let items = next_items(&mut seen).await;
    let [CallbackItem::Inbound(m)] = &items[..] else {
        panic!("{items:?}")
    };
    assert_eq!(
        (m.from.as_str(), m.to.as_str(), m.text.as_str()),
        ("+14155550123", "+14155550100", "STOP 🙏")
    );
}

#[tokio::test]
async fn a_deliver_sm_that_cannot_be_stored_is_not_acknowledged() {
    let smsc = FakeSmsc::start(Behaviour::default()).await.unwrap();
    let (c, _seen) = client(config(&smsc, "secret", 10), false);
    c.send(&request("+14155550123", "hi")).await.unwrap();
    assert_eq!(
        smsc.mo("+14155550123", "+14155550100", "hello").await,
        Some(status::X_T_APPN),
        "a temporary error: the SMSC delivers it again"
    );
}

#[tokio::test]
async fn a_400_character_ucs2_message_goes_as_concatenated_parts() {
    let smsc = FakeSmsc::start(Behaviour::default()).await.unwrap();
    let (c, mut seen) = client(config(&smsc, "secret", 10), true);
    let body: String = "Привет, мир! ".chars().cycle().take(400).collect();
    let head = c
        .send(&request("+14155550123", &body))
        .await
        .unwrap()
        .provider_message_id;
    let subs = smsc.submitted();
    assert_eq!(subs.len(), 6, "400 UCS-2 characters at 67 per part");
    assert_eq!(subs[0].message_id, head);
    let reference = subs[0].sm.short_message[3];
    let mut joined = String::new();
    for (i, s) in subs.iter().enumerate() {
        assert_eq!(s.sm.data_coding, text::DC_UCS2);
        assert_eq!(s.sm.esm_class, text::ESM_UDHI);
        assert_eq!(
            &s.sm.short_message[..6],
            &[5, 0, 3, reference, 6, u8::try_from(i + 1).unwrap()],
            "one reference, total and sequence in every part"
        );
        assert!(s.sm.short_message.len() <= 6 + 134);
        joined.push_str(&text::decode(
            &s.sm.short_message,
            s.sm.data_coding,
            s.sm.esm_class,
        ));
    }
    assert_eq!(joined, body);
    // The next message gets another reference.
    c.send(&request("+14155550123", &body)).await.unwrap();
    assert_ne!(smsc.submitted()[6].sm.short_message[3], reference);
    // A later part's failure fails the message (reported on the first part's id).
    assert_eq!(
        smsc.receipt(&subs[3].message_id, "UNDELIV", true).await,
        Some(0)
    );
    let items = next_items(&mut seen).await;
    assert!(
        matches!(&items[..], [CallbackItem::Receipt { provider_message_id, kind: ReceiptKind::Undelivered, .. }] if *provider_message_id == head),
        "{items:?}"
    );
}

#[tokio::test]
async fn the_window_bounds_outstanding_submits_and_throttling_slows_without_losing() {
    let smsc = FakeSmsc::start(Behaviour {
        answer_delay: Duration::from_millis(30),
        throttle_first: 4,
        ..Behaviour::default()
    })
    .await
    .unwrap();
    let (c, _seen) = client(config(&smsc, "secret", 3), true);
    let c = Arc::new(c);
    let started = tokio::time::Instant::now();
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.send(&request(&format!("+1415555{:04}", 1000 + i), "hi"))
                    .await
            })
        })
        .collect();
    for s in sends {
        s.await
            .unwrap()
            .expect("every message is accepted in the end");
    }
    assert!(
        smsc.max_outstanding() <= 3,
        "window of 3: {}",
        smsc.max_outstanding()
    );
    assert_eq!(smsc.throttled(), 4);
    let accepted: Vec<_> = smsc
        .submitted()
        .into_iter()
        .filter(|s| s.status == status::OK)
        .map(|s| s.sm.destination_addr)
        .collect();
    assert_eq!(accepted.len(), 20, "nothing lost");
    let mut unique = accepted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20, "nothing sent twice");
    // The pauses after each throttle answer slowed it down.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_dropped_link_reconnects_and_sending_resumes() {
    let smsc = FakeSmsc::start(Behaviour {
        drop_after: Some(2),
        ..Behaviour::default()
    })
    .await
    .unwrap();
    let (c, _seen) = client(config(&smsc, "secret", 10), true);
    c.send(&request("+14155550001", "one")).await.unwrap();
    // The SMSC takes the second and drops the link before answering: the
    // dispatcher gets a transport error (and retries; SMPP has no idempotency).
    let e = c.send(&request("+14155550002", "two")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transport, "{e}");
    c.send(&request("+14155550003", "three")).await.unwrap();
    assert_eq!(smsc.binds(), 2);
    // Kicked, and asked to unbind: it comes back both times.
    smsc.kick();
    rebound(&smsc, 3).await;
    c.send(&request("+14155550004", "four")).await.unwrap();
    assert!(smsc.unbind().await);
    rebound(&smsc, 4).await;
    c.send(&request("+14155550005", "five")).await.unwrap();
    assert_eq!(smsc.binds(), 4);
}

/// Waits until the client has bound `n` times in all.
async fn rebound(smsc: &FakeSmsc, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while smsc.binds() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} binds",
            smsc.binds()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_refused_bind_is_reported_and_retried() {
    let smsc = FakeSmsc::start(Behaviour::default()).await.unwrap();
    let (c, _seen) = client(config(&smsc, "wrong", 10), true);
    let e = c.send(&request("+14155550123", "hi")).await.unwrap_err();
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::Transport, "smpp_not_bound")
    );
    assert!(e.message.contains("wrong password"), "{e}");
    assert!(
        smsc.failed_binds() >= 2,
        "it keeps trying: {}",
        smsc.failed_binds()
    );
    // Fixed at the SMSC's side: the next attempt binds.
    smsc.set(|b| b.credentials.1 = "wrong".into());
    c.send(&request("+14155550123", "hi")).await.unwrap();
}

#[tokio::test]
async fn error_statuses_map_onto_classes() {
    let smsc = FakeSmsc::start(Behaviour {
        refuse: vec![
            ("15005550001".into(), status::INVDSTADR),
            ("15005550002".into(), status::SYSERR),
            ("15005550003".into(), 0x0000_0061),
        ],
        ..Behaviour::default()
    })
    .await
    .unwrap();
    let mut cfg = config(&smsc, "secret", 10);
    cfg.throttle_retries = 1;
    let (c, _seen) = client(cfg, true);
    for (to, class, code) in [
        ("+15005550001", ErrorClass::Permanent, "invalid_number"),
        (
            "+15005550002",
            ErrorClass::Transport,
            "upstream_unavailable",
        ),
        ("+15005550003", ErrorClass::Permanent, "provider_rejected"),
    ] {
        let e = c.send(&request(to, "x")).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (class, code), "{to}");
    }
    // Throttled past the retries: the dispatcher gets a throttle error.
    smsc.set(|b| b.throttle_first = 100);
    let e = c.send(&request("+14155550123", "x")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Throttled);
}

#[tokio::test]
async fn unreadable_pdus_get_a_generic_nack_and_broken_framing_a_new_link() {
    let smsc = FakeSmsc::start(Behaviour::default()).await.unwrap();
    let (c, _seen) = client(config(&smsc, "secret", 10), true);
    c.send(&request("+14155550123", "hi")).await.unwrap();
    // A well-framed PDU of an unknown command, and a deliver_sm cut short.
    assert!(smsc.send_raw(Pdu::empty(0x0000_0077, 0, 9).encode()).await);
    let mut short = Pdu::empty(pdu::cmd::DELIVER_SM, 0, 10).encode();
    short.extend_from_slice(b"\0\x01");
    let n = u32::try_from(short.len()).unwrap();
    short[..4].copy_from_slice(&n.to_be_bytes());
    assert!(smsc.send_raw(short).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while smsc.nacks() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} nacks",
            smsc.nacks()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(smsc.nacks(), 2);
    c.send(&request("+14155550123", "still here"))
        .await
        .unwrap();
    assert_eq!(smsc.binds(), 1);
    // A length no PDU can have: the framing is lost, so the link is rebuilt.
    assert!(smsc.send_raw(vec![0, 0, 0, 3]).await);
    rebound(&smsc, 2).await;
    c.send(&request("+14155550123", "again")).await.unwrap();
    assert_eq!(smsc.binds(), 2);
}

#[tokio::test]
async fn an_idle_link_is_kept_alive_with_enquire_link() {
    let smsc = FakeSmsc::start(Behaviour::default()).await.unwrap();
    let mut cfg = config(&smsc, "secret", 10);
    cfg.enquire_link = Duration::from_millis(150);
    let (c, _seen) = client(cfg, true);
    c.send(&request("+14155550123", "hi")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(smsc.enquiries() >= 2, "{}", smsc.enquiries());
    assert_eq!(c.link_state(), "bound");
    assert_eq!(smsc.binds(), 1);
}

#[tokio::test]
async fn receipts_that_name_ids_in_another_base_still_match() {
    // The fake SMSC answers ids in hex (`00000003E9`); this one reports them
    // in decimal, with leading zeros.
    let smsc = FakeSmsc::start(Behaviour::default()).await.unwrap();
    let mut cfg = SmppConfig::from_spec(
        &json!({"host": "127.0.0.1", "port": smsc.addr().port(), "system_id": "switchboard", "receipt_id_format": "decimal_in_receipts"}),
        &json!({"password": "secret"}),
    )
    .unwrap();
    cfg.reconnect = (Duration::from_millis(50), Duration::from_millis(200));
    let (c, mut seen) = client(cfg, true);
    let id = c
        .send(&request("+14155550123", "hi"))
        .await
        .unwrap()
        .provider_message_id;
    let hex = smsc.submitted()[0].message_id.clone();
    assert_eq!(
        id,
        u128::from_str_radix(&hex, 16).unwrap().to_string(),
        "kept in decimal"
    );
    assert_eq!(
        smsc.receipt(&format!("000{id}"), "DELIVRD", false).await,
        Some(0)
    );
    let items = next_items(&mut seen).await;
    assert!(
        matches!(&items[..], [CallbackItem::Receipt { provider_message_id, kind: ReceiptKind::Delivered, .. }] if *provider_message_id == id),
        "{items:?}"
    );
    let bad = SmppConfig::from_spec(
        &json!({"host": "h", "system_id": "s", "receipt_id_format": "octal"}),
        &json!({"password": "p"}),
    );
    assert_eq!(bad.unwrap_err().field, "config.receipt_id_format");
}
