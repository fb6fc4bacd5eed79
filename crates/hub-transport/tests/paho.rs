//! Eclipse Paho for Python (`pip install paho-mqtt`): QoS 1 and 2, MQTT 5 properties, persistent
//! sessions and wills, from a client library nobody here wrote.

mod common;

use common::Hub;
use hub_transport::TransportConfig;

fn have_paho() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: paho-mqtt is not installed; install it with `pip install paho-mqtt`");
        assert!(
            std::env::var_os("CI").is_none(),
            "paho-mqtt is required under CI"
        );
    }
    ok
}

async fn scenario(hub: &Hub, name: &str) -> serde_json::Value {
    let port = if name.starts_with("ws") {
        hub.ws_port
    } else {
        hub.port
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &port.to_string()])
        .arg(&hub.ca)
        .arg(name)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_and_qos2_round_trip_with_user_properties() {
    if !have_paho() {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    let r = scenario(&hub, "qos").await;
    assert_eq!(r["connack"]["rc"], 0);
    assert_eq!(r["connack"]["receive_maximum"], 32);
    assert_eq!(r["connack"]["topic_alias_maximum"], 0);
    assert_eq!(r["granted"], serde_json::json!([2]));
    assert_eq!(r["published"], serde_json::json!([true, true]));
    let m = &r["messages"];
    assert_eq!(m[0]["topic"], "devices/pump-7/q/1");
    assert_eq!(m[0]["qos"], 1);
    assert_eq!(m[1]["topic"], "devices/pump-7/q/2");
    assert_eq!(m[1]["qos"], 2);
    assert_eq!(m[1]["payload"], "m2");
    assert_eq!(m[1]["user_properties"], serde_json::json!([["k", "v2"]]));
    assert_eq!(r["foreign_puback"], serde_json::json!([0x87]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_lowers_a_too_long_keep_alive() {
    if !have_paho() {
        return;
    }
    let config = TransportConfig {
        max_keep_alive_secs: 1200,
        ..TransportConfig::default()
    };
    let hub = Hub::start(config).await;
    let r = scenario(&hub, "keepalive").await;
    assert_eq!(r["connack"]["server_keep_alive"], 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_keeps_messages_while_offline() {
    if !have_paho() {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    let r = scenario(&hub, "persistent").await;
    assert_eq!(r["first_session_present"], false);
    assert_eq!(r["second_session_present"], true);
    assert_eq!(r["messages"][0]["payload"], "while you were away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_is_published_when_asked_for() {
    if !have_paho() {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    let r = scenario(&hub, "will").await;
    assert_eq!(r["messages"][0]["topic"], "devices/pump-7/status");
    assert_eq!(r["messages"][0]["payload"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_websocket_with_tls_works_for_both_protocols() {
    if !have_paho() {
        return;
    }
    let hub = Hub::start(TransportConfig::default()).await;
    for name in ["ws5", "ws311"] {
        let r = scenario(&hub, name).await;
        assert_eq!(r["connack"]["rc"], 0, "{name}");
        assert_eq!(r["granted"], serde_json::json!([1]), "{name}");
        assert_eq!(r["received_len"], 20000, "{name}");
    }
    assert!(hub.events.take().iter().any(|e| matches!(&e.kind, hub_core::EventKind::DeviceConnected { protocol, .. } if protocol == "mqtt-wss")));
}

#[test]
fn the_openapi_description_names_the_upgrade_route() {
    let doc = hub_transport::Transport::openapi();
    let json = serde_json::to_value(&doc).unwrap();
    assert!(json["paths"]["/mqtt"]["get"]["responses"]["101"].is_object());
}
