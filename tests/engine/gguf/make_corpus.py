#!/usr/bin/python3
"""Writes the corpus of hand-made GGUF files that the test suite replays (tests/engine/gguf/corpus).

Files named ok_* must parse; bad_* must be rejected with an error containing the text listed for
it in corpus_expected_errors.tsv. Each one breaks exactly one rule of the format, so a regression
points at the check that went missing. Run it again after
adding a case; the output is deterministic.
"""
import os
import struct
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
EXPECTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_expected_errors.tsv")

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)


def s(text):
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def kv(key, vtype, payload):
    return s(key) + struct.pack("<I", vtype) + payload


def header(version=3, n_tensors=0, n_kv=0, magic=b"GGUF"):
    return magic + struct.pack("<IQQ", version, n_tensors, n_kv)


def tensor_info(name, dims, ggml_type, offset):
    return s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset)


def pad(data, alignment=32):
    return data + b"\0" * ((alignment - len(data) % alignment) % alignment)


def with_tensor(info, tensor_bytes, n_tensors=1, extra_kv=b"", n_kv=0):
    return pad(header(3, n_tensors, n_kv) + extra_kv + info) + tensor_bytes


name_kv = kv("general.name", STRING, s("corpus"))
f32_tensor = struct.pack("<4f", 1, 2, 3, 4)

# name: (bytes, the error message must contain this; None for files that must parse)
cases = {
    "ok_minimal_v3.gguf": (header(3, 0, 1) + name_kv, None),
    "ok_minimal_v2.gguf": (header(2, 0, 1) + name_kv, None),
    "ok_f32_tensor.gguf": (with_tensor(tensor_info("t", [4], 0, 0), f32_tensor), None),
    "ok_nested_array.gguf": (header(3, 0, 1) + kv("a", ARRAY, struct.pack("<IQ", ARRAY, 1) + struct.pack("<IQ", U8, 2) + b"\1\2"), None),
    "bad_empty.gguf": (b"", "shorter than its magic"),
    "bad_magic.gguf": (header(magic=b"GGML"), "wrong magic"),
    "bad_version_1.gguf": (header(1), "version 1 is not supported"),
    "bad_version_big_endian.gguf": (b"GGUF" + struct.pack(">I", 3) + struct.pack("<QQ", 0, 0), "big-endian"),
    "bad_version_99.gguf": (header(99), "unknown GGUF version 99"),
    "bad_truncated_header.gguf": (header()[:10], "truncated"),
    "bad_kv_count_huge.gguf": (header(3, 0, 1 << 60) + name_kv, "metadata count"),
    "bad_tensor_count_huge.gguf": (header(3, 1 << 60, 0), "tensor count"),
    "bad_string_length_huge.gguf": (header(3, 0, 1) + struct.pack("<Q", 1 << 62) + b"key" + b"\0" * 10, "claims"),
    "bad_value_type_unknown.gguf": (header(3, 0, 1) + kv("x", 13, b"\0" * 8), "unknown value type 13"),
    "bad_array_type_unknown.gguf": (header(3, 0, 1) + kv("x", ARRAY, struct.pack("<IQ", 77, 1) + b"\0" * 8), "unknown array element type 77"),
    "bad_array_count_huge.gguf": (header(3, 0, 1) + kv("x", ARRAY, struct.pack("<IQ", U32, 1 << 61)), "more than the file can hold"),
    "bad_array_too_deep.gguf": (header(3, 0, 1) + kv("x", ARRAY, struct.pack("<IQ", ARRAY, 1) * 9 + struct.pack("<IQ", U8, 0)), "too deeply"),
    "bad_bool_value.gguf": (header(3, 0, 1) + kv("flag", BOOL, b"\2"), "bool with value 2"),
    "bad_duplicate_key.gguf": (header(3, 0, 2) + name_kv + name_kv, "duplicate metadata key"),
    "bad_truncated_value.gguf": (header(3, 0, 1) + kv("x", U64, b"\1\2\3"), "truncated"),
    "bad_tensor_zero_dim.gguf": (with_tensor(tensor_info("t", [0], 0, 0), b""), "zero-length dimension"),
    "bad_tensor_five_dims.gguf": (with_tensor(tensor_info("t", [1, 1, 1, 1, 4], 0, 0), f32_tensor), "5 dimensions"),
    "bad_tensor_type_unknown.gguf": (with_tensor(tensor_info("t", [4], 99, 0), f32_tensor), "unknown tensor type 99"),
    "bad_tensor_misaligned.gguf": (with_tensor(tensor_info("t", [4], 0, 4), f32_tensor * 2), "not aligned"),
    "bad_tensor_past_end.gguf": (with_tensor(tensor_info("t", [4], 0, 0), f32_tensor[:12]), "truncated file: tensor 't'"),
    "bad_tensor_offset_huge.gguf": (with_tensor(tensor_info("t", [4], 0, 1 << 63), f32_tensor), "truncated file: tensor 't'"),
    "bad_tensor_elements_overflow.gguf": (with_tensor(tensor_info("t", [1 << 40, 1 << 40], 0, 0), f32_tensor), "impossible element count"),
    "bad_tensor_partial_block.gguf": (with_tensor(tensor_info("t", [33], 8, 0), b"\0" * 68), "not a multiple of its block size"),
    "bad_duplicate_tensor.gguf": (pad(header(3, 2, 0) + tensor_info("t", [4], 0, 0) + tensor_info("t", [4], 0, 32)) + f32_tensor * 16, "duplicate tensor"),
    "bad_truncated_tensor_info.gguf": (header(3, 1, 0) + tensor_info("t", [4], 0, 0)[:-5], "truncated"),
    "bad_alignment_zero.gguf": (header(3, 0, 1) + kv("general.alignment", U32, struct.pack("<I", 0)), "power of two"),
    "bad_alignment_not_power_of_two.gguf": (header(3, 0, 1) + kv("general.alignment", U32, struct.pack("<I", 48)), "power of two"),
    "bad_alignment_wrong_type.gguf": (header(3, 0, 1) + kv("general.alignment", STRING, s("32")), "power of two"),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (data, _) in sorted(cases.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    # What each bad file's error must say, read by the test; kept outside the corpus folder,
    # which the fuzzer also uses as its seed corpus.
    with open(EXPECTED, "w") as f:
        for name, (_, expected) in sorted(cases.items()):
            if expected is not None:
                f.write(f"{name}\t{expected}\n")
    print(f"wrote {len(cases)} files to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
