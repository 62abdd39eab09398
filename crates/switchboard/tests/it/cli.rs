//! The admin commands of the CLI, on a stopped gateway's data directory and
//! over HTTP against a running one.

use std::process::Command;

use serde_json::{Value, json};

use crate::crash::start;
use crate::harness::ADMIN_TOKEN;

fn cli(args: &[&str]) -> (bool, Value, String) {
    cli_env(args, &[])
}

fn cli_env(args: &[&str], env: &[(&str, &str)]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SWITCHBOARD_ADMIN_TOKEN")
        .env("SWITCHBOARD_LOG", "warn")
        .output()
        .expect("run the CLI");
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.success(),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_and_keys_made_offline_work_once_the_gateway_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, ws, err) = cli(&["workspace", "create", "Acme", "--data-dir", d]);
    assert!(ok, "{err}");
    let ws_id = ws["id"].as_str().unwrap();
    assert!(ws_id.starts_with("ws_"));
    let (ok, key, err) = cli(&["key", "create", ws_id, "--data-dir", d]);
    assert!(ok, "{err}");
    assert!(err.contains("shown only once"));
    let key = key["key"].as_str().unwrap().to_owned();
    let (ok, _, err) = cli(&["key", "create", "ws_missing", "--data-dir", d]);
    assert!(!ok && err.contains("no such workspace"), "{err}");

    let gw = start(dir.path(), &[]);
    let client = crate::harness::client();
    let r = client
        .post(format!("{}/v1/messages", gw.base))
        .bearer_auth(&key)
        .json(&json!({"to": "+14155550123", "body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // While it runs, the data directory is locked: the CLI goes over HTTP.
    let (ok, _, err) = cli(&["workspace", "list", "--data-dir", d, "--url", &gw.base]);
    assert!(!ok && err.contains("--admin-token"), "{err}");
    let (ok, ws2, err) = cli(&[
        "workspace",
        "create",
        "Beta",
        "--data-dir",
        d,
        "--url",
        &gw.base,
        "--admin-token",
        ADMIN_TOKEN,
    ]);
    assert!(ok, "{err}");
    assert_eq!(ws2["name"], "Beta");
    let (ok, list, err) = cli(&[
        "workspace",
        "list",
        "--data-dir",
        d,
        "--url",
        &gw.base,
        "--admin-token",
        ADMIN_TOKEN,
    ]);
    assert!(ok, "{err}");
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    // Keys are listed (hints only) and revoked over HTTP; the revoked key is refused.
    let remote = [
        "--data-dir",
        d,
        "--url",
        &gw.base,
        "--admin-token",
        ADMIN_TOKEN,
    ];
    let (ok, keys, err) = cli(&[&["key", "list", ws_id][..], &remote[..]].concat());
    assert!(ok, "{err}");
    assert!(!keys.to_string().contains(&key));
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_owned();
    let (ok, revoked, err) = cli(&[&["key", "revoke", ws_id, &key_id][..], &remote[..]].concat());
    assert!(ok, "{err}");
    assert!(revoked["revoked_at"].is_string());
    let r = client
        .post(format!("{}/v1/messages", gw.base))
        .bearer_auth(&key)
        .json(&json!({"to": "+14155550123", "body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (ok, _, err) = cli(&[&["key", "revoke", ws_id, "key_nope"][..], &remote[..]].concat());
    assert!(!ok && err.contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_reply_injects_a_keyword_into_the_running_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (_, ws, _) = cli(&["workspace", "create", "Acme", "--data-dir", d]);
    let (_, key, _) = cli(&["key", "create", ws["id"].as_str().unwrap(), "--data-dir", d]);
    let key = key["key"].as_str().unwrap().to_owned();
    let gw = start(dir.path(), &[]);
    let (ok, out, err) = cli(&[
        "sim",
        "reply",
        "--from",
        "+14155550123",
        "--text",
        " Stop. ",
        "--key",
        &key,
        "--url",
        &gw.base,
        "--data-dir",
        d,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out["inbound"]["keyword"], "stop");
    assert!(out["reply_message_id"].is_string());
    let client = crate::harness::client();
    let r = client
        .post(format!("{}/v1/messages", gw.base))
        .bearer_auth(&key)
        .json(&json!({"to": "+14155550123", "body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "the number opted out through the CLI");
    let (ok, _, err) = cli(&[
        "sim",
        "reply",
        "--from",
        "nope",
        "--text",
        "x",
        "--key",
        &key,
        "--url",
        &gw.base,
        "--data-dir",
        d,
    ]);
    assert!(!ok && err.contains("422"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppression_list_round_trips_through_csv_import_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (_, ws, _) = cli(&["workspace", "create", "Acme", "--data-dir", d]);
    let (_, key, _) = cli(&["key", "create", ws["id"].as_str().unwrap(), "--data-dir", d]);
    let key = key["key"].as_str().unwrap().to_owned();
    let gw = start(dir.path(), &[]);
    let csv_path = dir.path().join("suppression.csv");
    let mut csv = String::from("Phone,Channel,State,Jurisdiction\n");
    for n in 1000..3500 {
        csv.push_str(&format!("+1415555{n},sms,opted_out,US-TCPA\n"));
    }
    csv.push_str("+14155550123,whatsapp,,\n");
    csv.push_str("not-a-phone,sms,opted_out,\n");
    std::fs::write(&csv_path, &csv).unwrap();
    let file = csv_path.to_str().unwrap();
    let (ok, _, err) = cli(&[
        "contacts",
        "import",
        file,
        "--key",
        &key,
        "--url",
        &gw.base,
        "--data-dir",
        d,
    ]);
    assert!(!ok, "a file with a bad row is refused whole");
    assert!(
        err.contains("line 2503") && err.contains("nothing imported"),
        "{err}"
    );
    let client = crate::harness::client();
    let list: Value = client
        .get(format!("{}/v1/contacts", gw.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["data"].as_array().unwrap().is_empty());
    let (ok, out, err) = cli(&[
        "contacts",
        "import",
        file,
        "--skip-invalid",
        "--key",
        &key,
        "--url",
        &gw.base,
        "--data-dir",
        d,
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        (out["imported"].as_u64(), out["skipped"].as_u64()),
        (Some(2501), Some(1))
    );
    assert!(
        err.contains("imported 2501/2501"),
        "progress is shown: {err}"
    );
    let r = client
        .post(format!("{}/v1/messages", gw.base))
        .bearer_auth(&key)
        .json(&json!({"to": "+14155552000", "body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "an imported opt-out is honoured");
    let export = dir.path().join("export.csv");
    let (ok, _, err) = cli(&[
        "contacts",
        "export",
        "--state",
        "opted_out",
        "--out",
        export.to_str().unwrap(),
        "--key",
        &key,
        "--url",
        &gw.base,
        "--data-dir",
        d,
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&export).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "phone,channel,state,source,jurisdiction,updated_at"
    );
    assert_eq!(
        lines.len(),
        1 + 2501,
        "every opted-out record, across pages of 1000"
    );
    assert!(
        lines[1].starts_with("+14155550123,whatsapp,opted_out,import,"),
        "{}",
        lines[1]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("+14155551000,sms,opted_out,import,US-TCPA,"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_and_senders_are_managed_offline_and_online_without_showing_secrets() {
    const TOKEN: &str = "cli-twilio-token-000000000000abcd";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (_, ws, _) = cli(&["workspace", "create", "Acme", "--data-dir", d]);
    let ws = ws["id"].as_str().unwrap().to_owned();
    let add = |extra: &[&str]| {
        let args = [
            &[
                "provider",
                "add",
                "twilio",
                "--data-dir",
                d,
                "--name",
                "Twilio US",
            ][..],
            extra,
        ]
        .concat();
        cli_env(&args, &[("TW_TOKEN", TOKEN)])
    };
    // A typo in a setting is caught when the provider is added.
    let (ok, _, err) = add(&[
        "--set",
        "acount_sid=AC0123456789abcdef0123456789abcdef",
        "--credential",
        "auth_token=env:TW_TOKEN",
    ]);
    assert!(!ok && err.contains("config.acount_sid"), "{err}");
    let (ok, _, err) = add(&[
        "--set",
        "account_sid=AC0123456789abcdef0123456789abcdef",
        "--credential",
        "auth_token=env:NOT_SET_ANYWHERE",
    ]);
    assert!(!ok && err.contains("NOT_SET_ANYWHERE"), "{err}");
    let (ok, p, err) = add(&[
        "--set",
        "account_sid=AC0123456789abcdef0123456789abcdef",
        "--set",
        "timeout_ms=5000",
        "--credential",
        "auth_token=env:TW_TOKEN",
        "--attempt-budget",
        "3",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("callback URL"), "{err}");
    assert_eq!(p["config"]["timeout_ms"], 5000);
    assert_eq!(p["credentials"]["auth_token"], "…abcd");
    assert_eq!(p["attempt_budget"], 3);
    let pid = p["id"].as_str().unwrap().to_owned();
    let (ok, list, err) = cli(&["provider", "list", "--data-dir", d]);
    assert!(ok, "{err}");
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(TOKEN));
    let (ok, s, err) = cli(&[
        "sender",
        "add",
        &ws,
        "--provider",
        &pid,
        "--address",
        "+14155550100",
        "--default",
        "--data-dir",
        d,
    ]);
    assert!(ok, "{err}");
    assert_eq!(s["default"], true);
    let (ok, _, err) = cli(&[
        "sender",
        "add",
        &ws,
        "--provider",
        &pid,
        "--address",
        "+14155550100",
        "--data-dir",
        d,
    ]);
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, _, err) = cli(&["provider", "remove", &pid, "--data-dir", d]);
    assert!(!ok && err.contains("remove them first"), "{err}");

    // The running gateway uses what was set up offline; the CLI goes over HTTP.
    let gw = start(dir.path(), &[]);
    let remote = [
        "--data-dir",
        d,
        "--url",
        &gw.base,
        "--admin-token",
        ADMIN_TOKEN,
    ];
    let (ok, senders, err) = cli(&[&["sender", "list", &ws][..], &remote[..]].concat());
    assert!(ok, "{err}");
    let ours = senders["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["channel"] == "sms")
        .unwrap()
        .clone();
    assert_eq!(ours["address"], "+14155550100", "the default comes first");
    assert_eq!(ours["provider_id"], pid.as_str());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "rotated-token-1111111111111111wxyz\n").unwrap();
    let cred = format!("auth_token=file:{}", token_file.display());
    let (ok, p, err) = cli(&[
        &["provider", "update", &pid, "--credential", &cred][..],
        &remote[..],
    ]
    .concat());
    assert!(ok, "{err}");
    assert_eq!(p["credentials"]["auth_token"], "…wxyz");
    assert_eq!(p["status"], "ready", "{p}");
    let sid = ours["id"].as_str().unwrap();
    let (ok, _, err) = cli(&[&["sender", "remove", &ws, sid][..], &remote[..]].concat());
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&[&["provider", "remove", &pid][..], &remote[..]].concat());
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&[&["provider", "show", &pid][..], &remote[..]].concat());
    assert!(!ok && err.contains("404"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatenexus_rules_are_managed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (_, ws, _) = cli(&["workspace", "create", "Acme", "--data-dir", d]);
    let (_, key, _) = cli(&["key", "create", ws["id"].as_str().unwrap(), "--data-dir", d]);
    let key = key["key"].as_str().unwrap().to_owned();
    let gw = start(dir.path(), &[]);
    let client = crate::harness::client();
    for (path, method, body) in [
        ("/v1/compat/automatenexus", reqwest::Method::PUT, json!({})),
        (
            "/v1/templates",
            reqwest::Method::POST,
            json!({"name": "deal_update", "body": "{{ title }} is in {{ new_stage }}"}),
        ),
    ] {
        let r = client
            .request(method, format!("{}{path}", gw.base))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
    let api = ["--key", key.as_str(), "--url", gw.base.as_str()];
    let (ok, rule, err) = cli(&[
        &[
            "rules",
            "add",
            "--event",
            "deal.stage_changed",
            "--equals",
            "data.new_stage=Negotiation",
            "--in",
            "data.currency=USD,EUR",
            "--exists",
            "data.owner",
            "--template",
            "deal_update",
            "--to",
            "+14155550199",
            "--client-ref-path",
            "data.id",
        ][..],
        &api[..],
    ]
    .concat());
    assert!(ok, "{err}");
    assert_eq!(
        rule["conditions"],
        json!([
            {"path": "data.new_stage", "equals": "Negotiation"},
            {"path": "data.currency", "in": ["USD", "EUR"]},
            {"path": "data.owner", "exists": true}
        ])
    );
    let (ok, _, err) = cli(&[
        &[
            "rules",
            "add",
            "--event",
            "x",
            "--template",
            "nope",
            "--to",
            "+14155550199",
        ][..],
        &api[..],
    ]
    .concat());
    assert!(!ok && err.contains("template"), "{err}");
    let (ok, _, err) = cli(&[
        &[
            "rules",
            "add",
            "--event",
            "x",
            "--template",
            "deal_update",
            "--equals",
            "oops",
        ][..],
        &api[..],
    ]
    .concat());
    assert!(!ok && err.contains("PATH=VALUE"), "{err}");
    let (ok, list, err) = cli(&[&["rules", "list"][..], &api[..]].concat());
    assert!(ok, "{err}");
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let id = rule["id"].as_str().unwrap();
    let (ok, _, err) = cli(&[&["rules", "remove", id][..], &api[..]].concat());
    assert!(ok, "{err}");
    let (_, list, _) = cli(&[&["rules", "list"][..], &api[..]].concat());
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
}
