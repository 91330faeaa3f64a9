//! The console in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver) with `fantoccini`. `.ci/run` installs
//! `chromium` and `chromium-driver`; a screenshot of the device page is
//! written to `target/console-screenshots/device.png`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use paddock_tests::server::{Server, plugins_with};
use paddock_tests::tenant::{Tenant, tenant};
use serde_json::{Value, json};

/// chromedriver on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver() -> Driver {
    let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e} (install Debian's chromium and chromium-driver; .ci/run does)"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port, _profile: tempfile::tempdir().unwrap() }
}

async fn browser(d: &Driver) -> Client {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = format!("--user-data-dir={}", d._profile.path().display());
    // The flags Chromium needs on this machine: headless as root, and no
    // background connections (the network is closed).
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1800",
        profile.as_str(),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));
    ClientBuilder::new(hyper_util_client::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("a Chromium session")
}

/// Poll `check` (a script returning a value) until `until` holds, for at
/// most 10 s.
async fn eventually(c: &Client, script: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if until(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {script} was {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until live refreshes have stopped for a while (a refresh swapping
/// a section while a button is clicked would lose the click).
async fn quiet(c: &Client) {
    let count = "return document.body.dataset.updates || '0'";
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = c.execute(count, vec![]).await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let now = c.execute(count, vec![]).await.unwrap();
        if now == last || Instant::now() > deadline {
            return;
        }
        last = now;
    }
}

async fn sign_in(c: &Client, s: &Server, token: &str) {
    c.goto(&format!("http://{}/", s.addr)).await.unwrap();
    c.find(Locator::Css("input[name=token]")).await.unwrap().send_keys(token).await.unwrap();
    c.find(Locator::Css("form.sign-in button")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("table.devices")).await.unwrap();
}

fn tank(s: &Server, t: &Tenant, name: &str, serial: &str) -> String {
    let agent = t.agent(s, name, serial);
    let config = json!({ "empty_distance_mm": 2000, "full_distance_mm": 200, "low_level_percent": 20 });
    t.install(s, json!({ "app": "tank-level", "agent_id": agent, "app_key": "tank_level", "config": config }));
    agent
}

fn reading(s: &Server, t: &Tenant, agent: &str, distance: u32) {
    let path = format!("/v1/orgs/{{org}}/agents/{agent}/channels/sensor_data/messages");
    t.call(s, "POST", &path, Some(&json!({ "distance_mm": distance })), 201);
}

#[test]
fn the_console_in_chromium_signs_in_lists_devices_and_updates_live() {
    let s = Server::start(plugins_with(&["tank-level"]), |_| {});
    let t = tenant(&s, "Demo Farm");
    let north = tank(&s, &t, "North tank", "TANK-001");
    tank(&s, &t, "South tank", "TANK-002");
    reading(&s, &t, &north, 1000);
    paddock_tests::server::eventually(10, "the first reading", || {
        t.aggregate(&s, &north, "tag_values").filter(|v| v["tank_level"]["readings"] == 1)
    });
    let d = driver();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = browser(&d).await;
        sign_in(&c, &s, &t.token).await;
        let rows = c.find_all(Locator::Css("table.devices tbody tr")).await.unwrap();
        let mut names = Vec::new();
        for r in &rows {
            names.push(r.text().await.unwrap());
        }
        assert!(
            names.iter().any(|n| n.contains("North tank")) && names.iter().any(|n| n.contains("South tank")),
            "{names:?}"
        );

        // The device page with the tank_level channel's chart.
        c.find(Locator::LinkText("North tank")).await.unwrap().click().await.unwrap();
        let level = c.wait().for_element(Locator::Css(r#"[data-bind="tank_level/last_level"]"#)).await.unwrap();
        assert_eq!(level.text().await.unwrap(), "55.6");
        let url = c.current_url().await.unwrap();
        c.goto(&format!("{url}?channel=tank_level")).await.unwrap();
        eventually(&c, "return document.body.dataset.live || ''", |v| v == "open").await;
        let before = c.find(Locator::Css("svg.series")).await.unwrap().attr("data-points").await.unwrap();
        assert_eq!(before.as_deref(), Some("1"));
        // No reload: a marker set on this page must survive the update.
        c.execute("window.__marker = 42; return 0", vec![]).await.unwrap();

        // 1,900 mm → 5.6 %: the UI value, its colour, the chart and the
        // low-level notification change in place.
        reading(&s, &t, &north, 1900);
        let shown = eventually(
            &c,
            r#"return document.querySelector('[data-bind="tank_level/last_level"]').textContent"#,
            |v| v == "5.6",
        )
        .await;
        assert_eq!(shown, "5.6");
        let colour = c
            .execute(r#"return document.querySelector('[data-bind="tank_level/last_level"]').dataset.colour"#, vec![])
            .await
            .unwrap();
        assert_eq!(colour, "red");
        eventually(&c, "return document.querySelector('svg.series').dataset.points", |v| v == "2").await;
        eventually(&c, "return document.querySelector('.notifications').textContent", |v| {
            v.as_str().is_some_and(|t| t.contains("Low tank level"))
        })
        .await;
        assert_eq!(c.execute("return window.__marker", vec![]).await.unwrap(), 42, "the page was not reloaded");

        // A UI action: the app's "Reset min/max" button posts a command to
        // ui_cmds, tank-level (subscribed to it) runs and restarts its range
        // at the last level, and the page shows it.
        let max = r#"return document.querySelector('[data-bind="tank_level/max_level"]').textContent"#;
        assert_eq!(c.execute(max, vec![]).await.unwrap(), "55.6");
        quiet(&c).await;
        c.find(Locator::XPath("//button[text()='Reset min/max']")).await.unwrap().click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let shown = c.execute(max, vec![]).await.ok();
            if shown.as_ref().is_some_and(|v| v == "5.6") {
                break;
            }
            let tags = t.aggregate(&s, &north, "tag_values");
            let state = c
                .execute(
                    "return [location.href, document.body.dataset.live, document.body.dataset.updates].join(' ')",
                    vec![],
                )
                .await
                .ok();
            assert!(Instant::now() < deadline, "the page shows {shown:?} ({state:?}); the tags are {tags:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let shot = c.screenshot().await.unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("device.png"), &shot).unwrap();
        assert!(shot.starts_with(b"\x89PNG"));
        c.close().await.unwrap();
    });
}

#[test]
fn xss_payloads_stay_inert_and_other_organisations_are_not_found() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let (t, other) = (tenant(&s, "Acme"), tenant(&s, "Other"));
    let agent = t.agent(&s, "<img src=x onerror=\"window.__xss='name'\">", "X-1");
    let foreign = other.agent(&s, "Foreign device", "F-1");
    let path = format!("/v1/orgs/{{org}}/agents/{agent}/channels/notes/messages");
    t.call(&s, "POST", &path, Some(&json!({ "text": "<script>window.__xss='message'</script>" })), 201);
    let ui = json!({"state": {"children": {"evil": {"type": "uiVariable", "name": "v",
        "displayString": "<img src=x onerror=\"window.__xss='label'\">"}}}});
    t.call(&s, "PUT", &format!("/v1/orgs/{{org}}/agents/{agent}/channels/ui_state/aggregate"), Some(&ui), 200);
    let d = driver();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = browser(&d).await;
        sign_in(&c, &s, &t.token).await;
        for page in
            [format!("/console/orgs/{}", t.org), format!("/console/orgs/{}/devices/{agent}?channel=notes", t.org)]
        {
            c.goto(&format!("http://{}{page}", s.addr)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let xss = c.execute("return window.__xss || null", vec![]).await.unwrap();
            assert_eq!(xss, Value::Null, "{page} ran a payload");
            let text = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
            assert!(
                text.contains("<img src=x") || text.contains("<script>"),
                "{page} shows the payload as text: {text}"
            );
        }
        c.goto(&format!("http://{}/console/orgs/{}/devices/{foreign}", s.addr, other.org)).await.unwrap();
        let title = c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap();
        assert_eq!(title, "Not Found");
        let text = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
        assert!(!text.contains("Foreign device"));
        c.close().await.unwrap();
    });
}

#[test]
fn an_invalid_installation_config_shows_its_violation_by_the_field() {
    let s = Server::start(plugins_with(&["tank-level"]), |_| {});
    let t = tenant(&s, "Acme");
    t.agent(&s, "East tank", "TANK-003");
    let d = driver();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = browser(&d).await;
        sign_in(&c, &s, &t.token).await;
        c.find(Locator::LinkText("Apps and installations")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("table.apps")).await.unwrap();
        c.find(Locator::LinkText("Install")).await.unwrap().click().await.unwrap();
        // The form comes from tank-level's JSON Schema.
        let low = c.wait().for_element(Locator::Css(r#"input[name="cfg.low_level_percent"]"#)).await.unwrap();
        assert_eq!(low.attr("max").await.unwrap().as_deref(), Some("100"));
        low.send_keys("150").await.unwrap();
        c.find(Locator::Css("form.install button[type=submit]")).await.unwrap().click().await.unwrap();
        let violation =
            c.wait().for_element(Locator::Css(r#".field[data-field="low_level_percent"] .violation"#)).await.unwrap();
        let text = violation.text().await.unwrap();
        assert!(text.contains("maximum"), "{text}");
        // What was typed stays; fix it and install.
        let low = c.find(Locator::Css(r#"input[name="cfg.low_level_percent"]"#)).await.unwrap();
        assert_eq!(low.prop("value").await.unwrap().as_deref(), Some("150"));
        low.clear().await.unwrap();
        low.send_keys("30").await.unwrap();
        c.find(Locator::Css("form.install button[type=submit]")).await.unwrap().click().await.unwrap();
        c.wait().for_element(Locator::Css("table.invocations")).await.unwrap();
        let installs = t.call(&s, "GET", "/v1/orgs/{org}/installations", None, 200);
        assert_eq!(installs["installations"][0]["config"]["low_level_percent"], 30.0);

        // The installation's invocations update live: a manual invoke
        // appears without a reload.
        eventually(&c, "return document.body.dataset.live || ''", |v| v == "open").await;
        let rows = "return document.querySelectorAll('table.invocations tbody tr').length";
        let before = c.execute(rows, vec![]).await.unwrap().as_u64().unwrap();
        c.execute("window.__marker = 7; return 0", vec![]).await.unwrap();
        let id = installs["installations"][0]["id"].as_str().unwrap();
        t.call(&s, "POST", &format!("/v1/orgs/{{org}}/installations/{id}/invoke"), Some(&json!({"x": 1})), 202);
        eventually(&c, rows, |v| v.as_u64() > Some(before)).await;
        let newest =
            c.execute("return document.querySelector('table.invocations tbody tr').textContent", vec![]).await.unwrap();
        assert!(newest.as_str().unwrap().contains("on_manual_invoke"), "{newest}");
        assert_eq!(c.execute("return window.__marker", vec![]).await.unwrap(), 7, "no reload");
        c.close().await.unwrap();
    });
}
