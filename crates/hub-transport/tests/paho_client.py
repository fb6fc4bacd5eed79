"""Eclipse Paho (MQTT 5 and 3.1.1) scenarios against the hub; prints one JSON line of findings.

Usage: paho_client.py HOST PORT CAFILE SCENARIO. Waits are bounded only to avoid hanging.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST, PORT, CAFILE, SCENARIO = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
GUARD = 20


def client(user, password, client_id, protocol=mqtt.MQTTv5, transport="tcp"):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                    transport=transport)
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    c.tls_set(ca_certs=CAFILE)
    c.username_pw_set(user, password)
    c.connected = threading.Event()
    c.subscribed = threading.Event()
    c.messages = []
    c.got = threading.Condition()
    c.connack = {}

    def on_connect(cl, userdata, flags, rc, props):
        cl.connack = {
            "rc": int(rc.value) if hasattr(rc, "value") else int(rc),
            "session_present": bool(flags.session_present),
            "server_keep_alive": getattr(props, "ServerKeepAlive", None) if props else None,
            "receive_maximum": getattr(props, "ReceiveMaximum", None) if props else None,
            "topic_alias_maximum": getattr(props, "TopicAliasMaximum", None) if props else None,
        }
        cl.connected.set()

    def on_subscribe(cl, userdata, mid, rcs, props):
        cl.granted = [int(r.value) for r in rcs]
        cl.subscribed.set()

    def on_message(cl, userdata, msg):
        with cl.got:
            user_props = []
            if msg.properties is not None and hasattr(msg.properties, "UserProperty"):
                user_props = msg.properties.UserProperty
            cl.messages.append({"topic": msg.topic, "payload": msg.payload.decode(), "qos": msg.qos,
                                "user_properties": user_props})
            cl.got.notify_all()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    return c


def start(c, clean_start=True, keepalive=60, props=None):
    if c._protocol == mqtt.MQTTv5:
        c.connect(HOST, PORT, keepalive=keepalive, clean_start=clean_start, properties=props)
    else:
        c.connect(HOST, PORT, keepalive=keepalive)
    c.loop_start()
    assert c.connected.wait(GUARD), "no CONNACK"


def subscribe(c, topic, qos):
    c.subscribed.clear()
    if c._protocol == mqtt.MQTTv5:
        c.subscribe(topic, options=SubscribeOptions(qos=qos))
    else:
        c.subscribe(topic, qos)
    assert c.subscribed.wait(GUARD), "no SUBACK"
    return c.granted


def wait_messages(c, n):
    with c.got:
        c.got.wait_for(lambda: len(c.messages) >= n, GUARD)
    return c.messages


def stop(c, reason=None):
    if reason is None:
        c.disconnect()
    else:
        c.disconnect(reasoncode=reason)
    c.loop_stop()


out = {}
if SCENARIO == "qos":
    dev = client("pump-7", "hk_pump7_secret", "pump-7-qos", mqtt.MQTTv5)
    start(dev)
    out["connack"] = dev.connack
    out["granted"] = subscribe(dev, "devices/pump-7/q/#", 2)
    acks = []
    for qos in (1, 2):
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("k", "v%d" % qos)
        info = dev.publish("devices/pump-7/q/%d" % qos, "m%d" % qos, qos=qos, properties=props)
        info.wait_for_publish(GUARD)
        acks.append(info.is_published())
    out["published"] = acks
    out["messages"] = sorted(wait_messages(dev, 2), key=lambda m: m["topic"])
    # A publication into another device's namespace: MQTT 5 PUBACK says "not authorized".
    codes = []
    dev.on_publish = lambda cl, ud, mid, rc, props: codes.append(int(rc.value))
    info = dev.publish("devices/pump-8/q", "evil", qos=1)
    info.wait_for_publish(GUARD)
    out["foreign_puback"] = codes
    stop(dev)
elif SCENARIO == "keepalive":
    dev = client("pump-7", "hk_pump7_secret", "pump-7-ka", mqtt.MQTTv5)
    start(dev, keepalive=3600)
    out["connack"] = dev.connack
    stop(dev)
elif SCENARIO == "persistent":
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    dev = client("pump-7", "hk_pump7_secret", "pump-7-persist", mqtt.MQTTv5)
    start(dev, clean_start=False, props=props)
    out["first_session_present"] = dev.connack["session_present"]
    subscribe(dev, "devices/pump-7/inbox", 1)
    stop(dev)
    app = client("oauth2", "token-plant-1", "app-1", mqtt.MQTTv311)
    start(app)
    info = app.publish("devices/pump-7/inbox", "while you were away", qos=1)
    info.wait_for_publish(GUARD)
    stop(app)
    dev = client("pump-7", "hk_pump7_secret", "pump-7-persist", mqtt.MQTTv5)
    start(dev, clean_start=False, props=props)
    out["second_session_present"] = dev.connack["session_present"]
    out["messages"] = wait_messages(dev, 1)
    stop(dev)
elif SCENARIO == "will":
    watcher = client("oauth2", "token-plant-1", "watcher", mqtt.MQTTv311)
    start(watcher)
    subscribe(watcher, "devices/+/status", 1)
    dev = client("pump-7", "hk_pump7_secret", "pump-7-will", mqtt.MQTTv5)
    dev.will_set("devices/pump-7/status", "offline", qos=1, retain=False)
    start(dev)
    stop(dev, ReasonCode(PacketTypes.DISCONNECT, identifier=4))
    out["messages"] = wait_messages(watcher, 1)
    stop(watcher)
elif SCENARIO in ("ws5", "ws311"):
    protocol = mqtt.MQTTv5 if SCENARIO == "ws5" else mqtt.MQTTv311
    dev = client("pump-7", "hk_pump7_secret", "pump-7-ws", protocol, transport="websockets")
    start(dev)
    out["connack"] = dev.connack
    out["granted"] = subscribe(dev, "devices/pump-7/ws", 1)
    # A payload larger than one pipe buffer crosses several WebSocket frames.
    big = "x" * 20000
    info = dev.publish("devices/pump-7/ws", big, qos=1)
    info.wait_for_publish(GUARD)
    msgs = wait_messages(dev, 1)
    out["received_len"] = len(msgs[0]["payload"]) if msgs else 0
    stop(dev)
print(json.dumps(out))
