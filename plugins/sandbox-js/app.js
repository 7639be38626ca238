// Tries what a JavaScript plugin must not do, and says what happened: for tests of the sandbox.
//
// On `sandbox-js/try/<what>` it attempts <what> and publishes the outcome to
// `sandbox-js/result/<what>` as `{"allowed": bool, "detail": "..."}`:
// - `fetch`: an HTTP request to 127.0.0.1:1883 (the broker port of a usual gateway);
// - `websocket`, `xhr`: the browser's other ways out;
// - `files`: Node's `require("fs")`, Deno, or QuickJS's `std` module, whichever exists;
// - `environ`: the environment, as Node (`process.env`) or QuickJS (`std.getenviron`) shows it.
import * as edgewise from "../../guest-sdk/js/edgewise.js";

const attempts = {
  fetch: () => fetch("http://127.0.0.1:1883/"),
  websocket: () => new WebSocket("ws://127.0.0.1:1883/"),
  xhr: () => new XMLHttpRequest(),
  files: () => {
    if (typeof require === "function") return require("fs").readFileSync("/etc/passwd", "utf8");
    if (typeof Deno === "object") return Deno.readTextFileSync("/etc/passwd");
    return std.loadFile("/etc/passwd");
  },
  environ: () => (typeof process === "object" ? Object.keys(process.env) : std.getenviron()),
};

class Sandbox extends edgewise.Plugin {
  onMessage(msg) {
    const what = msg.topic.split("/").pop();
    const attempt = attempts[what];
    if (attempt === undefined) throw new RangeError(`unknown attempt ${what}`);
    let result;
    try {
      result = { allowed: true, detail: String(attempt()) };
    } catch (e) {
      result = { allowed: false, detail: `${e.name}: ${e.message}` };
    }
    edgewise.publishJson(`sandbox-js/result/${what}`, result);
  }
}

export const handler = edgewise.handler(Sandbox);
