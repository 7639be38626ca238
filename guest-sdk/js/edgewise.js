// Edgewise plugins in JavaScript: the same shape as the Rust SDK (`edgewise-guest`) and the
// Python one (`edgewise_plugin`).
//
// A plugin extends `Plugin`, overrides `init` and `onMessage`, and exports its handler once:
//
//     import * as edgewise from "./sdk/js/edgewise.js";
//
//     class Threshold extends edgewise.Plugin {
//       init() { this.limit = edgewise.setting("limit", 80); }
//       onMessage(msg) {
//         const { value } = msg.json();
//         if (value > this.limit) edgewise.publishJson(`alerts/${msg.topic.split("/")[1]}`, { value });
//       }
//     }
//
//     export const handler = edgewise.handler(Threshold);
//
// componentize-qjs (pinned by `edgewise build`) turns that module into a component of the
// `edgewise:plugin` world; the WIT imports stay behind this module.
//
// Errors: an exception thrown by `init` stops the plugin from starting, with its text; one
// thrown by `onMessage` is that message's failure (a dead letter with the error's name, text and
// line), not a crash: the instance, and what `init` set up, stays for the next message.

import * as host from "edgewise:plugin/host@0.1.0";
import * as graph from "wasi:nn/graph@0.2.0-rc-2024-10-28";
import * as tensor from "wasi:nn/tensor@0.2.0-rc-2024-10-28";

// QuickJS has no TextEncoder/TextDecoder: UTF-8 by hand, strict like `{ fatal: true }`.
function encodeUtf8(text) {
  const bytes = [];
  for (const char of text) {
    let c = char.codePointAt(0);
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd; // a lone surrogate, as TextEncoder does
    if (c < 0x80) bytes.push(c);
    else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(bytes);
}

function decodeUtf8(bytes) {
  // Most payloads are ASCII (JSON): 8 KiB at a time, as character codes.
  let ascii = "";
  let start = 0;
  while (start < bytes.length) {
    const chunk = bytes.subarray(start, start + 8192);
    if (chunk.some((b) => b >= 0x80)) break;
    ascii += String.fromCharCode.apply(null, chunk);
    start += chunk.length;
  }
  if (start === bytes.length) return ascii;
  return ascii + decodeUtf8Slow(bytes.subarray(start), start);
}

function decodeUtf8Slow(bytes, offset) {
  const units = [];
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    const [length, least] = b < 0x80 ? [1, 0] : b >= 0xc2 && b < 0xe0 ? [2, 0x80] : b >= 0xe0 && b < 0xf0 ? [3, 0x800] : b >= 0xf0 && b < 0xf5 ? [4, 0x10000] : [0, 0];
    if (length === 0 || i + length > bytes.length) throw new TypeError(`not UTF-8: byte ${offset + i}`);
    let c = length === 1 ? b : b & (0xff >> (length + 1));
    for (let k = 1; k < length; k++) {
      const next = bytes[i + k];
      if ((next & 0xc0) !== 0x80) throw new TypeError(`not UTF-8: byte ${offset + i + k}`);
      c = (c << 6) | (next & 63);
    }
    if (c < least || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) throw new TypeError(`not UTF-8: byte ${offset + i}`);
    units.push(c);
    i += length;
  }
  let text = "";
  for (let i = 0; i < units.length; i += 4096) text += String.fromCodePoint(...units.slice(i, i + 4096));
  return text;
}

/** One MQTT message: `topic`, `payload` (a Uint8Array), `receivedAtMs`. */
export class Message {
  constructor(topic, payload, receivedAtMs) {
    this.topic = topic;
    this.payload = payload instanceof Uint8Array ? payload : Uint8Array.from(payload);
    this.receivedAtMs = Number(receivedAtMs);
  }

  /** The payload as UTF-8 text (a TypeError if it is not UTF-8). */
  text() {
    return decodeUtf8(this.payload);
  }

  /** The payload parsed as JSON. */
  json() {
    return JSON.parse(this.text());
  }
}

/** Override `init` (once per instance) and `onMessage` (each message). */
export class Plugin {
  init() {}

  onMessage(_msg) {
    throw new Error("onMessage is not implemented");
  }
}

/** The gateway refused a publish: `reason` is `not-granted`, `too-large`, `invalid-topic` or
 * `too-many`. */
export class PublishRefused extends Error {
  constructor(topic, reason) {
    super(`publish to ${topic} refused: ${reason}`);
    this.name = "PublishRefused";
    this.topic = topic;
    this.reason = reason;
  }
}

/** What a failed WIT call carried: the toolchain throws it bare or wrapped with `payload`. */
function payloadOf(e) {
  return e !== null && typeof e === "object" && "payload" in e ? e.payload : e;
}

/** Publishes `payload` (a Uint8Array, or text as UTF-8) to `topic`, a topic the manifest
 * grants. */
export function publish(topic, payload) {
  const bytes = typeof payload === "string" ? encodeUtf8(payload) : payload;
  try {
    host.publish(topic, bytes);
  } catch (e) {
    throw new PublishRefused(topic, String(payloadOf(e)));
  }
}

/** Publishes `value` as compact JSON. */
export function publishJson(topic, value) {
  publish(topic, JSON.stringify(value));
}

/** A setting's text (the manifest's `[settings]`, or the gateway's override), or null. */
export function config(key) {
  return host.config(key) ?? null;
}

/** A setting converted to the type of `fallback` (boolean, number or string), or `fallback`
 * when it is not set; a value that does not convert throws, naming the key. */
export function setting(key, fallback) {
  const text = config(key);
  if (text === null) return fallback;
  if (typeof fallback === "boolean") {
    if (text !== "true" && text !== "false") {
      throw new TypeError(`setting \`${key}\` = "${text}": expected true or false`);
    }
    return text === "true";
  }
  if (typeof fallback === "number") {
    const value = Number(text);
    if (text.trim() === "" || Number.isNaN(value)) {
      throw new TypeError(`setting \`${key}\` = "${text}": not a number`);
    }
    return value;
  }
  return text;
}

/** Wall-clock time in milliseconds since the Unix epoch. */
export function nowMs() {
  return Number(host.nowMs());
}

/** `log.info("...")` and so on: lines in the gateway's log, tagged with the plugin. */
export const log = Object.freeze(
  Object.fromEntries(
    ["trace", "debug", "info", "warn", "error"].map((level) => [
      level,
      (message) => host.log(level, String(message)),
    ]),
  ),
);

// QuickJS has no `console`: its lines go to the gateway's log like `log`'s.
if (typeof globalThis.console === "undefined") {
  const line = (level) => (...parts) => host.log(level, parts.map(String).join(" "));
  globalThis.console = Object.freeze({
    log: line("info"),
    info: line("info"),
    debug: line("debug"),
    warn: line("warn"),
    error: line("error"),
  });
}

/** A model's outputs by name: `f32(name)` (a Float32Array), `shape(name)`, `bytes(name)`. */
export class Outputs {
  constructor(model, named) {
    this.model = model;
    this.tensors = new Map(named);
  }

  names() {
    return [...this.tensors.keys()];
  }

  get(name) {
    const found = this.tensors.get(name);
    if (found === undefined) {
      throw new RangeError(`model \`${this.model}\` has no output \`${name}\`; it has ${this.names()}`);
    }
    return found;
  }

  shape(name) {
    return [...this.get(name).dimensions()];
  }

  bytes(name) {
    return Uint8Array.from(this.get(name).data());
  }

  f32(name) {
    const bytes = this.bytes(name);
    // Tensor data is little-endian, as is every wasm memory.
    return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  }
}

/** A model the manifest declares, loaded by the gateway: `Model.byName("vibration")`. */
export class Model {
  constructor(name, loaded, context) {
    this.name = name;
    this.graph = loaded;
    this.context = context;
  }

  static byName(name) {
    try {
      const loaded = graph.loadByName(name);
      return new Model(name, loaded, loaded.initExecutionContext());
    } catch (e) {
      throw new Error(`loading model \`${name}\`: ${nnError(e)}`);
    }
  }

  /** Runs the model on `{ "input name": [shape, values] }` and returns its `Outputs`. */
  run(inputs) {
    const tensors = Object.entries(inputs).map(([name, [shape, values]]) => {
      const data = Float32Array.from(values);
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      return [name, new tensor.Tensor(shape, "FP32", bytes)];
    });
    try {
      return new Outputs(this.name, this.context.compute(tensors));
    } catch (e) {
      throw new Error(`running model \`${this.name}\`: ${nnError(e)}`);
    }
  }
}

function nnError(e) {
  const error = payloadOf(e);
  try {
    return `${error.code()}: ${error.data()}`;
  } catch {
    return String(error);
  }
}

/** An exception as the text of a failed call: its name, its message, and where. */
function failure(e) {
  if (!(e instanceof Error)) return `thrown: ${String(e)}`;
  // The first frame in the plugin's own code: not this SDK, not the engine's (`<input>` is
  // QuickJS's name for the text JSON.parse reads).
  const frames = (e.stack ?? "").split("\n").map((l) => l.trim()).filter((l) => /:\d+/.test(l));
  const where = frames.find((l) => !l.includes("edgewise.js") && !l.includes("<input>")) ?? frames[0];
  return `${e.name}: ${e.message}${where ? ` (${where})` : ""}`;
}

/** The `handler` export, serving one `PluginClass` instance for the life of the component
 * instance. */
export function handler(PluginClass) {
  let plugin = null;
  return {
    init() {
      try {
        plugin = new PluginClass();
        plugin.init();
      } catch (e) {
        plugin = null;
        throw failure(e);
      }
    },
    onMessage(msg) {
      if (plugin === null) throw "the plugin was not initialised";
      try {
        plugin.onMessage(new Message(msg.topic, msg.payload, msg.receivedAtMs));
      } catch (e) {
        throw failure(e);
      }
    },
  };
}
