//! The operator console, driven in headless Chromium against a real server:
//! sign-in, the send form and its live counter, a message's timeline
//! reaching `delivered`, a failed webhook attempt with its response body and
//! its redelivery, opting a contact out from the conversation, the other
//! pages, and the refusals (bad sign-in, expired session, forged posts).
//! Screenshots of every page land in `target/console-screenshots/`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::Browser;
use reqwest::Method;

use crate::harness::{ADMIN_TOKEN, TestApp, call, get, spawn_app};
use crate::receiver::Receiver;

/// Sends what is due, then lets the simulator's receipt come back and the
/// webhooks go out, without running the webhook retry schedule.
async fn pump(app: &TestApp) {
    for _ in 0..4 {
        app.worker.run_until_idle().await.unwrap();
        while app.webhooks.deliver_once().await.unwrap() > 0 {}
        app.clock.advance(Duration::from_millis(1_100));
    }
    app.worker.run_until_idle().await.unwrap();
    while app.webhooks.deliver_once().await.unwrap() > 0 {}
}

async fn sign_in(b: &Browser, app: &TestApp, secret: &str) {
    b.goto(&app.url("/console/")).await;
    b.element("#login-form").await;
    b.fill("#token", secret).await;
    b.click("#sign-in").await;
    b.ready("overview").await;
}

#[tokio::test]
async fn an_operator_sends_watches_redelivers_and_opts_out_in_the_browser() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let (_ws, key) = app.workspace("Console").await;
    // A CRM endpoint that is down for the first delivery.
    let crm = Receiver::start(vec![(500, "crm is down: database locked".into())]).await;
    let (_, endpoint) = call(&app, Method::POST, "/v1/webhooks", Some(&key), &json!({"url": crm.url, "event_types": ["message.delivered", "message.failed"], "retry_schedule": [3600], "description": "CRM"})).await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();

    // Sign-in: the console sends an unsigned visitor to the login page.
    b.goto(&app.url("/console/")).await;
    b.element("#login-form").await;
    assert!(b.url().await.ends_with("/console/login"));
    b.assert_labelled().await;
    b.screenshot("01-login").await;
    sign_in(&b, &app, &key).await;
    b.wait_text("#status-cards", "submitted").await;
    let cookie = b.cookie("sb_session").await.expect("session cookie");
    assert_eq!(cookie.len(), 64);
    b.screenshot("02-overview-empty").await;

    // Send from the form; the counter follows the text as it is typed.
    b.click("nav a[data-page=send]").await;
    b.ready("send").await;
    b.fill("#send-to", "+14155550101").await;
    b.fill("#send-body", "Your table is ready").await;
    b.wait_text("#send-counter", "19 characters · GSM-7 · 1 segment")
        .await;
    let long = "Ünïcödé ✓ ".repeat(8);
    b.fill("#send-body", &long).await;
    b.wait_text("#send-counter", "UCS-2 (Unicode) · 2 segments")
        .await;
    b.fill("#send-body", "Your table is ready ✓").await;
    b.wait_text("#send-counter", "UCS-2 (Unicode) · 1 segment")
        .await;
    b.fill("#send-ref", "booking-77").await;
    b.assert_labelled().await;
    b.screenshot("03-send").await;
    b.click("#send-submit").await;
    b.ready("messages").await;
    b.wait_text("#message-status", "queued").await;
    let url = b.url().await;
    let id = url.rsplit('/').next().unwrap().to_owned();
    assert!(id.starts_with("msg_"), "{url}");
    let stored = app.get_message(&key, &id).await;
    assert_eq!(stored["body"], "Your table is ready ✓");
    assert_eq!(stored["client_ref"], "booking-77");

    // The timeline follows the message to `delivered` on its own.
    pump(&app).await;
    b.wait_text("#message-status", "delivered").await;
    let timeline = b.wait_text("#timeline", "message.delivered").await;
    assert!(timeline.contains("message.sent"), "{timeline}");
    b.wait_text("table", "pr_sim").await;
    b.assert_labelled().await;
    b.screenshot("04-message-timeline").await;

    // A message scheduled for tomorrow can be canceled from its page.
    b.goto(&app.url("/console/#/send")).await;
    b.ready("send").await;
    b.fill("#send-to", "+14155550103").await;
    b.fill("#send-body", "See you tomorrow").await;
    // Tomorrow by the server's clock, in the browser's local time.
    b.js(&format!(
        "const d = new Date({}); const p = (n) => String(n).padStart(2, '0');
         document.getElementById('send-at').value = `${{d.getFullYear()}}-${{p(d.getMonth() + 1)}}-${{p(d.getDate())}}T${{p(d.getHours())}}:${{p(d.getMinutes())}}`;",
        app.clock_now_ms() + 86_400_000
    ))
    .await;
    b.click("#send-submit").await;
    b.wait_text("#message-status", "scheduled").await;
    b.click("#cancel-message").await;
    b.accept_dialog().await;
    b.wait_text("#message-status", "canceled").await;
    b.wait_text("#timeline", "message.canceled").await;

    // The CRM refused the delivered event: the attempt log shows its body.
    assert_eq!(crm.received().len(), 1, "{:?}", crm.event_types());
    b.click("nav a[data-page=webhooks]").await;
    b.ready("webhooks").await;
    b.wait_text("#view", "CRM").await;
    b.click(&format!("a[href='#/webhooks/{endpoint_id}']"))
        .await;
    b.ready("webhooks").await;
    b.wait_text("#attempt-log", "failure").await;
    assert_eq!(
        b.text("#attempt-log .response-body").await,
        "crm is down: database locked"
    );
    b.wait_text("#attempt-log", "500").await;
    b.assert_labelled().await;
    b.screenshot("05-webhook-failed-attempt").await;
    // Redeliver it: the CRM is back (the receiver answers 200 now).
    b.click("#attempt-log .redeliver").await;
    b.wait_text("#toast", "Queued for redelivery").await;
    while app.webhooks.deliver_once().await.unwrap() > 0 {}
    b.wait_text("#attempt-log", "success").await;
    let got = crm.received();
    assert_eq!(got.len(), 2, "redelivered once");
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[1].json()["event"], "message.delivered");
    b.screenshot("06-webhook-redelivered").await;
    // A test send goes out at once and is logged.
    b.click("#wh-test").await;
    b.wait_text("#toast", "Test sent: 200").await;
    b.wait_text("#attempt-log", "test").await;
    assert_eq!(crm.received().len(), 3);
    assert_eq!(crm.received()[2].json()["event"], "webhook.test");
    // Rotating shows the new secret once.
    b.click("#wh-rotate").await;
    b.accept_dialog().await;
    let secret = b.wait_text("#endpoint-secret", "whsec_").await;
    let (_, rotated) = get(&app, &format!("/v1/webhooks/{endpoint_id}"), &key).await;
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    assert!(
        !rotated.to_string().contains(&secret),
        "the secret is shown only once"
    );
    // A disabled endpoint gets a re-enable button.
    let (disabled, _) = call(
        &app,
        Method::PATCH,
        &format!("/v1/webhooks/{endpoint_id}"),
        Some(&key),
        &json!({"enabled": false}),
    )
    .await;
    assert_eq!(disabled, 200);
    b.goto(&app.url("/console/#/overview")).await;
    b.ready("overview").await;
    b.wait_text("#view", "disabled").await;
    b.goto(&app.url(&format!("/console/#/webhooks/{endpoint_id}")))
        .await;
    b.ready("webhooks").await;
    b.click("#wh-enable").await;
    b.wait_text("#toast", "Re-enabled").await;
    b.ready("webhooks").await;
    let (_, e) = get(&app, &format!("/v1/webhooks/{endpoint_id}"), &key).await;
    assert_eq!(e["enabled"], true);

    // The endpoint editor.
    b.fill("#wh-description", "CRM (production)").await;
    b.click("#wh-save").await;
    b.wait_text("#toast", "Saved").await;
    let (_, e) = get(&app, &format!("/v1/webhooks/{endpoint_id}"), &key).await;
    assert_eq!(e["description"], "CRM (production)");
    assert_eq!(
        e["event_types"],
        json!(["message.delivered", "message.failed"])
    );

    // A reply arrives; the conversation shows both; opt the contact out.
    let (inbound, _) = call(
        &app,
        Method::POST,
        "/v1/sim/inbound",
        Some(&key),
        &json!({"from": "+14155550101", "text": "Thanks, on my way"}),
    )
    .await;
    assert_eq!(inbound, 201);
    b.goto(&app.url("/console/#/conversations")).await;
    b.ready("conversations").await;
    b.wait_text("#view", "+14155550101").await;
    b.assert_labelled().await;
    b.screenshot("07-conversations").await;
    b.click("a[href='#/conversations/%2B14155550101']").await;
    b.ready("conversations").await;
    b.wait_text("#thread", "on my way").await;
    b.wait_text("#thread", "Your table is ready").await;
    b.click("#opt-out").await;
    b.accept_dialog().await;
    b.wait_text("#consent-state", "opted_out").await;
    b.wait_text("#consent", "console").await;
    b.assert_labelled().await;
    b.screenshot("08-conversation-opted-out").await;
    let (_, contact) = get(&app, "/v1/contacts/%2B14155550101", &key).await;
    assert_eq!(contact["consent"][0]["state"], "opted_out");
    assert_eq!(contact["consent"][0]["source"], "api");
    // Sending to it now is refused with the API's own error, in the form.
    b.goto(&app.url("/console/#/send")).await;
    b.ready("send").await;
    b.fill("#send-to", "+14155550101").await;
    b.fill("#send-body", "One more thing").await;
    b.click("#send-submit").await;
    b.wait_text("#send-error", "opted out").await;

    // Templates: the preview renders sample values and counts segments.
    b.goto(&app.url("/console/#/templates/new")).await;
    b.ready("templates").await;
    b.fill("#tpl-name", "ready").await;
    b.fill("#tpl-body", "Hi {{name}}, table {{table}} is ready")
        .await;
    b.wait_text("#tpl-preview", "Hi Ada, table sample is ready")
        .await;
    b.fill("#tpl-var-table", "12").await;
    b.wait_text("#tpl-preview", "Hi Ada, table 12 is ready")
        .await;
    b.wait_text("#tpl-counter", "1 segment").await;
    b.assert_labelled().await;
    b.screenshot("09-template-editor").await;
    b.click("#tpl-save").await;
    b.wait_text("h1", "Template ready").await;

    // Settings: quiet hours and a keyword reply.
    b.goto(&app.url("/console/#/settings")).await;
    b.ready("settings").await;
    b.fill("#set-timezone", "America/Chicago").await;
    b.fill("#set-reply-help", "Call us at 555-0100").await;
    b.click("#set-save").await;
    b.wait_text("#toast", "Settings saved").await;
    let (_, settings) = get(&app, "/v1/settings", &key).await;
    assert_eq!(settings["default_timezone"], "America/Chicago");
    assert_eq!(settings["keyword_replies"]["help"], "Call us at 555-0100");
    b.assert_labelled().await;
    b.screenshot("10-settings").await;

    // Search the messages; the overview counts what happened.
    b.goto(&app.url("/console/#/messages?status=delivered"))
        .await;
    b.ready("messages").await;
    b.wait_text("#message-results", &id).await;
    b.assert_labelled().await;
    b.screenshot("11-messages-search").await;
    b.goto(&app.url("/console/#/messages?client_ref=nothing-like-this"))
        .await;
    b.ready("messages").await;
    b.wait_text("#message-results", "No messages match").await;
    b.goto(&app.url("/console/#/overview")).await;
    b.ready("overview").await;
    b.wait_text("[data-stat=delivered] .n", "1").await;
    b.wait_text("[data-stat='delivery rate'] .n", "100.0%")
        .await;
    b.assert_labelled().await;
    b.screenshot("12-overview").await;
    // Everything the page loaded came from the gateway itself.
    let foreign = b
        .js("return performance.getEntriesByType('resource').map((e) => e.name).filter((n) => !n.startsWith(location.origin))")
        .await;
    assert_eq!(foreign, json!([]));
    let csp = app
        .client
        .get(app.url("/console/login"))
        .send()
        .await
        .unwrap()
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );

    // On a phone's screen: the menu folds away behind a button.
    b.resize(390, 844).await;
    b.wait_text("#menu-toggle", "Menu").await;
    assert_eq!(
        b.js("return getComputedStyle(document.getElementById('nav')).display")
            .await,
        "none"
    );
    b.screenshot("13-overview-phone").await;
    b.click("#menu-toggle").await;
    assert_eq!(
        b.js("return getComputedStyle(document.getElementById('nav')).display")
            .await,
        "block"
    );
    b.screenshot("14-menu-phone").await;
    b.resize(1280, 900).await;

    // Signing out ends the session: the old cookie no longer works.
    b.click("#logout-form button").await;
    b.element("#login-form").await;
    let (after, after_body) = as_page(&app, Method::GET, "/v1/messages", &cookie, None, None).await;
    assert_eq!(after, 401);
    assert_eq!(after_body["error"]["code"], "session_expired");
}

/// A request as the console's page makes it: the session cookie instead of
/// a key, with the CSRF token and the admin's workspace when given.
async fn as_page(
    app: &TestApp,
    method: Method,
    path_or_url: &str,
    cookie: &str,
    csrf: Option<&str>,
    workspace: Option<&str>,
) -> (u16, Value) {
    let url = if path_or_url.starts_with("http") {
        path_or_url.to_owned()
    } else {
        app.url(path_or_url)
    };
    let mut req = app
        .client
        .request(method.clone(), url)
        .header("cookie", format!("sb_session={cookie}"));
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    if let Some(ws) = workspace {
        req = req.header("x-switchboard-workspace", ws);
    }
    if method == Method::POST {
        req = req.json(&json!({}));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A page on another origin (another loopback port) whose form posts to the
/// gateway as soon as it loads: what a forged cross-site request looks like.
async fn hostile_page(target: &str) -> String {
    let html = format!(
        "<!doctype html><form id=f method=post action=\"{target}\"><input name=channel value=sms></form><script>document.getElementById('f').submit()</script>"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || {
        let html = html.clone();
        async move { axum::response::Html(html) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

#[tokio::test]
async fn the_console_refuses_bad_sign_ins_expired_sessions_and_forged_posts() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let app = spawn_app().await;
    let (ws, key) = app.workspace("Guarded").await;

    // A wrong key is refused with a message, and no session is made.
    b.goto(&app.url("/console/login")).await;
    b.fill("#token", "sk_not_a_real_key").await;
    b.click("#sign-in").await;
    b.wait_text("#login-error", "not valid").await;
    assert!(b.cookie("sb_session").await.is_none());
    b.screenshot("20-login-refused").await;

    // A sign-in post without the form's own token (another site's form).
    let forged = app
        .client
        .post(app.url("/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={key}&csrf=guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(
        forged
            .headers()
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap().starts_with("sb_session="))
    );

    // The admin signs in with the keyboard alone, sees the admin pages and
    // picks a workspace.
    b.goto(&app.url("/console/login")).await;
    b.fill("#token", ADMIN_TOKEN).await;
    b.press_enter("#token").await;
    b.ready("overview").await;
    b.wait_text("#view", "Choose a workspace").await;
    b.click("nav a[data-page=admin]").await;
    b.ready("admin").await;
    b.wait_text("#view", &ws).await;
    b.wait_text("#view", "pr_sim").await;
    b.assert_labelled().await;
    b.screenshot("21-admin").await;
    // A provider added from the admin page, given a rate limit, and made
    // the workspace's SMS route.
    b.fill("#prov-name", "Twilio US").await;
    b.fill(
        "#prov-config",
        r#"{"account_sid": "AC0123456789abcdef0123456789abcdef"}"#,
    )
    .await;
    b.fill("#prov-credentials", r#"{"auth_token": "tok-secret-9f3c"}"#)
        .await;
    b.click("#prov-add").await;
    b.wait_text("#toast", "Added pr_").await;
    b.ready("admin").await;
    b.click(".edit-provider").await;
    b.fill("#edit-rate", "5").await;
    b.fill("#edit-budget", "3").await;
    b.click("#edit-save").await;
    b.wait_text("#toast", "Provider saved").await;
    let (_, providers) = get(&app, "/v1/providers", ADMIN_TOKEN).await;
    let twilio = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "twilio")
        .expect("the provider was added")
        .clone();
    assert_eq!(twilio["rate_per_second"], 5.0);
    assert_eq!(twilio["attempt_budget"], 3);
    assert_eq!(twilio["credentials"]["auth_token"], "…9f3c");
    assert_eq!(
        twilio["config"]["account_sid"],
        "AC0123456789abcdef0123456789abcdef"
    );
    b.ready("admin").await;
    b.click("#view table button").await; // "Keys" of the first workspace
    b.click("#new-key").await;
    b.wait_text("#new-key-value", "sk_").await;
    b.js(&format!(
        "document.getElementById('sender-provider').value = '{}'",
        twilio["id"].as_str().unwrap()
    ))
    .await;
    b.fill("#sender-address", "+14155550100").await;
    b.click("#sender-default").await;
    b.click("#sender-add").await;
    b.wait_text("#senders", "+14155550100").await;
    let (_, senders) = get(&app, &format!("/v1/workspaces/{ws}/senders"), ADMIN_TOKEN).await;
    let route: Vec<(&str, bool)> = senders["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["address"].as_str().unwrap(),
                x["default"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(route.contains(&("+14155550100", true)), "{senders}");
    b.assert_labelled().await;
    b.screenshot("23-admin-keys-senders").await;
    b.js(&format!(
        "const p = document.getElementById('workspace-picker'); p.value = '{ws}'; p.dispatchEvent(new Event('change'));"
    ))
    .await;
    b.goto(&app.url("/console/#/overview")).await;
    b.ready("overview").await;
    b.wait_text("#status-cards", "submitted").await;

    // Another site's page posts a form to the gateway: the session cookie
    // is SameSite=Strict and the post carries no CSRF token, so nothing
    // changes.
    let phone = "+14155550102";
    let target = app.url("/v1/contacts/%2B14155550102/opt-out");
    b.goto(&hostile_page(&target).await).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, contact) = get(&app, "/v1/contacts/%2B14155550102", &key).await;
    assert_eq!(contact["consent"], json!([]), "{phone} was not opted out");

    // The same post with the session cookie but without the token: 403.
    b.goto(&app.url("/console/#/overview")).await;
    b.ready("overview").await;
    let cookie = b.cookie("sb_session").await.unwrap();
    let csrf = b
        .js("return document.querySelector('meta[name=csrf-token]').content")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let (no_token, no_token_body) =
        as_page(&app, Method::POST, &target, &cookie, None, Some(&ws)).await;
    assert_eq!(no_token, 403);
    assert_eq!(no_token_body["error"]["code"], "csrf_failed");
    let (wrong_token, _) = as_page(
        &app,
        Method::POST,
        &target,
        &cookie,
        Some(&"0".repeat(64)),
        Some(&ws),
    )
    .await;
    assert_eq!(wrong_token, 403);
    // With the token it is the console's own request, and it works.
    let (with_token, _) =
        as_page(&app, Method::POST, &target, &cookie, Some(&csrf), Some(&ws)).await;
    assert_eq!(with_token, 200);
    // Reads need no token; a workspace key's session cannot use admin routes.
    let (read, _) = as_page(&app, Method::GET, "/v1/workspaces", &cookie, None, None).await;
    assert_eq!(read, 200);
    // Sign-out without the token is refused too.
    let logout = app
        .client
        .post(app.url("/console/logout"))
        .header("cookie", format!("sb_session={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 403);

    // Eight hours and a minute without use: the session has ended, and the
    // console says so on the sign-in page.
    app.clock.advance(Duration::from_secs(8 * 3600 + 60));
    b.goto(&app.url("/console/")).await;
    b.wait_text("#login-error", "session has ended").await;
    assert!(b.url().await.ends_with("/console/login?expired=1"));
    b.screenshot("22-session-expired").await;
    let (stale, _) = as_page(&app, Method::GET, "/v1/stats", &cookie, None, Some(&ws)).await;
    assert_eq!(stale, 401);

    // A workspace key's session: admin routes are refused.
    sign_in(&b, &app, &key).await;
    let cookie = b.cookie("sb_session").await.unwrap();
    let (admin, _) = as_page(&app, Method::GET, "/v1/workspaces", &cookie, None, None).await;
    assert_eq!(admin, 403);
    // Revoking the key ends its console sessions.
    let (_, keys) = get(&app, &format!("/v1/workspaces/{ws}/keys"), ADMIN_TOKEN).await;
    // (The admin made a second key above: revoke both.)
    for k in keys["data"].as_array().unwrap() {
        let key_id = k["id"].as_str().unwrap();
        let (revoked, _) = call(
            &app,
            Method::DELETE,
            &format!("/v1/workspaces/{ws}/keys/{key_id}"),
            Some(ADMIN_TOKEN),
            &Value::Null,
        )
        .await;
        assert_eq!(revoked, 200);
    }
    let (gone, _) = as_page(&app, Method::GET, "/v1/messages", &cookie, None, None).await;
    assert_eq!(gone, 401);
}

/// The routes the console reads, called as any API client would: bad
/// parameters and bodies get their codes; the counter matches the
/// gateway's own segmenting.
#[tokio::test]
async fn the_console_api_checks_its_input() {
    let app = spawn_app().await;
    let (_ws, key) = app.workspace("Inputs").await;
    let get = |path: &'static str| app.client.get(app.url(path)).bearer_auth(&key).send();
    for (path, code) in [
        ("/v1/stats?window=week", "invalid_window"),
        ("/v1/conversations?days=0", "invalid_parameter"),
        ("/v1/conversations?days=91", "invalid_parameter"),
        ("/v1/conversations?limit=abc", "invalid_parameter"),
        ("/v1/conversations?limit=-1", "invalid_parameter"),
    ] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{path}");
    }
    let stats: Value = get("/v1/stats?window=day")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["series"].as_array().unwrap().len(), 24);
    assert_eq!(stats["bucket_seconds"], 3600);
    assert_eq!(stats["counts"]["delivered"], 0);
    assert_eq!(stats["delivery_rate"], Value::Null);
    assert_eq!(stats["queue"]["total"], 0);
    // No session and no key: 401 like every /v1 route.
    let anon = app.client.get(app.url("/v1/stats")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    // A cookie that names no session.
    let (forged, forged_body) =
        as_page(&app, Method::GET, "/v1/stats", &"ab".repeat(32), None, None).await;
    assert_eq!(forged, 401);
    assert_eq!(forged_body["error"]["code"], "session_expired");

    let preview = |body: Value| {
        app.client
            .post(app.url("/v1/messages/preview"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    for (body, status, code) in [
        (json!({}), 400, "missing_field"),
        (json!({"body": 5}), 400, "invalid_type"),
        (json!([1]), 400, "invalid_body"),
        (json!({"body": "x", "to": "+1"}), 400, "unknown_field"),
        (
            json!({"body": "x", "variables": "name"}),
            400,
            "invalid_type",
        ),
        (json!({"body": "x".repeat(1601)}), 422, "body_too_long"),
        (
            json!({"body": "Hi {{name", "variables": {}}),
            422,
            "invalid_template",
        ),
        (
            json!({"body": "Hi {{name}}", "variables": {}}),
            422,
            "missing_template_variable",
        ),
        (
            json!({"body": "Hi {{name}}", "variables": {"name": [1]}}),
            422,
            "invalid_template_variable",
        ),
    ] {
        let r = preview(body.clone()).await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}");
    }
    let not_json = app
        .client
        .post(app.url("/v1/messages/preview"))
        .bearer_auth(&key)
        .body("body=hi")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    for (text, encoding, segments, remaining) in [
        ("", "GSM-7", 1, 160),
        (&"a".repeat(160)[..], "GSM-7", 1, 0),
        (&"a".repeat(161)[..], "GSM-7", 2, 145),
        ("€", "GSM-7", 1, 158),
        ("✓", "UCS-2", 1, 69),
        (&"é✓".repeat(40)[..], "UCS-2", 2, 54),
    ] {
        let v: Value = preview(json!({"body": text}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["encoding"], encoding, "{text}");
        assert_eq!(v["segments"], segments, "{text}");
        assert_eq!(v["remaining_in_segment"], remaining, "{text}");
        // The counter agrees with what the gateway stores for a message.
        if !text.is_empty() {
            let id = app
                .send(&key, json!({"to": "+14155550123", "body": text}))
                .await;
            let m = app.get_message(&key, &id).await;
            assert_eq!(m["segments"], segments, "{text}");
            assert_eq!(m["encoding"], encoding, "{text}");
        }
    }
    let v: Value =
        preview(json!({"body": "Hi {{ name }}, {{n}}", "variables": {"name": "Ada", "n": 3}}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(v["text"], "Hi Ada, 3");
    assert_eq!(v["variables"], json!(["name", "n"]));
}

/// Signs in over plain HTTP as a browser would: the sign-in page's token
/// and cookie, then the form. Returns the session cookie's `Set-Cookie`.
async fn sign_in_raw(app: &TestApp, secret: &str) -> (u16, Option<String>) {
    let page = app
        .client
        .get(app.url("/console/login"))
        .send()
        .await
        .unwrap();
    let login_cookie = page
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let value = login_cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("sb_login=")
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("value=\"{value}\"")),
        "the form carries the cookie's token"
    );
    // The answer itself, not where it redirects to.
    let _ = crate::harness::client();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .post(app.url("/console/login"))
        .header("cookie", format!("sb_login={value}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={value}&token={secret}"))
        .send()
        .await
        .unwrap();
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("sb_session=") && !c.starts_with("sb_session=;"));
    (resp.status().as_u16(), session)
}

#[tokio::test]
async fn session_cookies_are_http_only_strict_and_secure_behind_https() {
    let app = spawn_app().await;
    let (_ws, key) = app.workspace("Cookies").await;
    let (status, cookie) = sign_in_raw(&app, &key).await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    // A wrong key makes no session.
    let (status, none) = sign_in_raw(&app, "sk_wrong").await;
    assert_eq!((status, none), (401, None));

    let tls = crate::harness::spawn_app_with(|c| {
        c.public_url = Some("https://sb.example.com".into());
    })
    .await;
    let (_ws, key) = tls.workspace("Cookies").await;
    let (status, cookie) = sign_in_raw(&tls, &key).await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
}
