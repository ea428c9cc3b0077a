"""Builds the vetting test corpus in code (nothing binary is committed): malicious and benign files
across the formats Mantle scans. `build(dir)` writes them and returns {filename: expected verdict}.

PyTorch checkpoints are written without torch: a stand-in `torch` module with the same import
paths makes `pickle` emit the exact globals, persistent ids and layouts torch.save produces.
"""

import collections
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _fake_torch():
    """Registers a minimal `torch` whose globals pickle by the real names."""
    if "torch" in sys.modules and getattr(sys.modules["torch"], "_mantle_fake", False):
        return sys.modules["torch"]
    torch = types.ModuleType("torch")
    torch._mantle_fake = True
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks):
        raise RuntimeError("never called: only pickled")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    class FloatStorage:
        pass

    FloatStorage.__module__ = "torch"
    FloatStorage.__qualname__ = "FloatStorage"
    torch.FloatStorage = FloatStorage
    torch._utils = utils
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils
    return torch


class _Storage:
    def __init__(self, key, numel, data):
        self.key, self.numel, self.data = key, numel, data


class _Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce_ex__(self, protocol):
        torch = _fake_torch()
        stride = tuple(int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape)))
        return (torch._utils._rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), stride, False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _fake_torch().FloatStorage, obj.key, "cpu", obj.numel)
        return None


def _state_dict(n_tensors=3, numel=64, payload=None):
    storages, sd = [], collections.OrderedDict()
    for i in range(n_tensors):
        data = payload(i) if payload else np.arange(numel, dtype=np.float32).tobytes()
        storage = _Storage(str(i), len(data) // 4, data)
        storages.append(storage)
        sd[f"layer{i}.weight"] = _Tensor(storage, (len(data) // 4,))
    return sd, storages


def _dump(obj, protocol=2):
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def torch_zip(path, extra_pickle=None, n_tensors=3, payload=None, top="archive"):
    """A PyTorch zip checkpoint as torch.save writes it (uncompressed members)."""
    sd, storages = _state_dict(n_tensors, payload=payload)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{top}/data.pkl", extra_pickle if extra_pickle is not None else _dump(sd))
        z.writestr(f"{top}/byteorder", "little")
        for s in storages:
            z.writestr(f"{top}/data/{s.key}", s.data)
        z.writestr(f"{top}/version", "3\n")


def torch_legacy(path, main=None):
    """The pre-1.6 format: magic, protocol and sys-info pickles, the state dict, the storage keys, raw storages."""
    sd, storages = _state_dict()
    out = io.BytesIO()
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(obj, out, protocol=2)
    out.write(main if main is not None else _dump(sd))
    pickle.dump([s.key for s in storages], out, protocol=2)
    for s in storages:
        out.write(struct.pack("<q", s.numel))
        out.write(s.data)
    open(path, "wb").write(out.getvalue())


def _gguf(template):
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [
        (s("general.architecture"), 8, s("llama")),
        (s("tokenizer.chat_template"), 8, s(template)),
        (s("tokenizer.ggml.tokens"), 9, struct.pack("<IQ", 8, 2) + s("<s>") + s("</s>")),
    ]
    out = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kv))
    for key, kind, value in kv:
        out += key + struct.pack("<I", kind) + value
    out += s("w") + struct.pack("<I", 1) + struct.pack("<Q", 8) + struct.pack("<I", 0) + struct.pack("<Q", 0)
    while len(out) % 32:
        out += b"\0"
    return out + b"\0" * 32


def _safetensors(header, data_len):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"\0" * data_len


CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


def build(root):
    os.makedirs(root, exist_ok=True)
    expect = {}

    def put(name, data, verdict):
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        expect[name] = verdict

    # Malicious pickles.
    for proto in range(6):
        put(f"evil_reduce_p{proto}.pkl", pickle.dumps(Evil(), protocol=proto), "unsafe")
    # Module and name memoized, fetched back with BINGET, then STACK_GLOBAL.
    memo = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93\x8c\x02id\x85R."
    put("memo_stack_global.pkl", memo, "unsafe")
    put("second_pickle.pkl", pickle.dumps({"ok": 1}, protocol=2) + pickle.dumps(Evil(), protocol=2), "unsafe")
    put("getattr_gadget.pkl", b"\x80\x02cbuiltins\ngetattr\ncos\nsystem\nX\x06\x00\x00\x00system\x86R.", "unsafe")
    put("runpy.pkl", b"\x80\x02crunpy\nrun_path\nX\x04\x00\x00\x00x.py\x85R.", "unsafe")
    put("webbrowser.pkl", b"cwebbrowser\nopen\n(S'http://x'\ntR.", "unsafe")
    buf = io.BytesIO()
    np.save(buf, np.array([Evil()], dtype=object), allow_pickle=True)
    put("object_array.npy", buf.getvalue(), "unsafe")
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("ok.npy", _npy_bytes(np.ones(3)))
        z.writestr("bad.npy", buf.getvalue())
    put("object_array.npz", npz.getvalue(), "unsafe")
    torch_zip(os.path.join(root, "torch_zip_evil.pt"), extra_pickle=pickle.dumps(Evil(), protocol=2), top="my_model")
    expect["torch_zip_evil.pt"] = "unsafe"
    torch_legacy(os.path.join(root, "torch_legacy_evil.bin"), main=pickle.dumps(Evil(), protocol=2))
    expect["torch_legacy_evil.bin"] = "unsafe"
    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as z:
        z.writestr("../../etc/cron.d/evil", "* * * * * root id")
    put("zip_slip.zip", slip.getvalue(), "unsafe")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * (64 * 1024 * 1024))
    put("zip_bomb.pt", bomb.getvalue(), "unsafe")
    put("not_really.safetensors", b"\x80\x02cos\nsystem\n.", "unsafe")
    put("overlap.safetensors", _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12), "unsafe")
    put("template_escape.gguf", _gguf("{{ ''.__class__.__mro__[1].__subclasses__() }}"), "unsafe")
    keras_evil = io.BytesIO()
    with zipfile.ZipFile(keras_evil, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        z.writestr("config.json", json.dumps({"class_name": "Functional", "config": {"layers": [
            {"class_name": "InputLayer", "module": "keras.layers", "config": {"name": "in"}},
            {"class_name": "TimeDistributed", "module": "keras.layers", "config": {"name": "td", "layer": {
                "class_name": "Lambda", "module": "keras.layers", "config": {"name": "hidden", "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAAAAAAA"}}}}}}]}}))
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    put("nested_lambda.keras", keras_evil.getvalue(), "unsafe")

    # Benign files that must come out safe.
    torch_zip(os.path.join(root, "state_dict.pt"))
    expect["state_dict.pt"] = "safe"
    torch_legacy(os.path.join(root, "state_dict_legacy.bin"))
    expect["state_dict_legacy.bin"] = "safe"
    for proto in range(6):
        put(f"plain_dict_p{proto}.pkl", pickle.dumps({"a": [1, 2.5, "x", b"raw", None, True], "od": collections.OrderedDict(a=1), "s": {1, 2}, "t": (1, 2)}, protocol=proto), "safe")
        put(f"numpy_p{proto}.pkl", pickle.dumps({"w": np.arange(10, dtype=np.float32), "x": np.float64(3.0)}, protocol=proto), "safe")
    put("array.npy", _npy_bytes(np.arange(12, dtype=np.int64).reshape(3, 4)), "safe")
    arrays = io.BytesIO()
    np.savez(arrays, a=np.ones(2), b=np.zeros((2, 2)))
    put("arrays.npz", arrays.getvalue(), "safe")
    put("model.safetensors", _safetensors({"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, 16), "safe")
    put("chat.gguf", _gguf(CHATML), "safe")
    keras_ok = io.BytesIO()
    with zipfile.ZipFile(keras_ok, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        z.writestr("config.json", json.dumps({"class_name": "Sequential", "module": "keras", "config": {"layers": [{"class_name": "Dense", "module": "keras.layers", "config": {"name": "d"}}]}}))
    put("dense.keras", keras_ok.getvalue(), "safe")
    return expect


def _npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


if __name__ == "__main__":
    print(json.dumps(build(sys.argv[1]), indent=1))
