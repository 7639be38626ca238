//! `edgewise fleet serve` against a real Mosquitto and real gateways, its page rendered by
//! Debian's headless Chromium: what a control-room screen would show.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use edgewise_tests::mqtt::{Broker, Gateway, free_port, http_get};
use edgewise_tests::{edgewise, eventually};

/// The web page process, killed when the test ends.
struct Page {
    child: Child,
    port: u16,
}

impl Page {
    fn serve(broker: &Broker, group: &str, stale_after_s: u64) -> Page {
        let port = free_port();
        let child = Command::new(edgewise())
            .args(["fleet", "serve", "--group", group, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--stale-after-s", &stale_after_s.to_string(), "--broker"])
            .arg(format!("mqtt://127.0.0.1:{}", broker.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("edgewise fleet serve starts");
        Page { child, port }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&http_get(self.port, "/fleet.json")).expect("fleet.json is JSON")
    }

    /// The page's document once its script has run, as Chromium serialises it.
    fn rendered(&self) -> String {
        let profile = tempfile::tempdir().expect("temporary directory");
        let output = Command::new(chromium())
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--virtual-time-budget=5000", "--dump-dom"])
            .arg(format!("http://127.0.0.1:{}/", self.port))
            .output()
            .expect("chromium runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Chromium, which `scripts/test` installs.
fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: `apt-get install chromium` (scripts/test installs it)"
    );
    path
}

/// A gateway of group `group`, publishing its metrics (its heartbeat) every second.
fn member(broker: &Broker, id: &str, group: &str) -> Gateway {
    let mut gateway = Gateway::prepare(
        broker,
        id,
        &["threshold"],
        "[metrics]\npublish-interval-s = 1\n",
    );
    edgewise_tests::edit(
        gateway.dir(),
        "gateway.toml",
        "plugins = \"plugins\"\n",
        &format!("plugins = \"plugins\"\ngroup = \"{group}\"\n"),
    );
    gateway.launch(broker);
    gateway
}

#[test]
fn the_fleet_page_shows_members_states_and_a_silent_gateway_as_text() {
    let broker = Broker::start();
    let _live = member(&broker, "line-1", "line");
    let mut stopped = member(&broker, "line-2", "line");
    assert!(stopped.terminate(), "{}", stopped.log());
    // A gateway that says it is online and then says nothing again (its process frozen, its
    // will not yet due), whose plugin name is markup; and a gateway of another group.
    broker.publish_retained(
        "edgewise/line-ghost/status",
        br#"{"state":"online","gateway":"line-ghost","fleet":{"group":"line","version":null,"state":"waiting"},
            "plugins":[{"name":"<img src=x onerror=alert(1)>","version":"6.6.6","state":"running"}]}"#,
    );
    broker.publish_retained(
        "edgewise/yard-1/status",
        br#"{"state":"online","gateway":"yard-1","fleet":{"group":"yard"},"plugins":[]}"#,
    );

    let page = Page::serve(&broker, "line", 3);
    let fleet = eventually(Duration::from_secs(30), "the ghost goes stale", || {
        let fleet = page.json();
        let ghost = fleet["gateways"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["id"] == "line-ghost"))
            .cloned();
        match ghost {
            Some(g) if g["stale"] == true => Ok(fleet),
            _ => Err(fleet.to_string()),
        }
    });
    let ids: Vec<&str> = fleet["gateways"]
        .as_array()
        .expect("gateways")
        .iter()
        .map(|g| g["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids, ["line-1", "line-2", "line-ghost"], "{fleet}");
    let by_id = |id: &str| {
        fleet["gateways"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["id"] == id))
            .cloned()
            .expect("listed")
    };
    // line-1 keeps sending metrics: never stale; line-2 is offline, which is not stale.
    assert_eq!(by_id("line-1")["stale"], false, "{fleet}");
    assert_eq!(
        by_id("line-1")["plugins"][0]["name"],
        "threshold",
        "{fleet}"
    );
    assert_eq!(by_id("line-2")["state"], "offline", "{fleet}");
    assert_eq!(by_id("line-2")["stale"], false, "{fleet}");
    assert_eq!(
        (fleet["offline"].clone(), fleet["stale"].clone()),
        (1.into(), 1.into())
    );

    let dom = page.rendered();
    for shown in [
        "line-1",
        "threshold 0.1.0",
        "line-2",
        "offline",
        "line-ghost",
        "stale",
        "3 gateways",
    ] {
        assert!(dom.contains(shown), "the page shows {shown:?}:\n{dom}");
    }
    assert!(!dom.contains("yard-1"), "another group's gateway:\n{dom}");
    // The markup in a plugin's name is shown as text, not made an element.
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
    assert!(!dom.contains("<img"), "{dom}");
}
