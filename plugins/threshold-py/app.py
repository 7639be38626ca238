"""Threshold alerts in Python: the Rust `threshold` example, message for message.

Input on `sensors/<sensor>/reading`: `{"value": 81.5}`. When a sensor's value rises above
`limit`, publishes `{"sensor", "state": "high", "value", "limit"}` to `alerts/<sensor>`; when it
falls back below `limit - hysteresis`, `"state": "normal"`. One alert per crossing.
"""
import edgewise_plugin as edgewise


class Threshold(edgewise.Plugin):
    def init(self):
        self.limit = edgewise.setting("limit", 80.0)
        self.hysteresis = edgewise.setting("hysteresis", 2.0)
        if not self.hysteresis >= 0:
            raise ValueError(f"setting `hysteresis` = {self.hysteresis} must be 0 or more")
        self.high = {}

    def on_message(self, msg):
        parts = msg.topic.split("/")
        if len(parts) < 2:
            raise ValueError(f"topic {msg.topic} has no sensor level")
        sensor = parts[1]
        value = float(msg.json()["value"])
        was_high = self.high.get(sensor, False)
        now_high = value >= self.limit - self.hysteresis if was_high else value > self.limit
        if now_high != was_high:
            state = "high" if now_high else "normal"
            edgewise.publish_json(f"alerts/{sensor}", {"sensor": sensor, "state": state, "value": value, "limit": self.limit})
        self.high[sensor] = now_high


Handler = edgewise.handler(Threshold)
