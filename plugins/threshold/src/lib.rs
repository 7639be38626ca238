//! Threshold alerts, no ML: watches JSON readings and raises an alert when one crosses a limit.
//!
//! Input on `sensors/<sensor>/reading`: `{"value": 81.5}`. When a sensor's value rises above
//! `limit`, publishes `{"sensor", "state": "high", "value", "limit"}` to `alerts/<sensor>`;
//! when it falls back below `limit - hysteresis`, publishes `"state": "normal"`. One alert per
//! crossing, not one per reading: the state of each sensor is kept between messages.

use std::collections::HashMap;

use edgewise_guest::{Error, Message, Plugin, Result, export_plugin, publish_json, setting};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Reading {
    value: f64,
}

#[derive(Serialize)]
struct Alert<'a> {
    sensor: &'a str,
    state: &'a str,
    value: f64,
    limit: f64,
}

struct Threshold {
    limit: f64,
    hysteresis: f64,
    high: HashMap<String, bool>,
}

impl Plugin for Threshold {
    fn init() -> Result<Self> {
        let limit: f64 = setting("limit", 80.0)?;
        let hysteresis: f64 = setting("hysteresis", 2.0)?;
        if hysteresis.is_nan() || hysteresis < 0.0 {
            return Err(Error::msg(format!(
                "setting `hysteresis` = {hysteresis} must be 0 or more"
            )));
        }
        Ok(Threshold {
            limit,
            hysteresis,
            high: HashMap::new(),
        })
    }

    fn on_message(&mut self, msg: Message) -> Result<()> {
        let sensor = msg
            .topic
            .split('/')
            .nth(1)
            .ok_or_else(|| Error::msg(format!("topic {} has no sensor level", msg.topic)))?;
        let reading: Reading = msg.json()?;
        let was_high = self.high.get(sensor).copied().unwrap_or(false);
        let now_high = if was_high {
            reading.value >= self.limit - self.hysteresis
        } else {
            reading.value > self.limit
        };
        if now_high != was_high {
            let state = if now_high { "high" } else { "normal" };
            let alert = Alert {
                sensor,
                state,
                value: reading.value,
                limit: self.limit,
            };
            publish_json(&format!("alerts/{sensor}"), &alert)?;
        }
        self.high.insert(sensor.to_owned(), now_high);
        Ok(())
    }
}

export_plugin!(Threshold);
