"""Client failover across tern nodes with paho-mqtt (docs/operations.md, "Client failover").

    python3 failover_example.py 10.0.0.11:1883,10.0.0.12:1883,10.0.0.13:1883 [COUNT]

Keeps one persistent MQTT 5 session (client id "failover-example", subscribed to
"example/#" with QoS 1) and moves it to the next node of the list whenever the
connection fails or is refused; a node that says "use another server" (0x9C) is
followed to the server it names. Prints each connection and message; exits after COUNT
messages (default: never). tests/integration/test_deploy_files.py runs it.
"""
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

USE_ANOTHER_SERVER = 0x9C


def main(hosts, count, client_id="failover-example", topic="example/#"):
    kw = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION1} \
        if hasattr(mqtt, "CallbackAPIVersion") else {}  # paho 2.x
    c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5, **kw)
    got, redirect, at = [], [], [None]

    def on_connect(c, _, flags, rc, props):
        print("connected to %s rc=%s session_present=%d" % (
            at[0], rc, flags["session present"]), flush=True)
        follow(rc, props)
        if rc == 0 and not flags["session present"]:
            c.subscribe(topic, qos=1)  # a resumed session keeps its subscriptions

    def on_disconnect(c, _, rc, props=None):
        print("disconnected rc=%s" % rc, flush=True)
        follow(rc, props)

    def follow(rc, props):
        if rc == USE_ANOTHER_SERVER and props and hasattr(props, "ServerReference"):
            redirect.append(props.ServerReference)

    def on_message(c, _, m):
        got.append(m.payload)
        print("received %s %s" % (m.topic, m.payload.decode()), flush=True)

    c.on_connect, c.on_disconnect, c.on_message = on_connect, on_disconnect, on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600  # the session outlives the connection
    i = 0
    while count is None or len(got) < count:
        at[0] = redirect.pop() if redirect else hosts[i % len(hosts)]
        i += 1
        host, port = at[0].rsplit(":", 1)
        try:
            c.connect(host, int(port), keepalive=10, clean_start=False, properties=props)
        except OSError as e:
            print("cannot connect to %s: %s" % (at[0], e), flush=True)
            time.sleep(0.5)
            continue
        while c.loop(1.0) == mqtt.MQTT_ERR_SUCCESS and (count is None or len(got) < count):
            pass  # loop() fails once the connection is lost: try the next node
    c.disconnect()


if __name__ == "__main__":
    main(sys.argv[1].split(","), int(sys.argv[2]) if len(sys.argv) > 2 else None)
