//! Real MQTT clients nobody here wrote (`mosquitto_pub`, `mosquitto_sub`) against the hub over
//! TLS with a test CA.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Hub, PLANT1_VIEWER, PLANT2_VIEWER};
use hub_core::{DeviceId, EventKind, JobNotice, NotifyOutcome, PresenceState, TenantId};
use hub_transport::TransportConfig;
use tokio::process::{Child, Command};

const INSTALL: &str = "apt-get install mosquitto-clients";

fn base(hub: &Hub, tool: &str, user: &str, pass: &str, version: &str) -> Command {
    let mut c = Command::new(tool);
    c.args(["-h", "127.0.0.1", "-p", &hub.port.to_string(), "--cafile"])
        .arg(&hub.ca)
        .args(["-u", user, "-P", pass, "-V", version])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn publish(
    hub: &Hub,
    user: &str,
    pass: &str,
    topic: &str,
    msg: &str,
    extra: &[&str],
) -> Output {
    base(hub, "mosquitto_pub", user, pass, "mqttv311")
        .args(["-t", topic, "-m", msg, "-q", "1"])
        .args(extra)
        .output()
        .await
        .unwrap()
}

fn subscribe(hub: &Hub, user: &str, pass: &str, topic: &str, count: u32, version: &str) -> Child {
    base(hub, "mosquitto_sub", user, pass, version)
        .args([
            "-t",
            topic,
            "-v",
            "-q",
            "1",
            "-C",
            &count.to_string(),
            "-W",
            "30",
        ])
        .spawn()
        .unwrap()
}

/// Repeats `step` until the subscriber exits (it exits after its count of messages), because a
/// subscriber's readiness cannot be observed from outside; bounded by mosquitto_sub's `-W`.
async fn until_exit<F, Fut>(mut sub: Child, mut step: F) -> Output
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        if sub.try_wait().unwrap().is_some() {
            return sub.wait_with_output().await.unwrap();
        }
        step().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_publishes_and_an_app_that_may_see_it_receives() {
    if !common::have_tool("mosquitto_sub", INSTALL) {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    let sub = subscribe(&hub, "oauth2", PLANT1_VIEWER, "devices/+/temp", 1, "mqttv5");
    let out = until_exit(sub, || async {
        let o = publish(
            &hub,
            "pump-7",
            "hk_pump7_secret",
            "devices/pump-7/temp",
            "21.5",
            &[],
        )
        .await;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&out), ["devices/pump-7/temp 21.5"]);
    // Presence saw the device come and go.
    let events = hub.events.take();
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::DeviceConnected { device, protocol, .. } if device.as_str() == "pump-7" && protocol == "mqtt-tls")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_is_refused() {
    if !common::have_tool("mosquitto_pub", INSTALL) {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    let o = publish(
        &hub,
        "pump-7",
        "hk_pump8_secret",
        "devices/pump-7/temp",
        "1",
        &[],
    )
    .await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(err.contains("refused"), "{err}");
    let o = publish(
        &hub,
        "oauth2",
        "not-a-token",
        "devices/pump-7/temp",
        "1",
        &["-V", "mqttv5"],
    )
    .await;
    assert!(!o.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_may_not_subscribe_to_another_devices_topics() {
    if !common::have_tool("mosquitto_sub", INSTALL) {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    for version in ["mqttv311", "mqttv5"] {
        let sub = subscribe(
            &hub,
            "pump-7",
            "hk_pump7_secret",
            "devices/pump-8/#",
            1,
            version,
        );
        let out = sub.wait_with_output().await.unwrap();
        // mosquitto_sub reports the refused SUBACK and disconnects.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("All subscription requests were denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_may_not_publish_into_another_devices_namespace() {
    if !common::have_tool("mosquitto_sub", INSTALL) {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    let sub = subscribe(
        &hub,
        "pump-8",
        "hk_pump8_secret",
        "devices/pump-8/cmd",
        1,
        "mqttv311",
    );
    let out = until_exit(sub, || async {
        // The foreign publication is acknowledged (QoS 1) before the allowed one is sent, so
        // it would arrive first if it were routed.
        publish(
            &hub,
            "pump-7",
            "hk_pump7_secret",
            "devices/pump-8/cmd",
            "evil",
            &[],
        )
        .await;
        publish(
            &hub,
            "oauth2",
            PLANT1_VIEWER,
            "devices/pump-8/cmd",
            "good",
            &[],
        )
        .await;
    })
    .await;
    assert_eq!(lines(&out), ["devices/pump-8/cmd good"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_stay_within_reach_and_tenant() {
    if !common::have_tool("mosquitto_sub", INSTALL) {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    for (user, pass, topic, msg) in [
        (
            "pump-7",
            "hk_pump7_secret",
            "devices/pump-7/state",
            "acme-7",
        ),
        (
            "pump-9",
            "hk_pump9_secret",
            "devices/pump-9/state",
            "acme-9",
        ),
        (
            "pump-7",
            "hk_globex7_secret",
            "devices/pump-7/state",
            "globex-7",
        ),
    ] {
        let o = publish(&hub, user, pass, topic, msg, &["-r"]).await;
        assert!(o.status.success());
    }
    // The same device id in another tenant sees only its own tenant's retained message.
    let sub = subscribe(
        &hub,
        "pump-7",
        "hk_globex7_secret",
        "devices/pump-7/state",
        1,
        "mqttv311",
    );
    let out = sub.wait_with_output().await.unwrap();
    assert_eq!(lines(&out), ["devices/pump-7/state globex-7"]);
    // A viewer of plant-2 gets pump-9's retained state, never pump-7's (plant-1), then a live one.
    let sub = subscribe(
        &hub,
        "oauth2",
        PLANT2_VIEWER,
        "devices/+/state",
        2,
        "mqttv311",
    );
    let out = until_exit(sub, || async {
        publish(
            &hub,
            "pump-7",
            "hk_pump7_secret",
            "devices/pump-7/state",
            "live-7",
            &[],
        )
        .await;
        publish(
            &hub,
            "pump-9",
            "hk_pump9_secret",
            "devices/pump-9/state",
            "live-9",
            &[],
        )
        .await;
    })
    .await;
    assert_eq!(
        lines(&out),
        ["devices/pump-9/state acme-9", "devices/pump-9/state live-9"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_topics_map_onto_the_job_api() {
    if !common::have_tool("mosquitto_sub", INSTALL) {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    let job = hub.jobs.job.to_string();
    let sub = subscribe(
        &hub,
        "pump-7",
        "hk_pump7_secret",
        "devices/pump-7/jobs/start-next/accepted",
        1,
        "mqttv311",
    );
    let out = until_exit(sub, || async {
        publish(
            &hub,
            "pump-7",
            "hk_pump7_secret",
            "devices/pump-7/jobs/start-next",
            "",
            &[],
        )
        .await;
    })
    .await;
    let line = &lines(&out)[0];
    let body: serde_json::Value = serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
    assert_eq!(body["job"]["id"], job.as_str());
    assert_eq!(body["job"]["execution"], 1);

    let update = format!("devices/pump-7/jobs/{job}/update");
    let sub = subscribe(
        &hub,
        "pump-7",
        "hk_pump7_secret",
        &format!("{update}/accepted"),
        1,
        "mqttv311",
    );
    let out = until_exit(sub, || async {
        publish(
            &hub,
            "pump-7",
            "hk_pump7_secret",
            &update,
            r#"{"execution":1,"status":"succeeded","result":{"ok":true}}"#,
            &[],
        )
        .await;
    })
    .await;
    let body: serde_json::Value =
        serde_json::from_str(lines(&out)[0].split_once(' ').unwrap().1).unwrap();
    assert_eq!(body["state"], "succeeded");
    assert!(
        hub.jobs
            .reports
            .lock()
            .unwrap()
            .iter()
            .all(|(who, e, _)| who.starts_with("device:pump-7@acme/plant-1") && *e == 1)
    );

    // A malformed report is answered on /rejected with a problem document.
    let sub = subscribe(
        &hub,
        "pump-7",
        "hk_pump7_secret",
        &format!("{update}/rejected"),
        1,
        "mqttv311",
    );
    let out = until_exit(sub, || async {
        publish(
            &hub,
            "pump-7",
            "hk_pump7_secret",
            &update,
            r#"{"status":"exploded"}"#,
            &[],
        )
        .await;
    })
    .await;
    let body: serde_json::Value =
        serde_json::from_str(lines(&out)[0].split_once(' ').unwrap().1).unwrap();
    assert_eq!(body["status"], 400);
    // Nobody else may publish on the hub's answer topics.
    let sub = subscribe(
        &hub,
        "pump-7",
        "hk_pump7_secret",
        "devices/pump-7/jobs/notify",
        1,
        "mqttv311",
    );
    let out = until_exit(sub, || async {
        publish(
            &hub,
            "pump-7",
            "hk_pump7_secret",
            "devices/pump-7/jobs/notify",
            "forged",
            &[],
        )
        .await;
        let tenant: TenantId = "acme".parse().unwrap();
        let device: DeviceId = "pump-7".parse().unwrap();
        hub.transport.notifier().notify(
            &tenant,
            &device,
            JobNotice::JobAvailable { job: hub.jobs.job },
        );
    })
    .await;
    let body: serde_json::Value =
        serde_json::from_str(lines(&out)[0].split_once(' ').unwrap().1).unwrap();
    assert_eq!(body["type"], "job_available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_and_presence_know_who_is_connected() {
    if !common::have_tool("mosquitto_sub", INSTALL) {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    let tenant: TenantId = "acme".parse().unwrap();
    let pump7: DeviceId = "pump-7".parse().unwrap();
    let pump8: DeviceId = "pump-8".parse().unwrap();
    let presence = hub.transport.presence_query();
    assert_eq!(
        presence.presence(&tenant, &pump7).state,
        PresenceState::Offline
    );
    let notifier = hub.transport.notifier();
    let notice = JobNotice::JobAvailable { job: hub.jobs.job };
    assert_eq!(
        notifier.notify(&tenant, &pump8, notice),
        NotifyOutcome::NotConnected
    );
    let sub = subscribe(
        &hub,
        "pump-7",
        "hk_pump7_secret",
        "devices/pump-7/jobs/notify",
        1,
        "mqttv5",
    );
    tokio::time::timeout(
        Duration::from_secs(30),
        presence.wait_online(&tenant, &pump7),
    )
    .await
    .unwrap();
    let p = presence.presence(&tenant, &pump7);
    assert_eq!(p.state, PresenceState::Online);
    assert!(p.node.is_some());
    let out = until_exit(sub, || async {
        notifier.notify(&tenant, &pump7, notice);
    })
    .await;
    assert_eq!(lines(&out).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measurements_are_stored_through_the_measurement_store() {
    if !common::have_tool("mosquitto_pub", INSTALL) {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    let o = publish(
        &hub,
        "pump-7",
        "hk_pump7_secret",
        "devices/pump-7/measurements",
        r#"{"values":{"temperature":21.5,"pressure":1.02}}"#,
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // QoS 1: the PUBACK came after the append, so the points are there now.
    let series = hub
        .stores
        .measurements
        .list_series(&"acme".parse().unwrap(), &"pump-7".parse().unwrap())
        .await
        .unwrap();
    let names: Vec<&str> = series.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["pressure", "temperature"]);
    assert!(
        hub.events
            .take()
            .iter()
            .any(|e| matches!(e.kind, EventKind::MeasurementsReceived { points: 2, .. }))
    );
}
