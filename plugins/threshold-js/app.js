// Threshold alerts in JavaScript: the Rust `threshold` example, message for message.
//
// Input on `sensors/<sensor>/reading`: `{"value": 81.5}`. When a sensor's value rises above
// `limit`, publishes `{"sensor", "state": "high", "value", "limit"}` to `alerts/<sensor>`; when it
// falls back below `limit - hysteresis`, `"state": "normal"`. One alert per crossing.
import * as edgewise from "../../guest-sdk/js/edgewise.js";

class Threshold extends edgewise.Plugin {
  init() {
    this.limit = edgewise.setting("limit", 80.0);
    this.hysteresis = edgewise.setting("hysteresis", 2.0);
    if (!(this.hysteresis >= 0)) {
      throw new RangeError(`setting \`hysteresis\` = ${this.hysteresis} must be 0 or more`);
    }
    this.high = new Map();
  }

  onMessage(msg) {
    const parts = msg.topic.split("/");
    if (parts.length < 2) throw new Error(`topic ${msg.topic} has no sensor level`);
    const sensor = parts[1];
    const reading = msg.json();
    if (!("value" in Object(reading))) throw new TypeError(`no "value" in ${msg.text()}`);
    const value = Number(reading.value);
    const wasHigh = this.high.get(sensor) ?? false;
    const nowHigh = wasHigh ? value >= this.limit - this.hysteresis : value > this.limit;
    if (nowHigh !== wasHigh) {
      const state = nowHigh ? "high" : "normal";
      edgewise.publishJson(`alerts/${sensor}`, { sensor, state, value, limit: this.limit });
    }
    this.high.set(sensor, nowHigh);
  }
}

export const handler = edgewise.handler(Threshold);
