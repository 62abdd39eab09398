//! Templates: CRUD, strict rendering at submit, per-channel variants.

use serde_json::{Value, json};

use crate::harness::spawn_app;

#[tokio::test]
async fn a_template_renders_per_channel_and_reports_segments_of_the_result() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let r = app
        .client
        .post(app.url("/v1/templates"))
        .bearer_auth(&key)
        .json(&json!({"name": "shipped", "body": "Hi {{name}}, order {{order}} has shipped.", "variants": {"whatsapp": "Привет {{name}}! Заказ {{order}} отправлен."}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["variables"], json!(["name", "order"]));
    let vars = json!({"name": "Ada", "order": 1042});
    let sms: Value = app
        .post_message(
            &key,
            &json!({"to": "+14155550123", "template": {"name": "shipped", "variables": vars}}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (sms["encoding"].as_str(), sms["segments"].as_u64()),
        (Some("GSM-7"), Some(1))
    );
    let m = app.get_message(&key, sms["id"].as_str().unwrap()).await;
    assert_eq!(m["body"], "Hi Ada, order 1042 has shipped.");
    let wa: Value = app.post_message(&key, &json!({"to": "+14155550123", "channel": "whatsapp", "template": {"name": "shipped", "variables": vars}})).await.json().await.unwrap();
    assert_eq!(wa["encoding"], "UCS-2");
    let m = app.get_message(&key, wa["id"].as_str().unwrap()).await;
    assert_eq!(m["body"], "Привет Ada! Заказ 1042 отправлен.");
}

#[tokio::test]
async fn a_missing_variable_is_refused_with_its_name_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    app.client
        .post(app.url("/v1/templates"))
        .bearer_auth(&key)
        .json(&json!({"name": "otp", "body": "Your code is {{code}}, {{name}}"}))
        .send()
        .await
        .unwrap();
    let r = app.post_message(&key, &json!({"to": "+14155550123", "template": {"name": "otp", "variables": {"name": "Ada"}}})).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "missing_template_variable");
    assert_eq!(v["error"]["field"], "template.variables.code");
    assert!(v["error"]["message"].as_str().unwrap().contains("code"));
    let r = app.post_message(&key, &json!({"to": "+14155550123", "template": {"name": "otp", "variables": {"name": "Ada", "code": {"x": 1}}}})).await;
    assert_eq!(r.status(), 422);
    // A variable that would put a NUL into the body, which a body may not
    // hold (nor PostgreSQL's text).
    let r = app.post_message(&key, &json!({"to": "+14155550123", "template": {"name": "otp", "variables": {"name": "Ada", "code": "1\u{0}2"}}})).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (&v["error"]["code"], &v["error"]["field"]),
        (&json!("invalid_body"), &json!("template"))
    );
    let r = app
        .post_message(
            &key,
            &json!({"to": "+14155550123", "body": "x", "template": {"name": "otp"}}),
        )
        .await;
    assert_eq!(r.status(), 422, "body and template together");
    let list: Value = app
        .client
        .get(app.url("/v1/messages"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn templates_are_managed_per_workspace() {
    let app = spawn_app().await;
    let (_, a) = app.workspace("a").await;
    let (_, b) = app.workspace("b").await;
    let create = |key: &str, body: Value| {
        app.client
            .post(app.url("/v1/templates"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    assert_eq!(
        create(&a, json!({"name": "hello", "body": "Hello {{name}}"}))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        create(&a, json!({"name": "hello", "body": "again"}))
            .await
            .unwrap()
            .status(),
        409
    );
    assert_eq!(
        create(&b, json!({"name": "hello", "body": "B's own"}))
            .await
            .unwrap()
            .status(),
        201,
        "names are per workspace"
    );
    for (body, code) in [
        (json!({"body": "x"}), "missing_field"),
        (json!({"name": "x"}), "missing_field"),
        (json!({"name": "x y", "body": "x"}), "invalid_name"),
        (
            json!({"name": "x", "body": "{{ unclosed"}),
            "invalid_template",
        ),
        (
            json!({"name": "x", "body": "x", "variants": {"pager": "y"}}),
            "invalid_channel",
        ),
        (json!({"name": "x", "body": "a\u{0}b"}), "invalid_body"),
        (
            json!({"name": "x", "body": "x", "variants": {"sms": "a\u{0}"}}),
            "invalid_body",
        ),
    ] {
        let r = create(&a, body.clone()).await.unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}");
    }
    let r = app
        .client
        .patch(app.url("/v1/templates/hello"))
        .bearer_auth(&a)
        .json(&json!({"body": "Hi {{first}}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["variables"], json!(["first"]));
    let got: Value = app
        .client
        .get(app.url("/v1/templates/hello"))
        .bearer_auth(&b)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["body"], "B's own", "B sees its own template only");
    let list: Value = app
        .client
        .get(app.url("/v1/templates"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.client
            .delete(app.url("/v1/templates/hello"))
            .bearer_auth(&a)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        app.client
            .get(app.url("/v1/templates/hello"))
            .bearer_auth(&a)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = app.post_message(&a, &json!({"to": "+14155550123", "template": {"name": "hello", "variables": {"first": "x"}}})).await;
    assert_eq!(r.status(), 422);
}
