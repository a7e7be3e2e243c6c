"""Minimal safetensors reader/writer built on numpy.

The `safetensors` pip package is deliberately not used: the tests must run with
Debian's python3 only, and writing the format by hand keeps an independent check
on convnet's own C implementation of it.

Layout: u64 little-endian header length N, N bytes of JSON header (padded with
spaces so the data starts 8-byte aligned), then the tensors' raw little-endian
bytes back to back, in header order.
"""

import json
import struct

import numpy as np

# safetensors dtype tag <-> little-endian numpy dtype.  Explicit '<' so a file
# written on a big-endian host would still be correct.
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_TAGS = {(dt.kind, dt.itemsize): tag for tag, dt in _DTYPES.items()}


def _to_numpy(value):
    """Accept numpy arrays, torch tensors and numpy scalars alike."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        value = value.detach().cpu().contiguous().numpy()
    # Not np.ascontiguousarray: it turns 0-d arrays (e.g. num_batches_tracked)
    # into shape [1].
    return np.asarray(value, order="C")


def _tag(arr):
    key = (arr.dtype.kind, arr.dtype.itemsize)
    if key not in _TAGS:
        raise TypeError(f"unsupported dtype for safetensors: {arr.dtype}")
    return _TAGS[key]


def save(path, tensors, metadata=None):
    """Write `tensors` (name -> ndarray or torch tensor) to `path`.

    Tensors are stored in the dict's iteration order so that files are
    byte-for-byte reproducible from the same inputs.
    """
    header = {}
    blobs = []
    offset = 0
    for name, value in tensors.items():
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved")
        arr = _to_numpy(value)
        tag = _tag(arr)
        raw = arr.astype(_DTYPES[tag], copy=False).tobytes(order="C")
        header[name] = {
            "dtype": tag,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        # The format only allows a str -> str map here.
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def load(path):
    """Read `path`; returns (dict name -> ndarray, metadata dict or {}).

    Offsets are validated so that a truncated or corrupt file raises instead of
    silently yielding garbage.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} exceeds file size")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    body = memoryview(data)[8 + n :]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        dtype = _DTYPES[info["dtype"]]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(o) for o in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= begin <= end <= len(body)) or end - begin != count * dtype.itemsize:
            raise ValueError(f"{path}: bad data_offsets for {name!r}")
        # Copy so the arrays are writable and do not pin the whole file buffer.
        tensors[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).copy()
    return tensors, metadata


if __name__ == "__main__":
    # Round-trip self-check.
    import os
    import tempfile

    rng = np.random.default_rng(0)
    ref = {
        "a": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "b": np.arange(5, dtype=np.int64),
        "c": rng.standard_normal(3),
        "d": np.array(7, dtype=np.int32),
        "e": np.arange(3, dtype=np.uint8),
    }
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "t.safetensors")
        save(p, ref, {"k": "v"})
        got, meta = load(p)
    assert meta == {"k": "v"}, meta
    assert list(got) == list(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype and np.array_equal(got[k], ref[k]), k
    print("st.py: round trip ok")
