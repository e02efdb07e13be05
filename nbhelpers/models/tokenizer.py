"""The real CLIP tokenizer, built offline from the BPE merges file OpenAI published with CLIP.

``data/bpe_simple_vocab_16e6.txt.gz`` is the file shipped in the ``openai-clip`` package on PyPI (MIT
licence, see ``data/NOTICE``). From it we build ``vocab.json`` and ``merges.txt`` the same way the Hugging
Face conversion did, so the ids equal those of the tokenizer in every SD v1.x repository
(vocabulary 49408, start 49406, end 49407).
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from transformers import CLIPTokenizer

from nbhelpers.atomic import atomic_folder

CLIP_VOCAB_SIZE = 49408
CLIP_BOS_ID = 49406
CLIP_EOS_ID = 49407
CLIP_MAX_LENGTH = 77
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode character table (256 entries)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Return CLIP's ``token -> id`` vocabulary (49408 entries) and its BPE merges (48894 lines)."""
    raw = resources.files("nbhelpers").joinpath("data").joinpath(_BPE_FILE).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # 48894 merges, as in CLIP's simple_tokenizer
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"CLIP vocabulary has {len(tokens)} entries, expected {CLIP_VOCAB_SIZE}")
    return {token: index for index, token in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: str | Path) -> Path:
    """Write a ``tokenizer/`` folder laid out like the SD v1.x hub repos' (vocab.json, merges.txt, configs).

    Returns the folder path. ``CLIPTokenizer.from_pretrained(folder)`` loads it on transformers 4.x and 5.x.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special_tokens = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens, indent=2), encoding="utf-8")
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CLIP_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special_tokens,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
    return folder


def load_clip_tokenizer(cache_folder: str | Path) -> CLIPTokenizer:
    """Load the CLIP tokenizer from ``cache_folder``, writing it there first (atomically) if needed."""
    cache_folder = Path(cache_folder)
    if not (cache_folder / "vocab.json").exists():
        with atomic_folder(cache_folder, keep_existing=True) as staging:
            write_clip_tokenizer(staging)
    return CLIPTokenizer.from_pretrained(cache_folder)
