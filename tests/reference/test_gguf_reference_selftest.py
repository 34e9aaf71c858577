#!/usr/bin/python3
"""Self-test for gguf_reference.py (stdlib unittest + numpy only).

Run:  /usr/bin/python3 tests/reference/test_gguf_reference_selftest.py

The test carries its own minimal GGUF writer and block packers.  Packers are
written from the block-layout statements (which byte / nibble / bit holds
which element); expected values are computed from the *meaning* of the
quantisation (element e has quant q[e] and belongs to sub-block e // size),
so a wrong layout in either the packer or the reader shows up as a mismatch.
"""

import os
import struct
import sys
import tempfile
import time
import unittest

import numpy as np

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_reference as gr  # noqa: E402

# --------------------------------------------------------------------------
# Minimal GGUF writer
# --------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
        BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}


def _enc_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _enc_value(vtype, value):
    if vtype == STR:
        return _enc_str(value)
    if vtype == ARR:
        elem_type, items = value
        out = struct.pack("<IQ", elem_type, len(items))
        return out + b"".join(_enc_value(elem_type, it) for it in items)
    return struct.pack(_FMT[vtype], value)


def write_gguf(path, kvs, tensors, version=3, alignment=None, pad_byte=b"\x00"):
    """kvs: [(key, vtype, value)]; arrays are value=(elem_type, list).
    tensors: [(name, dims, ggml_type, raw_bytes)] with dims in GGUF order."""
    kvs = list(kvs)
    align = gr.DEFAULT_ALIGNMENT
    if alignment is not None:
        kvs.append(("general.alignment", U32, alignment))
        align = alignment
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, vtype, value in kvs:
        head += _enc_str(key) + struct.pack("<I", vtype) + _enc_value(vtype, value)
    data = b""
    infos = b""
    for name, dims, gtype, raw in tensors:
        data += pad_byte * ((-len(data)) % align)
        infos += _enc_str(name) + struct.pack("<I", len(dims))
        infos += b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", gtype, len(data))
        data += raw
    blob = head + infos
    blob += pad_byte * ((-len(blob)) % align)
    with open(path, "wb") as f:
        f.write(blob + data)
    return len(head + infos)


def f16_bytes(x):
    return np.float16(x).tobytes()


# --------------------------------------------------------------------------
# Block packers (layout statements live here)
# --------------------------------------------------------------------------

def pack_q8_0(d, qs):
    # 2-byte f16 scale followed by 32 signed bytes, element j = byte j.
    assert len(qs) == 32
    return f16_bytes(d) + np.asarray(qs, dtype=np.int8).tobytes()


def pack_q4_0(d, nibbles):
    # f16 scale, then 16 bytes: byte j = element j (low nibble) | element j+16 (high nibble).
    assert len(nibbles) == 32
    body = bytes((nibbles[j] & 15) | ((nibbles[j + 16] & 15) << 4) for j in range(16))
    return f16_bytes(d) + body


def pack_q4_k(d, dmin, scales, mins, nibbles):
    # f16 d, f16 dmin, 12 scale bytes, 128 quant bytes.
    # Scale bytes: sub-blocks 0..3 store 6-bit scale in bytes 0..3 and 6-bit
    # min in bytes 4..7 (low 6 bits).  Sub-blocks 4..7: low 4 bits of scale in
    # low nibble of bytes 8..11, low 4 bits of min in high nibble of bytes
    # 8..11, top 2 bits of scale in bits 6-7 of bytes 0..3, top 2 bits of min
    # in bits 6-7 of bytes 4..7.
    # Quant bytes: chunk c (64 elements, sub-blocks 2c and 2c+1) uses bytes
    # 32c..32c+31: element 64c+l is the low nibble of byte 32c+l, element
    # 64c+32+l its high nibble.
    assert len(scales) == len(mins) == 8 and len(nibbles) == 256
    assert all(0 <= v < 64 for v in list(scales) + list(mins))
    s = [0] * 12
    for j in range(4):
        s[j] = scales[j] | ((scales[j + 4] >> 4) << 6)
        s[j + 4] = mins[j] | ((mins[j + 4] >> 4) << 6)
        s[j + 8] = (scales[j + 4] & 15) | ((mins[j + 4] & 15) << 4)
    qs = [0] * 128
    for e in range(256):
        c, l = divmod(e, 64)
        if l < 32:
            qs[32 * c + l] |= nibbles[e] & 15
        else:
            qs[32 * c + l - 32] |= (nibbles[e] & 15) << 4
    return f16_bytes(d) + f16_bytes(dmin) + bytes(s) + bytes(qs)


def pack_q6_k(d, scales, q6):
    # 128 bytes ql, 64 bytes qh, 16 int8 scales, f16 d.  Two halves of 128
    # elements; in half n, element 128n + 32k + l (k = 0..3, l = 0..31):
    # low 4 bits -> ql[64n + l + 32*(k % 2)], low nibble if k < 2 else high;
    # top 2 bits -> qh[32n + l] bits 2k..2k+1.  Stored value = q + 32.
    assert len(scales) == 16 and len(q6) == 256
    ql = [0] * 128
    qh = [0] * 64
    for e in range(256):
        u = q6[e] + 32
        assert 0 <= u < 64
        n, r = divmod(e, 128)
        k, l = divmod(r, 32)
        bi = 64 * n + l + 32 * (k % 2)
        ql[bi] |= (u & 15) << (0 if k < 2 else 4)
        qh[32 * n + l] |= (u >> 4) << (2 * k)
    return bytes(ql) + bytes(qh) + np.asarray(scales, dtype=np.int8).tobytes() + f16_bytes(d)


# --------------------------------------------------------------------------
# Slow scalar decoders that mirror the per-byte C loops, for random-byte checks
# --------------------------------------------------------------------------

def _h(b, off):
    return float(np.frombuffer(bytes(b[off:off + 2]), dtype="<f2")[0])


def slow_q4_k(block):
    d, dmin = np.float32(_h(block, 0)), np.float32(_h(block, 2))
    sc = block[4:16]
    qs = block[16:144]

    def scale_min(j):
        if j < 4:
            return sc[j] & 63, sc[j + 4] & 63
        return ((sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4),
                (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4))
    out = []
    for c in range(4):
        s1, m1 = scale_min(2 * c)
        s2, m2 = scale_min(2 * c + 1)
        d1, mm1 = np.float32(d * s1), np.float32(dmin * m1)
        d2, mm2 = np.float32(d * s2), np.float32(dmin * m2)
        for l in range(32):
            out.append(np.float32(d1 * (qs[32 * c + l] & 15) - mm1))
        for l in range(32):
            out.append(np.float32(d2 * (qs[32 * c + l] >> 4) - mm2))
    return np.array(out, dtype=np.float32)


def slow_q6_k(block):
    ql, qh = block[0:128], block[128:192]
    sc = np.frombuffer(bytes(block[192:208]), dtype=np.int8)
    d = np.float32(_h(block, 208))
    y = np.zeros(256, dtype=np.float32)
    for n in range(2):
        for l in range(32):
            a, b, h = ql[64 * n + l], ql[64 * n + l + 32], qh[32 * n + l]
            qv = [(a & 15) | (((h >> 0) & 3) << 4), (b & 15) | (((h >> 2) & 3) << 4),
                  (a >> 4) | (((h >> 4) & 3) << 4), (b >> 4) | (((h >> 6) & 3) << 4)]
            for k in range(4):
                s = sc[8 * n + l // 16 + 2 * k]
                y[128 * n + 32 * k + l] = np.float32(np.float32(d * s) * (qv[k] - 32))
    return y


# --------------------------------------------------------------------------
# Tiny model builder
# --------------------------------------------------------------------------

def make_model(arch="llama", n_embd=32, n_head=4, n_head_kv=2, n_layer=2, n_ff=48,
               n_vocab=40, head_dim=None, rope_dims=None, seed=0, tied=False,
               biases=False, qk_norm=None, freq_base=10000.0, extra_kvs=(),
               rope_freqs=None):
    rng = np.random.default_rng(seed)
    hd = head_dim or n_embd // n_head
    a = arch + "."
    kvs = [("general.architecture", STR, arch),
           (a + "embedding_length", U32, n_embd),
           (a + "block_count", U32, n_layer),
           (a + "feed_forward_length", U32, n_ff),
           (a + "attention.head_count", U32, n_head),
           (a + "attention.head_count_kv", U32, n_head_kv),
           (a + "attention.layer_norm_rms_epsilon", F32, 1e-5),
           (a + "rope.freq_base", F32, freq_base)]
    if head_dim is not None:
        kvs += [(a + "attention.key_length", U32, hd), (a + "attention.value_length", U32, hd)]
    if rope_dims is not None:
        kvs.append((a + "rope.dimension_count", U32, rope_dims))
    kvs += list(extra_kvs)

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {"token_embd.weight": w(n_vocab, n_embd, scale=1.0),
         "output_norm.weight": (1 + w(n_embd, scale=0.1))}
    if not tied:
        t["output.weight"] = w(n_vocab, n_embd)
    if rope_freqs is not None:
        t["rope_freqs.weight"] = np.asarray(rope_freqs, dtype=np.float32)
    for i in range(n_layer):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = 1 + w(n_embd, scale=0.1)
        t[p + "attn_q.weight"] = w(n_head * hd, n_embd)
        t[p + "attn_k.weight"] = w(n_head_kv * hd, n_embd)
        t[p + "attn_v.weight"] = w(n_head_kv * hd, n_embd)
        t[p + "attn_output.weight"] = w(n_embd, n_head * hd)
        t[p + "ffn_norm.weight"] = 1 + w(n_embd, scale=0.1)
        t[p + "ffn_gate.weight"] = w(n_ff, n_embd)
        t[p + "ffn_up.weight"] = w(n_ff, n_embd)
        t[p + "ffn_down.weight"] = w(n_embd, n_ff)
        if biases:
            t[p + "attn_q.bias"] = w(n_head * hd)
            t[p + "attn_k.bias"] = w(n_head_kv * hd)
            t[p + "attn_v.bias"] = w(n_head_kv * hd)
        if qk_norm or (qk_norm is None and arch == "qwen3"):
            t[p + "attn_q_norm.weight"] = 1 + w(hd, scale=0.1)
            t[p + "attn_k_norm.weight"] = 1 + w(hd, scale=0.1)
    return kvs, t


def naive_forward(meta, tensors, tokens):
    """Loop-per-token, loop-per-head restatement of the model semantics.

    Deliberately written in a different style from the module (no
    vectorised attention, RoPE rotation written pair by pair) so the two can
    cross-check each other.  KV cache style: token t sees keys 0..t.
    """
    arch = meta["general.architecture"]
    g = lambda k, d=None: meta.get(f"{arch}.{k}", d)  # noqa: E731
    n_embd, n_layer = g("embedding_length"), g("block_count")
    H = g("attention.head_count")
    Hkv = g("attention.head_count_kv", H)
    dk = g("attention.key_length", n_embd // H)
    dv = g("attention.value_length", n_embd // H)
    eps = g("attention.layer_norm_rms_epsilon")
    base = g("rope.freq_base", 10000.0)
    R = g("rope.dimension_count", dk)
    factor = g("rope.scaling.factor", 1.0) if g("rope.scaling.type") == "linear" else 1.0
    W = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}
    rf = W.get("rope_freqs.weight", np.ones(R // 2))

    def rms(v, w):
        return v / np.sqrt(np.mean(v * v) + eps) * w

    def rope(vec, pos):
        out = vec.copy()
        for j in range(R // 2):
            th = (pos / factor) * base ** (-2.0 * j / R) / rf[j]
            i0, i1 = (2 * j, 2 * j + 1) if arch == "llama" else (j, j + R // 2)
            a, b = vec[i0], vec[i1]
            out[i0] = a * np.cos(th) - b * np.sin(th)
            out[i1] = a * np.sin(th) + b * np.cos(th)
        return out

    xs = [W["token_embd.weight"][t].copy() for t in tokens]
    for il in range(n_layer):
        p = f"blk.{il}."
        keys, vals, new_xs = [], [], []
        for pos, x in enumerate(xs):
            n = rms(x, W[p + "attn_norm.weight"])
            q = W[p + "attn_q.weight"] @ n + W.get(p + "attn_q.bias", 0)
            k = W[p + "attn_k.weight"] @ n + W.get(p + "attn_k.bias", 0)
            v = W[p + "attn_v.weight"] @ n + W.get(p + "attn_v.bias", 0)
            qh = [q[h * dk:(h + 1) * dk] for h in range(H)]
            kh = [k[h * dk:(h + 1) * dk] for h in range(Hkv)]
            if p + "attn_q_norm.weight" in W:
                qh = [rms(a, W[p + "attn_q_norm.weight"]) for a in qh]
                kh = [rms(a, W[p + "attn_k_norm.weight"]) for a in kh]
            qh = [np.concatenate([rope(a[:R], pos), a[R:]]) for a in qh]
            keys.append([np.concatenate([rope(a[:R], pos), a[R:]]) for a in kh])
            vals.append([v[h * dv:(h + 1) * dv] for h in range(Hkv)])
            heads = []
            for h in range(H):
                kvh = h // (H // Hkv)
                s = np.array([qh[h] @ keys[t][kvh] for t in range(pos + 1)]) / np.sqrt(dk)
                w = np.exp(s - s.max())
                w /= w.sum()
                heads.append(sum(w[t] * vals[t][kvh] for t in range(pos + 1)))
            hx = x + W[p + "attn_output.weight"] @ np.concatenate(heads)
            n = rms(hx, W[p + "ffn_norm.weight"])
            gt = W[p + "ffn_gate.weight"] @ n
            up = W[p + "ffn_up.weight"] @ n
            new_xs.append(hx + W[p + "ffn_down.weight"] @ (gt / (1 + np.exp(-gt)) * up))
        xs = new_xs
    out_w = W.get("output.weight", W["token_embd.weight"])
    return np.stack([out_w @ rms(x, W["output_norm.weight"]) for x in xs])


def f32_tensors(tensors):
    return [(name, list(reversed(a.shape)), gr.GGML_F32, np.ascontiguousarray(a, "<f4").tobytes())
            for name, a in tensors.items()]


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

class TmpDirCase(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp, name)

    def write_model(self, name, kvs, tensors):
        p = self.path(name)
        write_gguf(p, kvs, f32_tensors(tensors))
        return p


class TestContainer(TmpDirCase):
    def test_metadata_all_value_types(self):
        kvs = [("t.u8", U8, 250), ("t.i8", I8, -7), ("t.u16", U16, 65000),
               ("t.i16", I16, -30000), ("t.u32", U32, 4000000000), ("t.i32", I32, -2000000000),
               ("t.f32", F32, 0.25), ("t.bool", BOOL, 1), ("t.str", STR, "héllo"),
               ("t.u64", U64, 2 ** 63 + 5), ("t.i64", I64, -(2 ** 62)), ("t.f64", F64, 1e-300),
               ("t.arr_i32", ARR, (I32, [1, -2, 3])),
               ("t.arr_str", ARR, (STR, ["a", "", "xyz"])),
               ("t.arr_f32", ARR, (F32, [0.5, -1.5])),
               ("t.arr_bool", ARR, (BOOL, [1, 0])),
               ("t.nested", ARR, (ARR, [(U8, [1, 2]), (U8, []), (U8, [3])])),
               ("t.empty", ARR, (U64, []))]
        p = self.path("meta.gguf")
        write_gguf(p, kvs, [("x", [2], gr.GGML_F32, np.array([1, 2], "<f4").tobytes())])
        meta, tensors = gr.read_gguf(p)
        expect = {"t.u8": 250, "t.i8": -7, "t.u16": 65000, "t.i16": -30000,
                  "t.u32": 4000000000, "t.i32": -2000000000, "t.f32": 0.25, "t.bool": True,
                  "t.str": "héllo", "t.u64": 2 ** 63 + 5, "t.i64": -(2 ** 62), "t.f64": 1e-300,
                  "t.arr_i32": [1, -2, 3], "t.arr_str": ["a", "", "xyz"],
                  "t.arr_f32": [0.5, -1.5], "t.arr_bool": [True, False],
                  "t.nested": [[1, 2], [], [3]], "t.empty": []}
        for k, v in expect.items():
            self.assertEqual(meta[k], v, k)
            self.assertEqual(type(meta[k]), type(v), k)
        np.testing.assert_array_equal(tensors["x"], [1, 2])

    def test_versions_and_alignment(self):
        a = np.arange(6, dtype=np.float32).reshape(2, 3)  # dims [3, 2]
        b = np.array([7.0], dtype=np.float32)
        for version in (2, 3):
            for alignment in (None, 8, 64, 256):
                p = self.path(f"v{version}_{alignment}.gguf")
                # Non-zero padding bytes make a wrong data-section start visible.
                write_gguf(p, [("general.architecture", STR, "llama")],
                           [("b", [1], gr.GGML_F32, b.tobytes()),
                            ("a", [3, 2], gr.GGML_F32, a.tobytes())],
                           version=version, alignment=alignment, pad_byte=b"\xAB")
                hdr = gr.read_gguf_header(p)
                self.assertEqual(hdr.version, version)
                self.assertEqual(hdr.data_start % (alignment or 32), 0)
                meta, t = gr.read_gguf(p)
                self.assertEqual(t["a"].shape, (2, 3))  # numpy shape = reversed(dims)
                np.testing.assert_array_equal(t["a"], a)
                np.testing.assert_array_equal(t["b"], b)

    def test_bad_files(self):
        p = self.path("bad.gguf")
        with open(p, "wb") as f:
            f.write(b"GGML" + b"\0" * 60)
        with self.assertRaisesRegex(gr.GGUFError, "magic"):
            gr.read_gguf(p)
        write_gguf(p, [], [], version=1)
        with self.assertRaisesRegex(gr.GGUFError, "version"):
            gr.read_gguf(p)
        write_gguf(p, [], [("iq2", [256], 16, b"\0" * 66)])
        with self.assertRaisesRegex(gr.UnsupportedTensorType, "IQ2_XXS"):
            gr.read_gguf(p)
        write_gguf(p, [], [("t", [1000], gr.GGML_F32, b"\0" * 16)])
        with self.assertRaisesRegex(gr.GGUFError, "past the end"):
            gr.read_gguf(p)


def _h(raw, off):
    return float(np.frombuffer(bytes(raw[off:off + 2]), "<f2")[0])


# Element-by-element decoders of the newer block types, written from the layout descriptions
# (one element at a time, no NumPy tricks) to check the vectorised ones above.
def slow_32(raw, gtype):
    size = {gr.GGML_Q4_1: 20, gr.GGML_Q5_0: 22, gr.GGML_Q5_1: 24, gr.GGML_IQ4_NL: 18}[gtype]
    out = []
    for b in range(len(raw) // size):
        blk = raw[b * size:(b + 1) * size]
        d = _h(blk, 0)
        m = _h(blk, 2) if gtype in (gr.GGML_Q4_1, gr.GGML_Q5_1) else 0.0
        qs_at = {gr.GGML_Q4_1: 4, gr.GGML_Q5_0: 6, gr.GGML_Q5_1: 8, gr.GGML_IQ4_NL: 2}[gtype]
        qh_at = {gr.GGML_Q5_0: 2, gr.GGML_Q5_1: 4}.get(gtype)
        for e in range(32):
            byte = blk[qs_at + e % 16]
            q = (byte & 15) if e < 16 else (byte >> 4)
            if qh_at is not None:
                word = int.from_bytes(bytes(blk[qh_at:qh_at + 4]), "little")
                q |= ((word >> e) & 1) << 4
            if gtype == gr.GGML_Q5_0:
                v = np.float32(d) * np.float32(q - 16)
            elif gtype == gr.GGML_IQ4_NL:
                v = np.float32(d) * gr.IQ4NL_LEVELS[q]
            else:
                v = np.float32(d) * np.float32(q) + np.float32(m)
            out.append(v)
    return np.array(out, dtype=np.float32)


def slow_k(raw, gtype):
    size = {gr.GGML_Q2_K: 84, gr.GGML_Q3_K: 110, gr.GGML_Q5_K: 176, gr.GGML_IQ4_XS: 136}[gtype]
    out = []
    for b in range(len(raw) // size):
        blk = raw[b * size:(b + 1) * size]
        for e in range(256):
            h, j, r = e // 128, (e % 128) // 32, e % 32
            if gtype == gr.GGML_Q2_K:
                q = (blk[16 + 32 * h + r] >> (2 * j)) & 3
                sc = blk[e // 16]
                v = (np.float32(_h(blk, 80)) * np.float32(sc & 15)) * np.float32(q) - \
                    np.float32(_h(blk, 82)) * np.float32(sc >> 4)
            elif gtype == gr.GGML_Q3_K:
                q = (blk[32 + 32 * h + r] >> (2 * j)) & 3
                if not (blk[r] >> (4 * h + j)) & 1:
                    q -= 4
                i = e // 16
                low = blk[96 + i] & 15 if i < 8 else blk[96 + i - 8] >> 4
                high = (blk[96 + 8 + i % 4] >> (2 * (i // 4))) & 3
                v = (np.float32(_h(blk, 108)) * np.float32((low | (high << 4)) - 32)) * np.float32(q)
            elif gtype == gr.GGML_Q5_K:
                sub = e // 32
                sc, mn = slow_scale_min_k4(blk[4:16], sub)
                byte = blk[48 + 32 * (sub // 2) + r]
                q = (byte & 15) if sub % 2 == 0 else (byte >> 4)
                q |= ((blk[16 + r] >> sub) & 1) << 4
                v = (np.float32(_h(blk, 0)) * np.float32(sc)) * np.float32(q) - \
                    np.float32(_h(blk, 2)) * np.float32(mn)
            else:  # IQ4_XS
                sub = e // 32
                low = (blk[4 + sub // 2] >> (4 * (sub % 2))) & 15
                high = (int.from_bytes(bytes(blk[2:4]), "little") >> (2 * sub)) & 3
                byte = blk[8 + 16 * sub + (e % 32) % 16]
                idx = (byte & 15) if e % 32 < 16 else (byte >> 4)
                v = (np.float32(_h(blk, 0)) * np.float32((low | (high << 4)) - 32)) * gr.IQ4NL_LEVELS[idx]
            out.append(v)
    return np.array(out, dtype=np.float32)


def slow_scale_min_k4(sc, j):
    if j < 4:
        return sc[j] & 63, sc[j + 4] & 63
    return (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4), (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4)


class TestNewerBlockTypes(unittest.TestCase):
    TYPES = (  # type, block bytes, block elements, offsets of f16 fields
        (gr.GGML_Q4_1, 20, 32, (0, 2)), (gr.GGML_Q5_0, 22, 32, (0,)), (gr.GGML_Q5_1, 24, 32, (0, 2)),
        (gr.GGML_IQ4_NL, 18, 32, (0,)), (gr.GGML_Q2_K, 84, 256, (80, 82)), (gr.GGML_Q3_K, 110, 256, (108,)),
        (gr.GGML_Q5_K, 176, 256, (0, 2)), (gr.GGML_IQ4_XS, 136, 256, (0,)))

    def test_random_blocks_match_element_by_element_decoding(self):
        rng = np.random.default_rng(7)
        for gtype, size, elems, f16_at in self.TYPES:
            nb = 5
            raw = bytearray(rng.integers(0, 256, nb * size, dtype=np.uint8).tobytes())
            for b in range(nb):
                for off in f16_at:
                    raw[b * size + off:b * size + off + 2] = f16_bytes(rng.uniform(-2, 2))
            got = gr.dequantize(np.frombuffer(bytes(raw), np.uint8), gtype, nb * elems)
            slow = slow_32 if elems == 32 else slow_k
            np.testing.assert_array_equal(got, slow(raw, gtype), err_msg=gr.GGML_TYPE_NAMES[gtype])

    def test_hand_stated_values(self):
        # Q5_0, d = 0.5, nibbles 0, only bit 17 of qh set: element 17 is (16 - 16) * 0.5 = 0, the
        # rest (0 - 16) * 0.5 = -8.
        got = gr.dequantize(np.frombuffer(f16_bytes(0.5) + b"\0\0\x02\0" + b"\0" * 16, np.uint8), gr.GGML_Q5_0, 32)
        self.assertEqual(got[17], 0.0)
        self.assertEqual(got[16], -8.0)
        # IQ4_NL, d = 2, byte 0 = 0xF0: element 0 is 2 * -127, element 16 is 2 * 113.
        got = gr.dequantize(np.frombuffer(f16_bytes(2.0) + b"\xf0" + b"\x88" * 15, np.uint8), gr.GGML_IQ4_NL, 32)
        self.assertEqual(got[0], -254.0)
        self.assertEqual(got[16], 226.0)
        self.assertEqual(got[1], 2.0)
        # Q2_K: every scale byte 0x12 (scale 2, min 1), d = 1, dmin = 0.5, every quant 3:
        # 1 * 2 * 3 - 0.5 * 1 = 5.5.
        raw = b"\x12" * 16 + b"\xff" * 64 + f16_bytes(1.0) + f16_bytes(0.5)
        np.testing.assert_array_equal(gr.dequantize(np.frombuffer(raw, np.uint8), gr.GGML_Q2_K, 256), [5.5] * 256)


def as_moe(kvs, t, arch, n_expert, n_used, router_scale=1.0, shared=False):
    """The dense model (kvs, t) as a mixture of n_expert copies of its FFN, with a random router
    (times router_scale) and, if asked, the FFN again as a shared expert whose gate vector is zero."""
    rng = np.random.default_rng(99)
    dense_arch = kvs[0][2]
    meta = {k.replace(dense_arch + ".", arch + "."): v for k, _, v in kvs}
    meta["general.architecture"] = arch
    meta[arch + ".expert_count"] = n_expert
    meta[arch + ".expert_used_count"] = n_used
    out = {}
    for name, value in t.items():
        kind = next((k for k in ("ffn_gate", "ffn_up", "ffn_down") if "." + k + ".weight" in name), None)
        if kind is None:
            out[name] = value
            continue
        p = name[:name.index(kind)]
        out[p + kind + "_exps.weight"] = np.stack([value] * n_expert)
        if shared:
            out[p + kind + "_shexp.weight"] = value
        if kind == "ffn_down":
            router = rng.standard_normal((n_expert, value.shape[0])) * router_scale
            out[p + "ffn_gate_inp.weight"] = router.astype(np.float32)
            if shared:
                out[p + "ffn_gate_inp_shexp.weight"] = np.zeros(value.shape[0], dtype=np.float32)
    return meta, out


class TestMixtureOfExperts(unittest.TestCase):
    toks = [3, 1, 4, 1, 5, 9, 2, 6]

    def test_identical_experts_with_renormalised_weights_are_the_dense_model(self):
        kvs, t = make_model("qwen3", seed=5)
        dense = gr.forward(({k: v for k, _, v in kvs}, t), self.toks)
        margins = []
        moe = gr.forward(as_moe(kvs, t, "qwen3moe", n_expert=5, n_used=2), self.toks, trace=margins)
        np.testing.assert_allclose(moe, dense, rtol=1e-9, atol=1e-9)
        self.assertEqual([m.shape for m in margins], [(len(self.toks),)] * 2)
        self.assertTrue(all((m >= 0).all() and (m > 0).any() for m in margins))

    def test_the_top_experts_by_router_probability_are_chosen_and_weighted(self):
        # Two tokens, width 2, four experts; expert e multiplies the SiLU-gated FFN by (e + 1), so
        # the output names which experts were used and with what weights.
        class Hp:
            pass
        eye = np.eye(2)
        tensors = {"p.ffn_gate_inp.weight": np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [-1.0, -1.0]]),
                   "p.ffn_gate_exps.weight": np.stack([eye] * 4),
                   "p.ffn_up_exps.weight": np.stack([eye] * 4),
                   "p.ffn_down_exps.weight": np.stack([eye * (e + 1) for e in range(4)])}
        n = np.array([[1.0, 0.5], [-1.0, 2.0]])
        hidden = n / (1 + np.exp(-n)) * n                     # silu(n) * n
        for arch, normalise in (("qwen3moe", True), ("qwen2moe", False)):
            hp = Hp()
            hp.arch, hp.n_expert_used = arch, 2
            got = gr.mixture_of_experts(gr._Weights(tensors), "p.", n, hp)
            for t, chosen in ((0, (2, 0)), (1, (1, 0))):     # logits (1, .5, 2, -1.5) and (-1, 2, -2, -1)
                logits = tensors["p.ffn_gate_inp.weight"] @ n[t]
                probs = np.exp(logits) / np.exp(logits).sum()
                weights = probs[list(chosen)]
                if normalise:
                    weights = weights / weights.sum()
                want = sum(w * (e + 1) for w, e in zip(weights, chosen)) * hidden[t]
                np.testing.assert_allclose(got[t], want, rtol=1e-12, err_msg=f"{arch} token {t}")

    def test_qwen2moe_keeps_the_chosen_probabilities_and_adds_half_the_shared_expert(self):
        # A zero router makes every probability 1/4; two identical experts kept without
        # renormalisation give 1/2 of the FFN, and the shared expert's sigmoid(0) = 1/2 the other
        # half: the dense model again. (Renormalising would give 3/2 of the FFN.)
        kvs, t = make_model("qwen2", biases=True, seed=6)
        dense = gr.forward(({k: v for k, _, v in kvs}, t), self.toks)
        moe = gr.forward(as_moe(kvs, t, "qwen2moe", n_expert=4, n_used=2, router_scale=0.0, shared=True),
                         self.toks)
        np.testing.assert_allclose(moe, dense, rtol=1e-9, atol=1e-9)


class TestGemmaAndPhi3(unittest.TestCase):
    toks = [3, 1, 4, 1, 5, 9, 2, 6]

    @staticmethod
    def renamed(kvs, t, arch, extra=()):
        dense_arch = kvs[0][2]
        meta = {k.replace(dense_arch + ".", arch + "."): v for k, _, v in kvs}
        meta["general.architecture"] = arch
        for key, value in extra:
            meta[arch + "." + key] = value
        return meta, dict(t)

    def test_phi3_fused_matrices_equal_separate_ones(self):
        kvs, t = make_model("llama", seed=8)
        meta, separate = self.renamed(kvs, t, "phi3")
        fused = {}
        for name, value in separate.items():
            if name.endswith("attn_q.weight"):
                p = name[:-len("attn_q.weight")]
                fused[p + "attn_qkv.weight"] = np.concatenate(
                    [value, separate[p + "attn_k.weight"], separate[p + "attn_v.weight"]])
            elif name.endswith("ffn_gate.weight"):
                p = name[:-len("ffn_gate.weight")]
                fused[p + "ffn_up.weight"] = np.concatenate([value, separate[p + "ffn_up.weight"]])
            elif not name.endswith(("attn_k.weight", "attn_v.weight", "ffn_up.weight")):
                fused[name] = value
        np.testing.assert_allclose(gr.forward((meta, fused), self.toks), gr.forward((meta, separate), self.toks),
                                   rtol=1e-12, atol=1e-12)
        # ...and swapping the gate and up halves changes the answer.
        swapped = dict(fused)
        for name in [n for n in fused if n.endswith("ffn_up.weight")]:
            half = fused[name].shape[0] // 2
            swapped[name] = np.concatenate([fused[name][half:], fused[name][:half]])
        self.assertGreater(np.abs(gr.forward((meta, swapped), self.toks) - gr.forward((meta, fused), self.toks)).max(),
                           1e-3)

    def test_a_window_as_long_as_the_text_and_a_huge_soft_cap_change_nothing(self):
        kvs, t = make_model("llama", seed=9)
        base_meta, tensors = self.renamed(kvs, t, "gemma2", [("attention.sliding_window", len(self.toks)),
                                                             ("attn_logit_softcapping", 1e9),
                                                             ("final_logit_softcapping", 1e9)])
        for name in list(tensors):
            if name.endswith("attn_output.weight"):
                p = name[:-len("attn_output.weight")]
                tensors[p + "post_attention_norm.weight"] = np.ones(32, dtype=np.float32)
                tensors[p + "post_ffw_norm.weight"] = np.ones(32, dtype=np.float32)
        wide = gr.forward((base_meta, tensors), self.toks)
        plain_meta = dict(base_meta)
        plain_meta["gemma2.attention.sliding_window"] = 0
        plain_meta["gemma2.attn_logit_softcapping"] = 0.0
        plain_meta["gemma2.final_logit_softcapping"] = 0.0
        np.testing.assert_allclose(wide, gr.forward((plain_meta, tensors), self.toks), rtol=1e-9, atol=1e-9)
        # A window of 2 does change later tokens, not the first two.
        narrow_meta = dict(plain_meta)
        narrow_meta["gemma2.attention.sliding_window"] = 2
        narrow = gr.forward((narrow_meta, tensors), self.toks)
        np.testing.assert_allclose(narrow[:2], wide[:2], rtol=1e-9, atol=1e-9)
        self.assertGreater(np.abs(narrow[2:] - wide[2:]).max(), 1e-3)


class TestDequant(TmpDirCase):
    def roundtrip(self, name, dims, gtype, raw):
        p = self.path(name + ".gguf")
        write_gguf(p, [], [(name, dims, gtype, raw)])
        return gr.read_gguf(p)[1][name]

    def test_f16(self):
        vals = np.array([1.0, -2.5, 2.0 ** -14, 2.0 ** -24, 65504.0, -0.0, 0.333251953125, 3.0],
                        dtype=np.float32)
        got = self.roundtrip("h", [4, 2], gr.GGML_F16, vals.astype("<f2").tobytes())
        self.assertEqual(got.dtype, np.float32)
        np.testing.assert_array_equal(got, vals.reshape(2, 4))

    def test_bf16(self):
        bits = np.array([0x3F80, 0xC040, 0x4049, 0x0000, 0x8000, 0x7F80, 0x3C00, 0x0001],
                        dtype="<u2")
        expect = np.array([1.0, -3.0, 3.140625, 0.0, -0.0, np.inf, 2.0 ** -7, 2.0 ** -133],
                          dtype=np.float32)
        got = self.roundtrip("bf", [8], gr.GGML_BF16, bits.tobytes())
        np.testing.assert_array_equal(got, expect)

    def test_q8_0(self):
        q0 = list(range(-16, 16))
        q1 = [127, -128] + [0] * 30
        raw = pack_q8_0(0.5, q0) + pack_q8_0(-2.0, q1)
        got = self.roundtrip("q8", [32, 2], gr.GGML_Q8_0, raw)
        self.assertEqual(got.shape, (2, 32))
        np.testing.assert_array_equal(got[0], np.array(q0) * 0.5)
        np.testing.assert_array_equal(got[1], np.array(q1) * -2.0)
        # Hand-stated: element 0 of row 0 is -16 * 0.5 = -8, element 1 of row 1 is 256.
        self.assertEqual(got[0, 0], -8.0)
        self.assertEqual(got[1, 1], 256.0)

    def test_q4_0(self):
        nib = [(3 * e + 1) % 16 for e in range(32)]
        raw = pack_q4_0(0.25, nib) + pack_q4_0(1.0, [15] * 16 + [0] * 16)
        got = self.roundtrip("q4", [64], gr.GGML_Q4_0, raw)
        np.testing.assert_array_equal(got[:32], (np.array(nib) - 8) * 0.25)
        # Block 2: low nibbles (elements 0..15) all 15 -> 7; high (16..31) all 0 -> -8.
        np.testing.assert_array_equal(got[32:48], [7.0] * 16)
        np.testing.assert_array_equal(got[48:], [-8.0] * 16)
        # Byte-level statement: byte 0 = 0x1E means element 0 = 14-8, element 16 = 1-8.
        one = self.roundtrip("q4b", [32], gr.GGML_Q4_0, f16_bytes(1.0) + b"\x1e" + b"\x88" * 15)
        self.assertEqual(one[0], 6.0)
        self.assertEqual(one[16], -7.0)

    def test_q4_k(self):
        rng = np.random.default_rng(1)
        # Scale/min values above 15 exercise the split 4+2-bit storage of sub-blocks 4..7.
        scales = [1, 63, 17, 5, 33, 48, 2, 60]
        mins = [0, 7, 63, 31, 16, 47, 1, 59]
        nib = rng.integers(0, 16, 256).tolist()
        d, dmin = 0.5, 0.125
        raw = pack_q4_k(d, dmin, scales, mins, nib)
        self.assertEqual(len(raw), 144)
        # Second block: constants, so the result can be stated by hand:
        # every element = 1.0*2*3 - 0.5*1 = 5.5.
        raw += pack_q4_k(1.0, 0.5, [2] * 8, [1] * 8, [3] * 256)
        got = self.roundtrip("q4k", [256, 2], gr.GGML_Q4_K, raw)
        expect = [d * scales[e // 32] * nib[e] - dmin * mins[e // 32] for e in range(256)]
        np.testing.assert_array_equal(got[0], np.array(expect, dtype=np.float32))
        np.testing.assert_array_equal(got[1], [5.5] * 256)

    def test_q6_k(self):
        rng = np.random.default_rng(2)
        scales = [1, -1, 127, -128, 5, 9, -7, 3, 64, -64, 2, 11, -3, 100, 0, 17]
        q = rng.integers(-32, 32, 256).tolist()
        d = 0.25
        raw = pack_q6_k(d, scales, q)
        self.assertEqual(len(raw), 210)
        raw += pack_q6_k(2.0, [3] * 16, [-32] * 128 + [31] * 128)
        got = self.roundtrip("q6k", [512], gr.GGML_Q6_K, raw)
        expect = [d * scales[e // 16] * q[e] for e in range(256)]
        np.testing.assert_array_equal(got[:256], np.array(expect, dtype=np.float32))
        # Hand-stated: 2*3*(-32) = -192 and 2*3*31 = 186.
        np.testing.assert_array_equal(got[256:384], [-192.0] * 128)
        np.testing.assert_array_equal(got[384:], [186.0] * 128)

    def test_k_quants_random_bytes_vs_scalar(self):
        rng = np.random.default_rng(3)
        nb = 6
        for bsize, d_offsets, gtype, slow in ((144, (0, 2), gr.GGML_Q4_K, slow_q4_k),
                                              (210, (208,), gr.GGML_Q6_K, slow_q6_k)):
            raw = bytearray(rng.integers(0, 256, nb * bsize, dtype=np.uint8).tobytes())
            for b in range(nb):  # keep the f16 scales finite
                for off in d_offsets:
                    raw[b * bsize + off:b * bsize + off + 2] = f16_bytes(rng.uniform(-2, 2))
            got = gr.dequantize(np.frombuffer(bytes(raw), np.uint8), gtype, nb * 256)
            expect = np.concatenate([slow(raw[b * bsize:(b + 1) * bsize]) for b in range(nb)])
            np.testing.assert_array_equal(got, expect)

    def test_speed_one_million_params(self):
        rng = np.random.default_rng(4)
        tensors = []
        n = 256 * 1024  # per type; 4 types -> ~1M parameters
        for name, gtype, bsize, block_elems, d_offs in (
                ("q4k", gr.GGML_Q4_K, 144, 256, (0, 2)), ("q6k", gr.GGML_Q6_K, 210, 256, (208,)),
                ("q80", gr.GGML_Q8_0, 34, 32, (0,)), ("q40", gr.GGML_Q4_0, 18, 32, (0,))):
            nb = n // block_elems
            blocks = rng.integers(0, 256, (nb, bsize), dtype=np.uint8)
            for off in d_offs:
                blocks[:, off:off + 2] = np.frombuffer(f16_bytes(0.01) * nb, np.uint8).reshape(nb, 2)
            tensors.append((name, [1024, n // 1024], gtype, blocks.tobytes()))
        p = self.path("big.gguf")
        write_gguf(p, [], tensors)
        t0 = time.perf_counter()
        _, t = gr.read_gguf(p)
        dt = time.perf_counter() - t0
        print(f"\n  read_gguf of 1M quantised params: {dt:.3f} s", file=sys.stderr)
        self.assertEqual(t["q4k"].shape, (256, 1024))
        self.assertTrue(all(np.isfinite(a).all() for a in t.values()))
        self.assertLess(dt, 3.0)  # target is < 1 s; slack for a loaded machine


class TestRope(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(5)
        self.x = rng.standard_normal((3, 2, 16))

    def test_position_zero_is_identity(self):
        for pairing in ("normal", "neox"):
            for rd in (16, 8):
                inv = gr.rope_inv_freq(rd, 10000.0)
                y = gr.apply_rope(self.x, np.zeros(3), rd, pairing, inv)
                np.testing.assert_array_equal(y, self.x)

    def test_known_rotation(self):
        x = np.zeros((1, 1, 8))
        x[0, 0, 0] = 1.0
        inv = gr.rope_inv_freq(8, 10000.0)  # pair 0 has inverse frequency 1
        y = gr.apply_rope(x, np.array([0.7]), 8, "normal", inv)
        np.testing.assert_allclose(y[0, 0, :2], [np.cos(0.7), np.sin(0.7)], rtol=1e-15)
        y = gr.apply_rope(x, np.array([0.7]), 8, "neox", inv)
        np.testing.assert_allclose(y[0, 0, [0, 4]], [np.cos(0.7), np.sin(0.7)], rtol=1e-15)
        # Pair 1 of 8 dims: inverse frequency 10000^(-2/8) = 0.1.
        x2 = np.zeros((1, 1, 8))
        x2[0, 0, 3] = 1.0  # second element of normal pair 1 (dims 2,3)
        y = gr.apply_rope(x2, np.array([5.0]), 8, "normal", inv)
        np.testing.assert_allclose(y[0, 0, 2:4], [-np.sin(0.5), np.cos(0.5)], rtol=1e-14)

    def test_relative_position(self):
        rng = np.random.default_rng(6)
        q, k = rng.standard_normal((2, 1, 1, 16))
        for pairing in ("normal", "neox"):
            inv = gr.rope_inv_freq(12, 500.0)
            dots = []
            for shift in (0, 3, 11):
                rq = gr.apply_rope(q, np.array([2.0 + shift]), 12, pairing, inv)
                rk = gr.apply_rope(k, np.array([7.0 + shift]), 12, pairing, inv)
                dots.append(np.sum(rq * rk))
            np.testing.assert_allclose(dots, dots[0], rtol=1e-12)

    def test_neox_is_permuted_normal(self):
        rd = 16
        perm = np.concatenate([np.arange(0, rd, 2), np.arange(1, rd, 2)])
        inv = gr.rope_inv_freq(rd, 10000.0)
        pos = np.array([0.0, 1.0, 9.0])
        a = gr.apply_rope(self.x, pos, rd, "normal", inv)[:, :, perm]
        b = gr.apply_rope(self.x[:, :, perm], pos, rd, "neox", inv)
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=1e-15)


class TestForward(TmpDirCase):
    toks = [3, 1, 4, 1, 5, 9, 2, 6]

    def run_model(self, name, kvs, tensors, toks=None):
        return gr.forward(self.write_model(name, kvs, tensors), toks or self.toks)

    def test_causality_all_archs(self):
        for arch in ("llama", "qwen2", "qwen3"):
            kvs, t = make_model(arch, biases=(arch == "qwen2"))
            p = self.write_model(arch + ".gguf", kvs, t)
            a = gr.forward(p, self.toks)
            self.assertEqual(a.shape, (len(self.toks), 40))
            self.assertEqual(a.dtype, np.float64)
            b = gr.forward(p, self.toks[:4] + [7, 7, 0, 39])
            np.testing.assert_allclose(a[:4], b[:4], rtol=1e-12, atol=1e-12)
            self.assertGreater(np.abs(a[4:] - b[4:]).max(), 1e-6)
            prefix = gr.forward(p, self.toks[:3])
            np.testing.assert_allclose(a[:3], prefix, rtol=1e-12, atol=1e-12)

    def test_matches_naive_loop_implementation(self):
        lin = [("{}.rope.scaling.type", STR, "linear"), ("{}.rope.scaling.factor", F32, 1.5)]
        cases = [
            dict(arch="llama"),
            dict(arch="llama", n_head=4, n_head_kv=1, tied=True, rope_freqs=[1.0, 2.0, 0.5, 3.0]),
            dict(arch="qwen2", biases=True),
            dict(arch="qwen2", biases=True, head_dim=12, rope_dims=8, extra_kvs=lin),
            dict(arch="qwen3"),
            dict(arch="qwen3", n_head=4, n_head_kv=2, head_dim=16, rope_dims=10),
        ]
        for i, c in enumerate(cases):
            c = dict(c)
            c["extra_kvs"] = [(k.format(c["arch"]), ty, v) for k, ty, v in c.get("extra_kvs", ())]
            kvs, t = make_model(seed=10 + i, **c)
            p = self.write_model(f"n{i}.gguf", kvs, t)
            meta, tensors = gr.read_gguf(p)
            got = gr.forward((meta, tensors), self.toks)
            want = naive_forward(meta, tensors, self.toks)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10, err_msg=str(c))

    def test_position_zero_matches_explicit_computation(self):
        # With one token, attention returns v of the matching kv head, so
        # position 0 can be computed by hand without any RoPE or softmax.
        kvs, t = make_model("llama", n_head=4, n_head_kv=2)
        meta = {k: v for k, _, v in kvs}
        logits = gr.forward((meta, t), [5])[0]
        tt = {k: v.astype(np.float64) for k, v in t.items()}
        eps = 1e-5

        def norm(v, w):
            return v / np.sqrt(np.mean(v ** 2) + eps) * w
        x = tt["token_embd.weight"][5]
        hd = 8
        for i in range(2):
            p = f"blk.{i}."
            n = norm(x, tt[p + "attn_norm.weight"])
            v = tt[p + "attn_v.weight"] @ n
            heads = [v[(h // 2) * hd:(h // 2 + 1) * hd] for h in range(4)]
            h_ = x + tt[p + "attn_output.weight"] @ np.concatenate(heads)
            n = norm(h_, tt[p + "ffn_norm.weight"])
            g = tt[p + "ffn_gate.weight"] @ n
            u = tt[p + "ffn_up.weight"] @ n
            x = h_ + tt[p + "ffn_down.weight"] @ (g / (1 + np.exp(-g)) * u)
        expect = tt["output.weight"] @ norm(x, tt["output_norm.weight"])
        np.testing.assert_allclose(logits, expect, rtol=1e-10, atol=1e-12)

    def test_rope_base_only_affects_later_positions(self):
        kvs1, t = make_model("llama", freq_base=10000.0)
        kvs2, _ = make_model("llama", freq_base=77.0)
        a = self.run_model("a.gguf", kvs1, t)
        b = self.run_model("b.gguf", kvs2, t)
        np.testing.assert_allclose(a[0], b[0], rtol=1e-12, atol=1e-12)
        self.assertGreater(np.abs(a[1:] - b[1:]).max(), 1e-6)

    def test_gqa_equals_duplicated_kv_heads(self):
        kvs, t = make_model("llama", n_head=4, n_head_kv=2)
        kvs_full, _ = make_model("llama", n_head=4, n_head_kv=4)
        t_full = dict(t)
        hd = 8
        for i in range(2):
            for nm in ("attn_k.weight", "attn_v.weight"):
                w = t[f"blk.{i}.{nm}"].reshape(2, hd, -1)
                t_full[f"blk.{i}.{nm}"] = np.repeat(w, 2, axis=0).reshape(4 * hd, -1)
        np.testing.assert_allclose(self.run_model("g.gguf", kvs, t),
                                   self.run_model("f.gguf", kvs_full, t_full),
                                   rtol=1e-12, atol=1e-12)

    def test_tied_output(self):
        kvs, t = make_model("llama", tied=True)
        untied = dict(t, **{"output.weight": t["token_embd.weight"].copy()})
        np.testing.assert_array_equal(self.run_model("t.gguf", kvs, t),
                                      self.run_model("u.gguf", kvs, untied))

    def test_neox_pairing_equals_permuted_llama(self):
        # qwen2 without biases is llama with neox pairing; permuting each
        # head's q/k rows from interleaved to split-halves order must give
        # identical logits (the q.k dot products are unchanged).
        kvs, t = make_model("llama", head_dim=16, n_head=2, n_head_kv=1, n_embd=32)
        kvs_q = [(k.replace("llama.", "qwen2.", 1) if k.startswith("llama.") else k, ty, v)
                 for k, ty, v in kvs]
        kvs_q = [(k, ty, "qwen2" if k == "general.architecture" else v) for k, ty, v in kvs_q]
        perm = np.concatenate([np.arange(0, 16, 2), np.arange(1, 16, 2)])
        tq = dict(t)
        for i in range(2):
            for nm, nh in (("attn_q.weight", 2), ("attn_k.weight", 1)):
                w = t[f"blk.{i}.{nm}"].reshape(nh, 16, -1)[:, perm, :]
                tq[f"blk.{i}.{nm}"] = np.ascontiguousarray(w.reshape(nh * 16, -1))
        a = self.run_model("l.gguf", kvs, t)
        b = self.run_model("q.gguf", kvs_q, tq)
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
        # And without permuting, pairing differs, so logits differ.
        c = self.run_model("q2.gguf", kvs_q, t)
        self.assertGreater(np.abs(a[1:] - c[1:]).max(), 1e-6)

    def test_partial_rope_and_head_dim_override(self):
        kvs, t = make_model("qwen3", n_embd=32, n_head=4, n_head_kv=2, head_dim=12, rope_dims=8)
        out = self.run_model("p.gguf", kvs, t)
        self.assertEqual(out.shape, (len(self.toks), 40))
        self.assertTrue(np.isfinite(out).all())

    def test_qwen2_biases(self):
        kvs, t = make_model("qwen2", biases=True)
        zero = dict(t)
        for k in t:
            if k.endswith(".bias"):
                zero[k] = np.zeros_like(t[k])
        nob = {k: v for k, v in t.items() if not k.endswith(".bias")}
        a = self.run_model("b.gguf", kvs, t)
        z = self.run_model("z.gguf", kvs, zero)
        n = self.run_model("n.gguf", kvs, nob)
        np.testing.assert_array_equal(z, n)
        self.assertGreater(np.abs(a - z).max(), 1e-6)

    def test_qwen3_qk_norm_scale_invariance(self):
        kvs, t = make_model("qwen3")
        scaled = dict(t)
        for i in range(2):
            scaled[f"blk.{i}.attn_q.weight"] = t[f"blk.{i}.attn_q.weight"] * 4
            scaled[f"blk.{i}.attn_k.weight"] = t[f"blk.{i}.attn_k.weight"] * 0.5
        a = self.run_model("a.gguf", kvs, t)
        b = self.run_model("b.gguf", kvs, scaled)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # eps breaks exactness slightly
        missing = {k: v for k, v in t.items() if "q_norm" not in k}
        with self.assertRaisesRegex(gr.GGUFError, "q_norm"):
            self.run_model("m.gguf", kvs, missing)

    def test_linear_scaling_equals_rope_freqs(self):
        # Dividing positions by 2 and dividing every inverse frequency by 2 are the same.
        lin = [("llama.rope.scaling.type", STR, "linear"), ("llama.rope.scaling.factor", F32, 2.0)]
        kvs_a, t = make_model("llama", extra_kvs=lin)
        kvs_b, tb = make_model("llama", rope_freqs=[2.0] * 4)
        kvs_c, _ = make_model("llama", extra_kvs=[("llama.rope.scaling.type", STR, "none")])
        a = self.run_model("a.gguf", kvs_a, t)
        b = self.run_model("b.gguf", kvs_b, tb)
        c = self.run_model("c.gguf", kvs_c, t)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        self.assertGreater(np.abs(a[1:] - c[1:]).max(), 1e-6)

    def test_quantised_weights_match_their_dequantisation(self):
        # A model stored with F16 / BF16 / Q8_0 tensors must equal the same
        # model stored as F32 values of the dequantised weights.
        kvs, t = make_model("llama", n_embd=32)
        stored = []
        rng = np.random.default_rng(7)
        for name, a in t.items():
            dims = list(reversed(a.shape))
            if name == "token_embd.weight":
                stored.append((name, dims, gr.GGML_F16, a.astype("<f2").tobytes()))
            elif name == "output.weight":
                bf = (a.view("<u4") >> 16).astype("<u2")
                stored.append((name, dims, gr.GGML_BF16, bf.tobytes()))
            elif name.endswith("attn_q.weight"):
                raw = b"".join(pack_q8_0(0.01, rng.integers(-127, 128, 32).tolist())
                               for _ in range(a.size // 32))
                stored.append((name, dims, gr.GGML_Q8_0, raw))
            else:
                stored.append((name, dims, gr.GGML_F32, a.astype("<f4").tobytes()))
        p = self.path("mixed.gguf")
        write_gguf(p, kvs, stored)
        meta, deq = gr.read_gguf(p)
        p32 = self.write_model("deq.gguf", kvs, deq)
        np.testing.assert_array_equal(gr.forward(p, self.toks), gr.forward(p32, self.toks))

    def test_cli(self):
        import subprocess
        kvs, t = make_model("llama")
        p = self.write_model("cli.gguf", kvs, t)
        out = self.path("logits.npy")
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gguf_reference.py")
        subprocess.run([sys.executable, script, p, "--tokens", "1,2,3", "--out", out], check=True)
        np.testing.assert_array_equal(np.load(out), gr.forward(p, [1, 2, 3]))
        r = subprocess.run([sys.executable, script, p, "--dump-meta"], check=True,
                           capture_output=True, text=True)
        self.assertIn("llama.block_count (u32) = 2", r.stdout)
        self.assertIn("blk.0.attn_q.weight: F32 dims=[32, 32]", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
