"""Edgewise plugins in Python: the same shape as the Rust SDK (`edgewise-guest`).

A plugin subclasses `Plugin`, overrides `init` and `on_message`, and names its class once::

    import edgewise_plugin as edgewise

    class Threshold(edgewise.Plugin):
        def init(self):
            self.limit = edgewise.setting("limit", 80.0)

        def on_message(self, msg):
            reading = msg.json()
            if reading["value"] > self.limit:
                edgewise.publish_json(f"alerts/{msg.topic.split('/')[1]}", {"value": reading["value"]})

    Handler = edgewise.handler(Threshold)

`componentize-py` (pinned by `edgewise build`) turns that module into a component of the
`edgewise:plugin` world. The generated bindings (`wit_world`) stay behind this module.

Errors: an exception raised by `init` stops the plugin from starting, with its text; one raised
by `on_message` is that message's failure (a dead letter with the exception's type and text),
not a crash: the instance, and what `init` set up, stays for the next message.
"""

import array
import json
import sys
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import graph as _graph
from wit_world.imports import host as _host
from wit_world.imports import tensor as _tensor
from wit_world.imports.types import PublishError

__all__ = [
    "Plugin", "Message", "handler", "publish", "publish_json", "config", "setting", "now_ms",
    "log", "Model", "PublishRefused",
]


class Message:
    """One MQTT message: `topic`, `payload` (bytes), `received_at_ms`."""

    __slots__ = ("topic", "payload", "received_at_ms")

    def __init__(self, topic, payload, received_at_ms):
        self.topic = topic
        self.payload = bytes(payload)
        self.received_at_ms = received_at_ms

    def text(self):
        """The payload as UTF-8 text."""
        return self.payload.decode("utf-8")

    def json(self):
        """The payload parsed as JSON."""
        return json.loads(self.payload)


class Plugin:
    """Override `init` (once per instance) and `on_message` (each message)."""

    def init(self):
        pass

    def on_message(self, msg):
        raise NotImplementedError("on_message")


class PublishRefused(Exception):
    """The gateway refused a publish: `reason` is `not-granted`, `too-large`, `invalid-topic`
    or `too-many`."""

    def __init__(self, topic, reason):
        super().__init__(f"publish to {topic} refused: {reason}")
        self.topic = topic
        self.reason = reason


def publish(topic, payload):
    """Publishes `payload` (bytes, or text as UTF-8) to `topic`, a topic the manifest grants."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    try:
        _host.publish(topic, bytes(payload))
    except Err as e:
        reason = e.value.name.lower().replace("_", "-") if isinstance(e.value, PublishError) else str(e.value)
        raise PublishRefused(topic, reason) from None


def publish_json(topic, value):
    """Publishes `value` as compact JSON."""
    publish(topic, json.dumps(value, separators=(",", ":")))


def config(key):
    """A setting's text (the manifest's `[settings]`, or the gateway's override), or None."""
    return _host.config(key)


def setting(key, default):
    """A setting converted to the type of `default` (bool, int, float or str), or `default`
    when it is not set; a value that does not convert raises, naming the key."""
    text = _host.config(key)
    if text is None:
        return default
    try:
        if isinstance(default, bool):
            if text not in ("true", "false"):
                raise ValueError("expected true or false")
            return text == "true"
        return type(default)(text)
    except ValueError as e:
        raise ValueError(f"setting `{key}` = {text!r}: {e}") from None


def now_ms():
    """Wall-clock time in milliseconds since the Unix epoch."""
    return _host.now_ms()


class _Log:
    """`log.info("...")` and so on: lines in the gateway's log, tagged with the plugin."""

    def __getattr__(self, level):
        value = {"trace": _host.Level.TRACE, "debug": _host.Level.DEBUG, "info": _host.Level.INFO,
                 "warn": _host.Level.WARN, "error": _host.Level.ERROR}.get(level)
        if value is None:
            raise AttributeError(level)
        return lambda message: _host.log(value, str(message))


log = _Log()


class Outputs:
    """A model's outputs by name: `f32(name)` (a list of floats), `shape(name)`, `bytes(name)`."""

    def __init__(self, model, named):
        self._model = model
        self._tensors = {name: t for name, t in named}

    def names(self):
        return list(self._tensors)

    def _get(self, name):
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"model `{self._model}` has no output `{name}`; it has {self.names()}") from None

    def shape(self, name):
        return list(self._get(name).dimensions())

    def bytes(self, name):
        return bytes(self._get(name).data())

    def f32(self, name):
        values = array.array("f")
        values.frombytes(self.bytes(name))
        if sys.byteorder != "little":
            values.byteswap()
        return values.tolist()


class Model:
    """A model the manifest declares, loaded by the gateway: `Model.by_name("vibration")`."""

    def __init__(self, name, graph, context):
        self.name = name
        self._graph = graph
        self._context = context

    @classmethod
    def by_name(cls, name):
        try:
            graph = _graph.load_by_name(name)
            return cls(name, graph, graph.init_execution_context())
        except Err as e:
            raise RuntimeError(f"loading model `{name}`: {_nn_error(e)}") from None

    def run(self, inputs):
        """Runs the model on `{"input name": (shape, [floats])}` and returns its `Outputs`."""
        tensors = []
        for name, (shape, values) in inputs.items():
            data = array.array("f", values)
            if sys.byteorder != "little":
                data.byteswap()
            tensors.append((name, _tensor.Tensor(list(shape), _tensor.TensorType.FP32, data.tobytes())))
        try:
            return Outputs(self.name, self._context.compute(tensors))
        except Err as e:
            raise RuntimeError(f"running model `{self.name}`: {_nn_error(e)}") from None


def _nn_error(e):
    error = e.value
    try:
        return f"{error.code().name.lower()}: {error.data()}"
    except AttributeError:
        return str(error)


def _failure(e):
    """An exception as the text of a failed call: its type, its message, and where."""
    where = traceback.extract_tb(e.__traceback__)
    at = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    return f"{type(e).__name__}: {e}{at}"


def handler(plugin_class):
    """The `Handler` componentize-py exports, serving one `plugin_class` instance for the life
    of the component instance (componentize-py makes a new Handler for every call)."""
    state = {}

    class Handler(exports.Handler):
        def init(self):
            try:
                instance = plugin_class()
                instance.init()
                state["plugin"] = instance
            except Exception as e:
                raise Err(_failure(e))

        def on_message(self, msg):
            try:
                state["plugin"].on_message(Message(msg.topic, msg.payload, msg.received_at_ms))
            except Err:
                raise
            except Exception as e:
                raise Err(_failure(e))

    return Handler
