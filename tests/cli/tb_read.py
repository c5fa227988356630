#!/usr/bin/env python3
"""tb_read.py: reads TensorBoard event files with the standard library only (CI has no pip).

Checks the TFRecord framing of every record (length, masked CRC-32C of the length and of the data), decodes
each tensorflow.Event by hand (wall_time 1, step 2, file_version 3, summary 5 -> Value: tag 1, simple_value 2)
and prints one JSON object per scalar: {"step", "tag", "value", "wall_time"}; the first line is
{"file_version": ...}. Exit status 1 with a message on a bad CRC, a short record or an unknown wire type.

usage: tb_read.py EVENTFILE          (tests/cli/test_tensorboard.sh)
       tb_read.py --crc32c TEXT      (prints crc32c and the masked crc of TEXT, hex)
"""
import json, struct, sys

POLY = 0x82F63B78
TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ (POLY if c & 1 else 0)
    TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(c):
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, i):
    shift = v = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def fields(buf):
    """(field number, wire type, value) of a protobuf message; value is int, bytes or float bytes."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unknown wire type {wt}")
        if i > len(buf):
            raise ValueError("field runs past the message")
        yield num, wt, v


def records(data):
    at = 0
    while at < len(data):
        if len(data) - at < 12:
            raise ValueError(f"offset {at}: short record header")
        hdr = data[at:at + 8]
        (n,) = struct.unpack("<Q", hdr)
        (hcrc,) = struct.unpack("<I", data[at + 8:at + 12])
        if hcrc != masked(crc32c(hdr)):
            raise ValueError(f"offset {at}: length CRC mismatch")
        body = data[at + 12:at + 12 + n]
        if len(body) != n or len(data) < at + 16 + n:
            raise ValueError(f"offset {at}: short record")
        (dcrc,) = struct.unpack("<I", data[at + 12 + n:at + 16 + n])
        if dcrc != masked(crc32c(body)):
            raise ValueError(f"offset {at}: data CRC mismatch")
        yield body
        at += 16 + n


def main():
    if sys.argv[1] == "--crc32c":
        d = sys.argv[2].encode()
        print(f"{crc32c(d):08x} {masked(crc32c(d)):08x}")
        return
    data = open(sys.argv[1], "rb").read()
    out = []
    for body in records(data):
        wall, step, version, values = 0.0, 0, None, []
        for num, wt, v in fields(body):
            if num == 1 and wt == 1:
                (wall,) = struct.unpack("<d", v)
            elif num == 2 and wt == 0:
                step = v - (1 << 64) if v >= 1 << 63 else v
            elif num == 3 and wt == 2:
                version = v.decode()
            elif num == 5 and wt == 2:
                for vn, vwt, vv in fields(v):
                    if vn != 1 or vwt != 2:
                        continue
                    tag, val = None, None
                    for fn, fwt, fv in fields(vv):
                        if fn == 1 and fwt == 2:
                            tag = fv.decode()
                        elif fn == 2 and fwt == 5:
                            (val,) = struct.unpack("<f", fv)
                    values.append((tag, val))
        if version is not None:
            out.append({"file_version": version, "wall_time": wall})
        for tag, val in values:
            out.append({"step": step, "tag": tag, "value": val, "wall_time": wall})
    for o in out:
        print(json.dumps(o))


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        print(f"tb_read.py: {sys.argv[1]}: {e}", file=sys.stderr)
        sys.exit(1)
