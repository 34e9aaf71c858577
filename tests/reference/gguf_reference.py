#!/usr/bin/python3
"""Independent Python/numpy reference for GGUF loading and llama-style forward passes.

This module is deliberately written from file-format facts only (not from the
C++ engine in this repository), so that it can act as an oracle for it.

Public API
----------
read_gguf(path) -> (metadata, tensors)
    metadata: dict key -> Python value (int/float/bool/str/list)
    tensors:  dict name -> float32 ndarray, shape = reversed(GGUF dims)
forward(path_or_parsed, tokens) -> float64 ndarray (len(tokens), n_vocab)

CLI
---
    /usr/bin/python3 gguf_reference.py MODEL.gguf --tokens 1,2,3 --out logits.npy
    /usr/bin/python3 gguf_reference.py MODEL.gguf --dump-meta

Sources of the format facts (paraphrased, no code taken):
  * GGUF container: ggml's docs/gguf.md specification.  Header is magic
    "GGUF", u32 version, u64 tensor count, u64 kv count (version 1 used u32
    counts and u32 string lengths; versions 2 and 3 share the 64-bit layout,
    version 3 only added the *possibility* of big-endian files, with no flag
    to detect them).  Tensor infos are name, u32 n_dims, u64 dims, u32 ggml
    type, u64 offset relative to the data section.  The data section starts
    at the end of the tensor infos rounded up to general.alignment (default
    32 when the key is absent).
  * ggml type ids: the enum listed in the same document (F32=0, F16=1,
    Q4_0=2, Q4_1=3, Q5_0=6, Q5_1=7, Q8_0=8, Q2_K=10, Q3_K=11, Q4_K=12,
    Q5_K=13, Q6_K=14, IQ4_NL=20, IQ4_XS=23, BF16=30, ...).
  * Block layouts: ggml's ggml-common.h struct definitions and the scalar
    dequantize_row_* routines in ggml-quants.c, see each _dequant_* below.
"""

import argparse
import mmap
import os
import struct
import sys

import numpy as np

# --------------------------------------------------------------------------
# GGUF container
# --------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# Metadata value type ids (gguf.md, enum gguf_metadata_value_type).
GGUF_UINT8, GGUF_INT8, GGUF_UINT16, GGUF_INT16 = 0, 1, 2, 3
GGUF_UINT32, GGUF_INT32, GGUF_FLOAT32, GGUF_BOOL = 4, 5, 6, 7
GGUF_STRING, GGUF_ARRAY, GGUF_UINT64, GGUF_INT64, GGUF_FLOAT64 = 8, 9, 10, 11, 12

# Fixed-size scalar metadata types: struct format code and numpy dtype (both LE).
_SCALAR_FORMATS = {
    GGUF_UINT8: ("<B", "<u1"),
    GGUF_INT8: ("<b", "<i1"),
    GGUF_UINT16: ("<H", "<u2"),
    GGUF_INT16: ("<h", "<i2"),
    GGUF_UINT32: ("<I", "<u4"),
    GGUF_INT32: ("<i", "<i4"),
    GGUF_FLOAT32: ("<f", "<f4"),
    GGUF_BOOL: ("<B", "<u1"),
    GGUF_UINT64: ("<Q", "<u8"),
    GGUF_INT64: ("<q", "<i8"),
    GGUF_FLOAT64: ("<d", "<f8"),
}

GGUF_VALUE_TYPE_NAMES = {
    GGUF_UINT8: "u8", GGUF_INT8: "i8", GGUF_UINT16: "u16", GGUF_INT16: "i16",
    GGUF_UINT32: "u32", GGUF_INT32: "i32", GGUF_FLOAT32: "f32", GGUF_BOOL: "bool",
    GGUF_STRING: "string", GGUF_ARRAY: "array", GGUF_UINT64: "u64",
    GGUF_INT64: "i64", GGUF_FLOAT64: "f64",
}

# ggml tensor type ids (gguf.md, enum ggml_type).  Names for every id we
# might meet, so an unsupported one can be reported by name.
GGML_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0",
    9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K",
    15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
    20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16",
    26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 31: "Q4_0_4_4",
    32: "Q4_0_4_8", 33: "Q4_0_8_8", 34: "TQ1_0", 35: "TQ2_0", 36: "IQ4_NL_4_4",
    37: "IQ4_NL_4_8", 38: "IQ4_NL_8_8", 39: "MXFP4",
}
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0 = 0, 1, 2, 8
GGML_Q4_K, GGML_Q6_K, GGML_BF16 = 12, 14, 30
GGML_Q4_1, GGML_Q5_0, GGML_Q5_1 = 3, 6, 7
GGML_Q2_K, GGML_Q3_K, GGML_Q5_K = 10, 11, 13
GGML_IQ4_NL, GGML_IQ4_XS = 20, 23

QK_K = 256  # elements per k-quant super-block


class GGUFError(ValueError):
    """Malformed or unsupported GGUF content."""


class UnsupportedTensorType(GGUFError):
    pass


class _Reader:
    """Sequential little-endian reader over a bytes-like buffer."""

    def __init__(self, buf, pos=0):
        self.buf = buf
        self.pos = pos

    def need(self, n):
        if self.pos + n > len(self.buf):
            raise GGUFError(
                f"unexpected end of file: need {n} bytes at offset {self.pos}, "
                f"file has {len(self.buf)}")

    def scalar(self, fmt):
        size = struct.calcsize(fmt)
        self.need(size)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def u32(self):
        return self.scalar("<I")

    def u64(self):
        return self.scalar("<Q")

    def string(self):
        n = self.u64()
        self.need(n)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        # Token vocabularies occasionally hold byte sequences that are not
        # valid UTF-8; keep them readable instead of failing the whole load.
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype):
        if vtype == GGUF_STRING:
            return self.string()
        if vtype == GGUF_ARRAY:
            elem_type = self.u32()
            count = self.u64()
            return self.array(elem_type, count)
        if vtype in _SCALAR_FORMATS:
            v = self.scalar(_SCALAR_FORMATS[vtype][0])
            return bool(v) if vtype == GGUF_BOOL else v
        raise GGUFError(f"unknown metadata value type {vtype} at offset {self.pos}")

    def array(self, elem_type, count):
        if elem_type in _SCALAR_FORMATS:
            # Bulk read: vocab score / token-type arrays can be 100k+ long.
            dtype = np.dtype(_SCALAR_FORMATS[elem_type][1])
            nbytes = dtype.itemsize * count
            self.need(nbytes)
            arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
            self.pos += nbytes
            out = arr.tolist()
            if elem_type == GGUF_BOOL:
                out = [bool(x) for x in out]
            return out
        if elem_type in (GGUF_STRING, GGUF_ARRAY):
            return [self.value(elem_type) for _ in range(count)]
        raise GGUFError(f"unknown array element type {elem_type} at offset {self.pos}")


class TensorInfo:
    __slots__ = ("name", "dims", "ggml_type", "offset")

    def __init__(self, name, dims, ggml_type, offset):
        self.name = name
        self.dims = dims            # GGUF order: dims[0] varies fastest
        self.ggml_type = ggml_type
        self.offset = offset        # relative to the data section

    @property
    def shape(self):
        return tuple(reversed(self.dims))

    @property
    def n_elements(self):
        n = 1
        for d in self.dims:
            n *= d
        return n

    @property
    def type_name(self):
        return GGML_TYPE_NAMES.get(self.ggml_type, f"unknown({self.ggml_type})")


class GGUFHeader:
    """Everything before the tensor data, plus where the data section starts."""

    def __init__(self, version, metadata, value_types, tensor_infos, alignment,
                 data_start):
        self.version = version
        self.metadata = metadata
        self.value_types = value_types    # key -> (type id, array elem type or None)
        self.tensor_infos = tensor_infos  # list, in file order
        self.alignment = alignment
        self.data_start = data_start


def _align(offset, alignment):
    return offset + (alignment - offset % alignment) % alignment


def parse_header(buf):
    """Parse the GGUF header, metadata and tensor infos from a bytes-like buffer."""
    r = _Reader(buf)
    r.need(4)
    magic = bytes(buf[0:4])
    if magic != GGUF_MAGIC:
        raise GGUFError(f"not a GGUF file (magic {magic!r}, expected b'GGUF')")
    r.pos = 4
    version = r.u32()
    if version not in (2, 3):
        # A big-endian file's version 2/3 reads back byte-swapped here.
        if version in (0x02000000, 0x03000000):
            raise GGUFError(f"GGUF version field reads {version:#x}: looks like a "
                            "big-endian file, which this reader does not support")
        raise GGUFError(f"unsupported GGUF version {version} (only 2 and 3 are supported)")
    n_tensors = r.u64()
    n_kv = r.u64()

    metadata = {}
    value_types = {}
    for _ in range(n_kv):
        key = r.string()
        vtype = r.u32()
        elem_type = None
        if vtype == GGUF_ARRAY:
            # Peek at the element type only for --dump-meta's benefit.
            r.need(4)
            elem_type = struct.unpack_from("<I", buf, r.pos)[0]
        value = r.value(vtype)
        if key in metadata:
            raise GGUFError(f"duplicate metadata key {key!r}")
        metadata[key] = value
        value_types[key] = (vtype, elem_type)

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise GGUFError(f"invalid general.alignment {alignment!r}")

    infos = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.u32()
        if n_dims > 8:
            raise GGUFError(f"tensor {name!r}: implausible n_dims {n_dims}")
        dims = [r.u64() for _ in range(n_dims)]
        ggml_type = r.u32()
        offset = r.u64()
        infos.append(TensorInfo(name, dims, ggml_type, offset))

    data_start = _align(r.pos, alignment)
    return GGUFHeader(version, metadata, value_types, infos, alignment, data_start)


# --------------------------------------------------------------------------
# Dequantisation.  Each routine takes the tensor's raw bytes (uint8 array)
# and the element count and returns a flat float32 array.  Blocks never
# straddle rows (row length is a multiple of the block size), so the whole
# tensor can be treated as one run of blocks.
# --------------------------------------------------------------------------

def _f16_column(blocks, start):
    """Read an f16 stored at byte `start` of every block, as a (nb, 1) float32 column."""
    return blocks[:, start:start + 2].copy().view("<f2").astype(np.float32)


def _dequant_f32(raw, n):
    return raw.view("<f4").astype(np.float32)


def _dequant_f16(raw, n):
    # IEEE half -> single is exact (subnormals included), which numpy does.
    return raw.view("<f2").astype(np.float32)


def _dequant_bf16(raw, n):
    # BF16 is the top 16 bits of an IEEE single (ggml widens by shifting the
    # 16-bit pattern left by 16 into a u32 and reinterpreting it).
    bits = raw.view("<u2").astype(np.uint32) << 16
    return bits.view(np.float32)


def _dequant_q8_0(raw, n):
    # ggml-common.h: block_q8_0 = { f16 d; int8 qs[32]; } -> 34 bytes.
    # ggml-quants.c dequantize_row_q8_0: y[j] = qs[j] * d.
    blocks = raw.reshape(-1, 34)
    d = _f16_column(blocks, 0)
    qs = blocks[:, 2:].view(np.int8).astype(np.float32)
    return (qs * d).reshape(-1)


def _dequant_q4_0(raw, n):
    # ggml-common.h: block_q4_0 = { f16 d; u8 qs[16]; } -> 18 bytes.
    # ggml-quants.c dequantize_row_q4_0: byte j holds element j in its low
    # nibble and element j+16 in its high nibble; value = (nibble - 8) * d.
    blocks = raw.reshape(-1, 18)
    d = _f16_column(blocks, 0)
    qs = blocks[:, 2:18]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    q = np.concatenate([lo, hi], axis=1).astype(np.float32)
    return (q * d).reshape(-1)


def _q4_k_scales_mins(sc_bytes):
    """Unpack the 12 scale bytes of a Q4_K block into 8 six-bit scales and 8 mins.

    Layout (ggml-quants.c get_scale_min_k4): for sub-blocks 0..3 the scale is
    the low 6 bits of byte j and the min the low 6 bits of byte j+4.  For
    sub-blocks 4..7 the low 4 bits come from byte j+4 (scale: low nibble,
    min: high nibble) and the top 2 bits come from the otherwise unused top
    2 bits of byte j-4 (scale) and byte j (min).
    """
    s = sc_bytes.astype(np.uint8)
    scales = np.empty((s.shape[0], 8), dtype=np.uint8)
    mins = np.empty((s.shape[0], 8), dtype=np.uint8)
    scales[:, 0:4] = s[:, 0:4] & 63
    mins[:, 0:4] = s[:, 4:8] & 63
    scales[:, 4:8] = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    mins[:, 4:8] = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    return scales, mins


def _dequant_q4_k(raw, n):
    # ggml-common.h: block_q4_K = { f16 d; f16 dmin; u8 scales[12]; u8 qs[128]; }
    # -> 144 bytes for 256 elements, 8 sub-blocks of 32.
    # ggml-quants.c dequantize_row_q4_K: the 256 outputs are produced in 4
    # chunks of 64 using 32 qs bytes each; the first 32 outputs of a chunk are
    # the low nibbles (sub-block 2c), the next 32 the high nibbles (sub-block
    # 2c+1).  value = (d*scale) * nibble - (dmin*min), in float32.
    blocks = raw.reshape(-1, 144)
    return _k_sub_blocks(blocks, _k_nibbles(blocks[:, 16:144]))


def _k_nibbles(qs):
    """(nb, 128) bytes of Q4_K/Q5_K -> (nb, 8, 32) nibbles: chunk c's bytes give sub-block 2c
    (low nibbles) and 2c + 1 (high nibbles)."""
    qs = qs.reshape(qs.shape[0], 4, 32)
    return np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(qs.shape[0], 8, 32).astype(np.int32)


def _k_sub_blocks(blocks, q):
    """Q4_K/Q5_K values from quants q (nb, 8, 32): f16 d and dmin at bytes 0 and 2, the packed
    scales and mins at bytes 4..15; value = (d*scale) * q - (dmin*min), in float32."""
    d = _f16_column(blocks, 0)
    dmin = _f16_column(blocks, 2)
    scales, mins = _q4_k_scales_mins(blocks[:, 4:16])
    d_sub = (d * scales.astype(np.float32))[:, :, None]
    m_sub = (dmin * mins.astype(np.float32))[:, :, None]
    return (d_sub * q.astype(np.float32) - m_sub).reshape(-1)


def _dequant_q6_k(raw, n):
    # ggml-common.h: block_q6_K = { u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d; }
    # -> 210 bytes for 256 elements.
    # ggml-quants.c dequantize_row_q6_K: the block is two halves of 128
    # outputs, each using 64 ql bytes and 32 qh bytes.  Within a half, for
    # l in 0..31:
    #   out[l]      = low  nibble of ql[l]    | bits 0-1 of qh[l] << 4
    #   out[l + 32] = low  nibble of ql[l+32] | bits 2-3 of qh[l] << 4
    #   out[l + 64] = high nibble of ql[l]    | bits 4-5 of qh[l] << 4
    #   out[l + 96] = high nibble of ql[l+32] | bits 6-7 of qh[l] << 4
    # each minus 32.  The scale index used works out to element_index // 16
    # (16 groups of 16).  value = (d * scale) * q, in float32, in that order.
    blocks = raw.reshape(-1, 210)
    nb = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(nb, 2, 64)
    qh = blocks[:, 128:192].reshape(nb, 2, 32)
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32)  # (nb, 16)
    d = _f16_column(blocks, 208)
    ql_a, ql_b = ql[:, :, 0:32], ql[:, :, 32:64]
    q = np.concatenate([
        (ql_a & 0x0F) | ((qh & 3) << 4),
        (ql_b & 0x0F) | (((qh >> 2) & 3) << 4),
        (ql_a >> 4) | (((qh >> 4) & 3) << 4),
        (ql_b >> 4) | (((qh >> 6) & 3) << 4),
    ], axis=2).astype(np.int16) - 32                       # (nb, 2, 128)
    q = q.reshape(nb, 16, 16).astype(np.float32)
    d_group = (d * scales)[:, :, None]
    return (d_group * q).reshape(-1)


def _split_nibbles(qs):
    """(nb, 16) bytes -> (nb, 32) 4-bit values: byte j gives element j (low nibble) and j+16 (high)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int32)


def _fifth_bits(qh_bytes):
    """(nb, 4) bytes read as one little-endian u32 per block -> (nb, 32) bits, bit j for element j."""
    word = qh_bytes.copy().view("<u4").astype(np.uint64)           # (nb, 1)
    return ((word >> np.arange(32, dtype=np.uint64)) & 1).astype(np.int32)


def _dequant_q4_1(raw, n):
    # ggml-common.h: block_q4_1 = { f16 d; f16 m; u8 qs[16]; } -> 20 bytes.
    # value = nibble * d + m, nibbles placed as in Q4_0.
    blocks = raw.reshape(-1, 20)
    d = _f16_column(blocks, 0)
    m = _f16_column(blocks, 2)
    return (_split_nibbles(blocks[:, 4:20]).astype(np.float32) * d + m).reshape(-1)


def _dequant_q5_0(raw, n):
    # block_q5_0 = { f16 d; u8 qh[4]; u8 qs[16]; } -> 22 bytes.
    # q = nibble | (bit j of the u32 qh) << 4; value = (q - 16) * d.
    blocks = raw.reshape(-1, 22)
    d = _f16_column(blocks, 0)
    q = _split_nibbles(blocks[:, 6:22]) | (_fifth_bits(blocks[:, 2:6]) << 4)
    return ((q - 16).astype(np.float32) * d).reshape(-1)


def _dequant_q5_1(raw, n):
    # block_q5_1 = { f16 d; f16 m; u8 qh[4]; u8 qs[16]; } -> 24 bytes; value = q * d + m.
    blocks = raw.reshape(-1, 24)
    d = _f16_column(blocks, 0)
    m = _f16_column(blocks, 2)
    q = _split_nibbles(blocks[:, 8:24]) | (_fifth_bits(blocks[:, 4:8]) << 4)
    return (q.astype(np.float32) * d + m).reshape(-1)


# The 16 signed levels of IQ4_NL / IQ4_XS (ggml-common.h kvalues_iq4nl).
IQ4NL_LEVELS = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                         1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)


def _dequant_iq4_nl(raw, n):
    # block_iq4_nl = { f16 d; u8 qs[16]; } -> 18 bytes; value = d * level[nibble].
    blocks = raw.reshape(-1, 18)
    d = _f16_column(blocks, 0)
    return (IQ4NL_LEVELS[_split_nibbles(blocks[:, 2:18])] * d).reshape(-1)


def _dequant_iq4_xs(raw, n):
    # block_iq4_xs = { f16 d; u16 scales_h; u8 scales_l[4]; u8 qs[128]; } -> 136 bytes, 8
    # sub-blocks of 32.  Sub-block j's 6-bit scale: low 4 bits from scales_l[j // 2] (low nibble
    # for even j), high 2 bits from bits 2j, 2j+1 of scales_h; multiplier = scale - 32.  Its 32
    # values use qs[16j : 16j + 16] placed as Q4_0 nibbles; value = d * (scale - 32) * level.
    blocks = raw.reshape(-1, 136)
    nb = blocks.shape[0]
    d = _f16_column(blocks, 0)                                        # (nb, 1)
    scales_h = blocks[:, 2:4].copy().view("<u2").astype(np.int32)     # (nb, 1)
    scales_l = blocks[:, 4:8].astype(np.int32)                        # (nb, 4)
    j = np.arange(8)
    low = (scales_l[:, j // 2] >> (4 * (j % 2))) & 0x0F               # (nb, 8)
    high = (scales_h >> (2 * j)) & 3
    mult = ((low | (high << 4)) - 32).astype(np.float32)              # (nb, 8)
    idx = _split_nibbles(blocks[:, 8:136].reshape(nb * 8, 16)).reshape(nb, 8, 32)
    return ((d * mult)[:, :, None] * IQ4NL_LEVELS[idx]).reshape(-1)


def _two_bit_fields(qs):
    """(nb, 64) bytes of Q2_K/Q3_K -> (nb, 256) two-bit values.

    Element e = 128*h + 32*j + r (h in 0..1, j in 0..3, r in 0..31) is bits 2j..2j+1 of byte
    32*h + r (ggml-quants.c dequantize_row_q2_K walks two halves of 128, four shifts each).
    """
    nb = qs.shape[0]
    halves = qs.reshape(nb, 2, 1, 32).astype(np.int32)
    shifts = (2 * np.arange(4)).reshape(1, 1, 4, 1)
    return ((halves >> shifts) & 3).reshape(nb, 256)


def _dequant_q2_k(raw, n):
    # block_q2_K = { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin; } -> 84 bytes, 16 groups of 16.
    # Group g = e // 16: scale = scales[g] & 15, min = scales[g] >> 4;
    # value = d * scale * q - dmin * min.
    blocks = raw.reshape(-1, 84)
    nb = blocks.shape[0]
    sc = blocks[:, 0:16].astype(np.int32)
    d = _f16_column(blocks, 80)
    dmin = _f16_column(blocks, 82)
    q = _two_bit_fields(blocks[:, 16:80]).reshape(nb, 16, 16).astype(np.float32)
    dl = (d * (sc & 15).astype(np.float32))[:, :, None]
    ml = (dmin * (sc >> 4).astype(np.float32))[:, :, None]
    return (dl * q - ml).reshape(-1)


def _dequant_q3_k(raw, n):
    # block_q3_K = { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d; } -> 110 bytes, 16 groups of 16.
    # Low 2 bits as in Q2_K; element e = 128h + 32j + r takes bit (4h + j) of hmask[r] as its
    # third bit, and the value is (low - (0 if that bit is set else 4)).
    # Scales (ggml-quants.c, the kmask unpacking of the 12 bytes): scale i has its low 4 bits in
    # the low nibble of byte i for i < 8, else the high nibble of byte i - 8; its high 2 bits are
    # bits 2*(i // 4) of byte 8 + i % 4.  Multiplier = scale - 32; value = d * multiplier * q.
    blocks = raw.reshape(-1, 110)
    nb = blocks.shape[0]
    hmask = blocks[:, 0:32].astype(np.int32)
    low = _two_bit_fields(blocks[:, 32:96])
    sb = blocks[:, 96:108].astype(np.int32)
    d = _f16_column(blocks, 108)
    i = np.arange(16)
    low_sc = np.where(i < 8, sb[:, i % 8] & 0x0F, sb[:, i % 8] >> 4)
    high_sc = (sb[:, 8 + i % 4] >> (2 * (i // 4))) & 3
    mult = ((low_sc | (high_sc << 4)) - 32).astype(np.float32)       # (nb, 16)
    e = np.arange(256)
    h, j, r = e // 128, (e % 128) // 32, e % 32
    bit = (hmask[:, r] >> (4 * h + j)) & 1                             # (nb, 256)
    q = (low - np.where(bit == 1, 0, 4)).reshape(nb, 16, 16).astype(np.float32)
    return ((d * mult)[:, :, None] * q).reshape(-1)


def _dequant_q5_k(raw, n):
    # block_q5_K = { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; } -> 176 bytes.
    # Scales/mins exactly as Q4_K (get_scale_min_k4).  Chunk c (64 outputs) uses qs[32c:32c+32]:
    # low nibbles for sub-block 2c, high nibbles for 2c+1; element e's fifth bit is bit e // 32
    # of qh[e % 32].  value = d * scale * q - dmin * min.
    blocks = raw.reshape(-1, 176)
    qh = blocks[:, 16:48].astype(np.int32)
    fifth = (qh[:, None, :] >> np.arange(8).reshape(1, 8, 1)) & 1     # (nb, 8, 32)
    return _k_sub_blocks(blocks, _k_nibbles(blocks[:, 48:176]) | (fifth << 4))


# type id -> (elements per block, bytes per block, dequantiser)
_TYPE_TABLE = {
    GGML_F32: (1, 4, _dequant_f32),
    GGML_F16: (1, 2, _dequant_f16),
    GGML_BF16: (1, 2, _dequant_bf16),
    GGML_Q8_0: (32, 34, _dequant_q8_0),
    GGML_Q4_0: (32, 18, _dequant_q4_0),
    GGML_Q4_K: (QK_K, 144, _dequant_q4_k),
    GGML_Q6_K: (QK_K, 210, _dequant_q6_k),
    GGML_Q4_1: (32, 20, _dequant_q4_1),
    GGML_Q5_0: (32, 22, _dequant_q5_0),
    GGML_Q5_1: (32, 24, _dequant_q5_1),
    GGML_IQ4_NL: (32, 18, _dequant_iq4_nl),
    GGML_Q2_K: (QK_K, 84, _dequant_q2_k),
    GGML_Q3_K: (QK_K, 110, _dequant_q3_k),
    GGML_Q5_K: (QK_K, 176, _dequant_q5_k),
    GGML_IQ4_XS: (QK_K, 136, _dequant_iq4_xs),
}


def tensor_nbytes(info):
    if info.ggml_type not in _TYPE_TABLE:
        raise UnsupportedTensorType(
            f"tensor {info.name!r}: ggml type {info.type_name} (id {info.ggml_type}) "
            "is not supported by this reference (supported: "
            + ", ".join(GGML_TYPE_NAMES[t] for t in sorted(_TYPE_TABLE)) + ")")
    block_elems, block_bytes, _ = _TYPE_TABLE[info.ggml_type]
    row = info.dims[0] if info.dims else 1
    if row % block_elems:
        raise GGUFError(f"tensor {info.name!r}: row length {row} is not a multiple of "
                        f"the {info.type_name} block size {block_elems}")
    return info.n_elements // block_elems * block_bytes


def dequantize(raw, ggml_type, n_elements):
    """Dequantise raw tensor bytes of a given ggml type to a flat float32 array."""
    if ggml_type not in _TYPE_TABLE:
        name = GGML_TYPE_NAMES.get(ggml_type, f"unknown({ggml_type})")
        raise UnsupportedTensorType(f"ggml type {name} (id {ggml_type}) is not supported")
    raw = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw
    out = _TYPE_TABLE[ggml_type][2](raw, n_elements)
    assert out.size == n_elements, (out.size, n_elements)
    return out


def read_gguf_header(path):
    with open(path, "rb") as f:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return parse_header(mm)


def read_gguf(path):
    """Read a GGUF file: returns (metadata dict, {name: float32 ndarray})."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise GGUFError(f"{path}: empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            header = parse_header(mm)
            tensors = {}
            for info in header.tensor_infos:
                if info.name in tensors:
                    raise GGUFError(f"duplicate tensor name {info.name!r}")
                if info.offset % header.alignment:
                    # The spec requires aligned offsets; we can still read it.
                    print(f"warning: tensor {info.name!r} offset {info.offset} is not "
                          f"a multiple of the alignment {header.alignment}", file=sys.stderr)
                nbytes = tensor_nbytes(info)
                start = header.data_start + info.offset
                if start + nbytes > size:
                    raise GGUFError(f"tensor {info.name!r} ({info.type_name}, dims "
                                    f"{info.dims}) runs past the end of the file")
                # Copy out of the mmap so the arrays outlive the mapping.
                raw = np.frombuffer(mm, dtype=np.uint8, count=nbytes, offset=start).copy()
                flat = dequantize(raw, info.ggml_type, info.n_elements)
                tensors[info.name] = flat.reshape(info.shape)
    return header.metadata, tensors


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

SUPPORTED_ARCHS = {"llama": "normal", "qwen2": "neox", "qwen3": "neox", "qwen2moe": "neox", "qwen3moe": "neox",
                   "gemma2": "neox", "gemma3": "neox", "phi3": "neox"}
# Sliding-window layers: gemma2 every other layer starting with layer 0, gemma3 five of every six
# (as llama.cpp's graphs), phi3 all of them when the file gives a window (as the published model
# does; llama.cpp currently leaves phi3's window out).
SLIDING_PERIOD = {"gemma2": 2, "gemma3": 6, "phi3": 0}
# Mixture-of-experts architectures, and whether the chosen experts' weights are renormalised to
# sum to 1 (llama.cpp's qwen3moe graph does; qwen2moe's does not).
MOE_NORMALIZES_WEIGHTS = {"qwen2moe": False, "qwen3moe": True}


class Hparams:
    pass


def _meta_int(meta, key, default=None, layer=None):
    if key not in meta:
        if default is None:
            raise GGUFError(f"missing required metadata key {key!r}")
        return default
    v = meta[key]
    # Some files store per-layer values as arrays (e.g. head_count_kv).
    if isinstance(v, list):
        if layer is None:
            raise GGUFError(f"metadata {key!r} is per-layer; a layer index is needed")
        v = v[layer]
    return int(v)


def hparams_from_metadata(meta, tensors):
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise GGUFError(f"unsupported architecture {arch!r} "
                        f"(supported: {', '.join(sorted(SUPPORTED_ARCHS))})")
    hp = Hparams()
    hp.arch = arch
    hp.rope_pairing = SUPPORTED_ARCHS[arch]
    a = arch + "."
    hp.n_embd = _meta_int(meta, a + "embedding_length")
    hp.n_layer = _meta_int(meta, a + "block_count")
    hp.n_ff = _meta_int(meta, a + "feed_forward_length", default=0)
    hp.n_head = [_meta_int(meta, a + "attention.head_count", layer=i) for i in range(hp.n_layer)]
    hp.n_head_kv = [
        _meta_int(meta, a + "attention.head_count_kv", default=hp.n_head[i], layer=i)
        for i in range(hp.n_layer)]
    n_head0 = hp.n_head[0] if hp.n_layer else 1
    hp.head_dim_k = _meta_int(meta, a + "attention.key_length", default=hp.n_embd // n_head0)
    hp.head_dim_v = _meta_int(meta, a + "attention.value_length", default=hp.n_embd // n_head0)
    # No default: guessing epsilon would silently shift every logit.
    key = a + "attention.layer_norm_rms_epsilon"
    if key not in meta:
        raise GGUFError(f"missing required metadata key {key!r}")
    hp.eps = float(meta[key])
    hp.freq_base = float(meta.get(a + "rope.freq_base", 10000.0))
    hp.n_expert_used = _meta_int(meta, a + "expert_used_count") if arch in MOE_NORMALIZES_WEIGHTS else 0
    hp.gemma = arch in ("gemma2", "gemma3")
    # Gemma 2 files without these keys get llama.cpp's defaults (window 4096, caps 50 and 30).
    gemma2 = arch == "gemma2"
    hp.sliding_window = int(meta.get(a + "attention.sliding_window", 4096 if gemma2 else 0)) \
        if arch in SLIDING_PERIOD else 0
    hp.sliding_period = SLIDING_PERIOD.get(arch, 0)
    hp.attn_softcap = float(meta.get(a + "attn_logit_softcapping", 50.0)) if gemma2 else 0.0
    hp.final_softcap = float(meta.get(a + "final_logit_softcapping", 30.0 if gemma2 else 0.0)) \
        if arch in ("gemma2", "gemma3") else 0.0
    # gemma3's sliding layers rotate with their own base (10000 unless the file says) and no scaling.
    hp.freq_base_sliding = float(meta.get(a + "rope.freq_base_swa", 10000.0)) if arch == "gemma3" else None
    n_head0 = hp.n_head[0] if hp.n_layer else 1
    wide = (arch == "gemma2" and hp.n_layer == 46) or (arch == "gemma3" and hp.n_layer == 62)
    hp.attn_scale = 1.0 / np.sqrt(hp.n_embd // n_head0 if wide else hp.head_dim_k)
    hp.rope_dims = _meta_int(meta, a + "rope.dimension_count", default=hp.head_dim_k)
    if hp.rope_dims > hp.head_dim_k or hp.rope_dims % 2:
        raise GGUFError(f"rope.dimension_count {hp.rope_dims} invalid for head dim {hp.head_dim_k}")

    scaling = meta.get(a + "rope.scaling.type")
    hp.rope_scale = 1.0  # positions are divided by this
    if scaling is None:
        # Older files carry only this key (gguf.md: a linear scale factor).
        if a + "rope.scale_linear" in meta:
            hp.rope_scale = float(meta[a + "rope.scale_linear"])
    elif scaling == "linear":
        hp.rope_scale = float(meta.get(a + "rope.scaling.factor", 1.0))
    elif scaling != "none":
        raise GGUFError(f"unsupported rope scaling type {scaling!r}")
    if hp.rope_scale == 0:
        hp.rope_scale = 1.0

    hp.rope_freqs = None
    if "rope_freqs.weight" in tensors:
        rf = np.asarray(tensors["rope_freqs.weight"], dtype=np.float64).reshape(-1)
        if rf.size != hp.rope_dims // 2:
            raise GGUFError(f"rope_freqs.weight has {rf.size} entries, expected "
                            f"{hp.rope_dims // 2}")
        hp.rope_freqs = rf
    return hp


def rope_inv_freq(rope_dims, freq_base, rope_freqs=None):
    j = np.arange(rope_dims // 2, dtype=np.float64)
    inv = freq_base ** (-2.0 * j / rope_dims)
    if rope_freqs is not None:
        inv = inv / rope_freqs
    return inv


def apply_rope(x, positions, rope_dims, pairing, inv_freq):
    """Rotate the first rope_dims dims of each head.

    x: (T, n_heads, head_dim) float64; positions: (T,) already scaled.
    pairing "normal": pair j = dims (2j, 2j+1); "neox": pair j = dims (j, j + rope_dims/2).
    """
    x = np.array(x, dtype=np.float64, copy=True)
    theta = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # (T, R/2)
    cos = np.cos(theta)[:, None, :]
    sin = np.sin(theta)[:, None, :]
    half = rope_dims // 2
    if pairing == "normal":
        a = x[:, :, 0:rope_dims:2].copy()
        b = x[:, :, 1:rope_dims:2].copy()
        x[:, :, 0:rope_dims:2] = a * cos - b * sin
        x[:, :, 1:rope_dims:2] = a * sin + b * cos
    elif pairing == "neox":
        a = x[:, :, 0:half].copy()
        b = x[:, :, half:rope_dims].copy()
        x[:, :, 0:half] = a * cos - b * sin
        x[:, :, half:rope_dims] = a * sin + b * cos
    else:
        raise ValueError(f"unknown rope pairing {pairing!r}")
    return x


def rms_norm(x, weight, eps):
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-x))


def gelu(x):
    """GELU in its tanh form, as ggml computes it."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


class _Weights:
    """float64 view of the tensors, converted lazily and once."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.cache = {}

    def __contains__(self, name):
        return name in self.tensors

    def get(self, name, shape=None):
        if name not in self.tensors:
            raise GGUFError(f"missing tensor {name!r}")
        if name not in self.cache:
            self.cache[name] = np.asarray(self.tensors[name], dtype=np.float64)
        w = self.cache[name]
        if shape is not None and w.shape != tuple(shape):
            raise GGUFError(f"tensor {name!r} has shape {w.shape}, expected {tuple(shape)}")
        return w

    def opt(self, name, shape=None):
        return self.get(name, shape) if name in self.tensors else None


def _as_parsed(path_or_parsed):
    if isinstance(path_or_parsed, (str, bytes, os.PathLike)):
        return read_gguf(path_or_parsed)
    meta, tensors = path_or_parsed
    return meta, tensors


def attention(q, k, v, n_head, n_head_kv, scale=None, window=0, softcap=0.0):
    """Causal grouped-query attention. q: (T, H, dk), k: (T, Hkv, dk), v: (T, Hkv, dv).

    Scores are q.k * scale (default 1/sqrt(dk)), soft-capped to softcap * tanh(score / softcap)
    when softcap > 0; with window > 0 a query at t sees only keys at t - window < s <= t.
    """
    if n_head % n_head_kv:
        raise GGUFError(f"n_head {n_head} not a multiple of n_head_kv {n_head_kv}")
    group = n_head // n_head_kv
    # Query head h reads kv head h // group.
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    T = q.shape[0]
    scores = np.einsum("thd,shd->hts", q, k) * (1.0 / np.sqrt(q.shape[2]) if scale is None else scale)
    if softcap > 0:
        scores = softcap * np.tanh(scores / softcap)
    t_idx = np.arange(T)[:, None]
    s_idx = np.arange(T)[None, :]
    future = s_idx > t_idx
    if window > 0:
        future = future | (t_idx - s_idx >= window)
    scores = np.where(future[None, :, :], -np.inf, scores)
    probs = softmax(scores, axis=-1)
    out = np.einsum("hts,shd->thd", probs, v)     # (T, H, dv)
    return out.reshape(T, -1)                     # heads concatenated in order


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def mixture_of_experts(W, p, n, hp, trace=None):
    """The FFN of a mixture-of-experts layer for normalised rows n (T, n_embd).

    Router: softmax over all experts of n @ ffn_gate_inp; each token keeps its n_expert_used most
    probable experts (ties: lower index), weighted by their probabilities (renormalised to sum 1
    for qwen3moe).  Expert e is a SiLU-gated FFN with the e-th slices of ffn_{gate,up,down}_exps
    (numpy shapes (E, ff, n_embd) and (E, n_embd, ff)).  qwen2moe adds a shared expert scaled by
    sigmoid(n . ffn_gate_inp_shexp).  `trace`, if given, gets the layer's routing margins: per
    token, the gap between the last chosen and the first unchosen router logit.
    """
    router = W.get(p + "ffn_gate_inp.weight")
    logits = n @ router.T                                          # (T, E)
    probs = softmax(logits, axis=-1)
    k = hp.n_expert_used
    order = np.argsort(-probs, axis=1, kind="stable")
    gate, up, down = W.get(p + "ffn_gate_exps.weight"), W.get(p + "ffn_up_exps.weight"), W.get(p + "ffn_down_exps.weight")
    out = np.zeros_like(n)
    for t in range(n.shape[0]):
        chosen = order[t, :k]
        weights = probs[t, chosen]
        if MOE_NORMALIZES_WEIGHTS[hp.arch]:
            weights = weights / weights.sum()
        for e, w in zip(chosen, weights):
            hidden = silu(gate[e] @ n[t]) * (up[e] @ n[t])
            out[t] += w * (down[e] @ hidden)
    if trace is not None and k < probs.shape[1]:
        ranked = np.take_along_axis(logits, order, axis=1)
        trace.append(ranked[:, k - 1] - ranked[:, k])
    if p + "ffn_gate_inp_shexp.weight" in W:
        scale = sigmoid(n @ W.get(p + "ffn_gate_inp_shexp.weight"))   # (T,)
        hidden = silu(n @ W.get(p + "ffn_gate_shexp.weight").T) * (n @ W.get(p + "ffn_up_shexp.weight").T)
        out = out + scale[:, None] * (hidden @ W.get(p + "ffn_down_shexp.weight").T)
    return out


def forward(path_or_parsed, tokens, trace=None):
    """Logits (float64, shape (len(tokens), n_vocab)) for tokens at positions 0..T-1.

    `trace`, a list, gets each mixture-of-experts layer's routing margins (see mixture_of_experts).
    """
    meta, tensors = _as_parsed(path_or_parsed)
    hp = hparams_from_metadata(meta, tensors)
    W = _Weights(tensors)

    tok_embd = W.get("token_embd.weight")
    n_vocab, n_embd = tok_embd.shape
    if n_embd != hp.n_embd:
        raise GGUFError(f"token_embd.weight width {n_embd} != embedding_length {hp.n_embd}")
    tokens = np.asarray(list(tokens), dtype=np.int64)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ValueError("tokens must be a non-empty 1-D sequence")
    if tokens.min() < 0 or tokens.max() >= n_vocab:
        raise ValueError(f"token id out of range [0, {n_vocab})")
    T = tokens.size

    inv_freq = rope_inv_freq(hp.rope_dims, hp.freq_base, hp.rope_freqs)
    positions = np.arange(T, dtype=np.float64) / hp.rope_scale
    dk, dv = hp.head_dim_k, hp.head_dim_v

    x = tok_embd[tokens]  # (T, n_embd)
    if hp.gemma:
        x = x * np.sqrt(n_embd)  # gemma scales the embedding by sqrt(width)
    inv_freq_sliding = None
    if hp.freq_base_sliding is not None:
        inv_freq_sliding = rope_inv_freq(hp.rope_dims, hp.freq_base_sliding)
    positions_unscaled = np.arange(T, dtype=np.float64)
    for il in range(hp.n_layer):
        p = f"blk.{il}."
        H, Hkv = hp.n_head[il], hp.n_head_kv[il]
        sliding = hp.sliding_window > 0 and (hp.sliding_period == 0 or il % hp.sliding_period < hp.sliding_period - 1)

        n = rms_norm(x, W.get(p + "attn_norm.weight", (n_embd,)), hp.eps)
        if p + "attn_qkv.weight" in W:
            # phi3: one matrix whose rows are q's, then k's, then v's.
            qkv = n @ W.get(p + "attn_qkv.weight", (H * dk + Hkv * dk + Hkv * dv, n_embd)).T
            q, k, v = qkv[:, :H * dk], qkv[:, H * dk:H * dk + Hkv * dk], qkv[:, H * dk + Hkv * dk:]
        else:
            q = n @ W.get(p + "attn_q.weight", (H * dk, n_embd)).T
            k = n @ W.get(p + "attn_k.weight", (Hkv * dk, n_embd)).T
            v = n @ W.get(p + "attn_v.weight", (Hkv * dv, n_embd)).T
        # Biases are a qwen2 feature, but applying them whenever present keeps
        # the reference honest if another file carries them too.
        for name, t, size in (("attn_q.bias", "q", H * dk), ("attn_k.bias", "k", Hkv * dk),
                              ("attn_v.bias", "v", Hkv * dv)):
            b = W.opt(p + name, (size,))
            if b is not None:
                if t == "q":
                    q = q + b
                elif t == "k":
                    k = k + b
                else:
                    v = v + b
        q = q.reshape(T, H, dk)
        k = k.reshape(T, Hkv, dk)
        v = v.reshape(T, Hkv, dv)

        # qwen3: per-head RMSNorm of q and k, after projection, before RoPE.
        q_norm = W.opt(p + "attn_q_norm.weight", (dk,))
        k_norm = W.opt(p + "attn_k_norm.weight", (dk,))
        if hp.arch in ("qwen3", "qwen3moe", "gemma3") and (q_norm is None or k_norm is None):
            raise GGUFError(f"qwen3 layer {il} lacks attn_q_norm/attn_k_norm")
        if q_norm is not None:
            q = rms_norm(q, q_norm, hp.eps)
        if k_norm is not None:
            k = rms_norm(k, k_norm, hp.eps)

        if sliding and inv_freq_sliding is not None:
            q = apply_rope(q, positions_unscaled, hp.rope_dims, hp.rope_pairing, inv_freq_sliding)
            k = apply_rope(k, positions_unscaled, hp.rope_dims, hp.rope_pairing, inv_freq_sliding)
        else:
            q = apply_rope(q, positions, hp.rope_dims, hp.rope_pairing, inv_freq)
            k = apply_rope(k, positions, hp.rope_dims, hp.rope_pairing, inv_freq)

        attn = attention(q, k, v, H, Hkv, scale=hp.attn_scale, window=hp.sliding_window if sliding else 0,
                         softcap=hp.attn_softcap)
        attn_out = attn @ W.get(p + "attn_output.weight", (n_embd, H * dv)).T
        if hp.gemma:  # gemma normalises each block's output again before the residual add
            attn_out = rms_norm(attn_out, W.get(p + "post_attention_norm.weight", (n_embd,)), hp.eps)
        h = x + attn_out

        n = rms_norm(h, W.get(p + "ffn_norm.weight", (n_embd,)), hp.eps)
        if hp.n_expert_used:
            x = h + mixture_of_experts(W, p, n, hp, trace)
            continue
        if p + "ffn_gate.weight" in W:
            gate = n @ W.get(p + "ffn_gate.weight").T
            up = n @ W.get(p + "ffn_up.weight", (gate.shape[1], n_embd)).T
        else:
            # phi3: ffn_up holds the gate rows, then the up rows.
            both = n @ W.get(p + "ffn_up.weight").T
            gate, up = both[:, :both.shape[1] // 2], both[:, both.shape[1] // 2:]
        act = gelu(gate) if hp.gemma else silu(gate)
        ffn_out = (act * up) @ W.get(p + "ffn_down.weight", (n_embd, gate.shape[1])).T
        if hp.gemma:
            ffn_out = rms_norm(ffn_out, W.get(p + "post_ffw_norm.weight", (n_embd,)), hp.eps)
        x = h + ffn_out

    x = rms_norm(x, W.get("output_norm.weight", (n_embd,)), hp.eps)
    out_w = W.opt("output.weight", (n_vocab, n_embd))
    if out_w is None:
        out_w = tok_embd  # tied embeddings
    logits = x @ out_w.T
    if hp.final_softcap > 0:
        logits = hp.final_softcap * np.tanh(logits / hp.final_softcap)
    return logits


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def _abbrev(value, limit=8):
    if isinstance(value, list):
        head = ", ".join(_abbrev(v, limit) for v in value[:limit])
        more = f", ... ({len(value)} total)" if len(value) > limit else ""
        return f"[{head}{more}]"
    if isinstance(value, str):
        s = value if len(value) <= 80 else value[:77] + "..."
        return repr(s)
    return repr(value)


def dump_meta(path, out=sys.stdout):
    header = read_gguf_header(path)
    print(f"GGUF version {header.version}, {len(header.metadata)} metadata keys, "
          f"{len(header.tensor_infos)} tensors, alignment {header.alignment}, "
          f"data at {header.data_start}", file=out)
    for key, value in header.metadata.items():
        vtype, etype = header.value_types[key]
        tname = GGUF_VALUE_TYPE_NAMES.get(vtype, str(vtype))
        if vtype == GGUF_ARRAY:
            tname = f"array<{GGUF_VALUE_TYPE_NAMES.get(etype, str(etype))}>[{len(value)}]"
        print(f"  {key} ({tname}) = {_abbrev(value)}", file=out)
    print("tensors:", file=out)
    for info in header.tensor_infos:
        print(f"  {info.name}: {info.type_name} dims={info.dims} shape={info.shape} "
              f"offset={info.offset}", file=out)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Reference GGUF reader / forward pass (numpy)")
    ap.add_argument("model", help="path to a .gguf file")
    ap.add_argument("--tokens", help="comma-separated token ids, e.g. 1,2,3")
    ap.add_argument("--out", help="where to np.save the float64 logits (T, n_vocab)")
    ap.add_argument("--dump-meta", action="store_true", help="print metadata and tensor infos")
    args = ap.parse_args(argv)

    if args.dump_meta:
        dump_meta(args.model)
    if args.tokens is not None:
        tokens = [int(t) for t in args.tokens.replace(" ", "").split(",") if t != ""]
        logits = forward(args.model, tokens)
        if args.out:
            np.save(args.out, logits)
        else:
            np.set_printoptions(precision=6, suppress=False, linewidth=120)
            print(logits)
    elif not args.dump_meta:
        ap.error("nothing to do: give --tokens and/or --dump-meta")
    return 0


if __name__ == "__main__":
    sys.exit(main())
