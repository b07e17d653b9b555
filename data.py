"""The training and eval tokens: download (WikiText) or read local text files (plain or .xz),
GPT-2 tokenization cached on disk under a hash of the source, the training sampler and the
fixed eval windows. Input problems are ConfigError, one line naming the fix."""
from __future__ import annotations

import hashlib
import lzma
import os
import socket
import sys
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch

from config import ConfigError
from runlog import atomic_write, atomic_write_bytes

WIKITEXT_ZIPS = {"wikitext-103": "https://wikitext.smerity.com/wikitext-103-raw-v1.zip",
                 "wikitext-2": "https://wikitext.smerity.com/wikitext-2-raw-v1.zip"}
DATASETS_HOST = "huggingface.co"  # where `datasets` downloads WikiText from
# Offline, the download fails once a host has not answered for this long, not after
# `datasets`' retries (26 s).
PROBE_TIMEOUT_S = 5
TIKTOKEN_HINT = ("set TIKTOKEN_CACHE_DIR to a folder holding tiktoken's gpt2 files "
                 "(e.g. TIKTOKEN_CACHE_DIR=../shared/data/tiktoken)")
OFFLINE_HINT = ("train on local text files with --data-dir DIR, a folder with one train and one valid "
                "file, plain or .xz (e.g. --data-dir ../shared/data/books), on a CPU with --preset "
                f"cpu-small, and {TIKTOKEN_HINT}")


def read_text(path: Path) -> str:
    """A text file, plain or .xz, checked for the problems users actually hit."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
        if path.suffix == ".xz":
            raw = lzma.decompress(raw)
    except (OSError, lzma.LZMAError) as e:
        raise ConfigError(f"{path}: cannot read ({e})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); convert it to UTF-8")
    if not text.strip():
        raise ConfigError(f"{path}: file is empty")
    return text


def find_split(folder: Path, split: str) -> Path:
    if not folder.is_dir():
        raise ConfigError(f"--data-dir {folder}: no such folder")
    found = sorted(f for f in folder.iterdir() if f.is_file() and split in f.name.lower())
    if len(found) != 1:
        what = "no file" if not found else f"{len(found)} files ({', '.join(f.name for f in found)})"
        raise ConfigError(f"--data-dir {folder}: {what} with '{split}' in its name; "
                          f"put exactly one {split} file (plain or .xz) there")
    return found[0]


def reachable(host: str) -> bool:
    """Whether host answers on the HTTPS port within PROBE_TIMEOUT_S."""
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def download_wikitext(name: str, cache_dir: Path) -> dict[str, str]:
    """Raw WikiText splits through `datasets`, else the official zip (kept in cache_dir).
    Without network the error comes at once, naming the offline way to train."""
    zip_path = cache_dir / f"{name}-raw-v1.zip"
    hosts = (DATASETS_HOST, urllib.parse.urlparse(WIKITEXT_ZIPS[name]).hostname)
    if not zip_path.exists() and not any(reachable(host) for host in hosts):
        raise ConfigError(f"cannot download {name}: no network ({' and '.join(hosts)} did not answer); "
                          f"offline, {OFFLINE_HINT}")
    try:
        import datasets  # lazily: heavy, and absent on some GPU images
        parts = datasets.load_dataset("Salesforce/wikitext", f"{name}-raw-v1")
        return {split: "".join(parts[key]["text"]) for split, key in
                (("train", "train"), ("valid", "validation"))}
    except Exception as first_error:
        try:
            if not zip_path.exists():
                cache_dir.mkdir(parents=True, exist_ok=True)
                request = urllib.request.Request(WIKITEXT_ZIPS[name], headers={"User-Agent": "curl"})
                with urllib.request.urlopen(request, timeout=60) as response:
                    atomic_write_bytes(zip_path, response.read())
            with zipfile.ZipFile(zip_path) as z:
                return {split: z.read(f"{name}-raw/wiki.{split}.raw").decode("utf-8")
                        for split in ("train", "valid")}
        except Exception as e:
            raise ConfigError(f"cannot download {name} ({type(first_error).__name__}, then "
                              f"{type(e).__name__}: {e}); offline, {OFFLINE_HINT}")


def get_tokenizer():
    """tiktoken's gpt2 encoding; it downloads its two files on first use, into
    $TIKTOKEN_CACHE_DIR when set."""
    import tiktoken
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        folder = os.environ.get("TIKTOKEN_CACHE_DIR")
        where = f" are not in TIKTOKEN_CACHE_DIR={folder} and" if folder else ""
        raise ConfigError(f"cannot load the gpt2 tokenizer ({type(e).__name__}): its files{where} "
                          f"could not be downloaded; {TIKTOKEN_HINT}")


def tokenize(text: str) -> np.ndarray:
    """GPT-2 tokens of a text, batched across threads. Chunks are cut only where a space,
    tab or newline follows a non-space character: no GPT-2 pre-token spans that boundary,
    and the pre-tokenizer's lookaheads (\\s+(?!\\S), \\s++$) only ever act on whitespace
    before it, so the result equals encode_ordinary(text) (tests/test_trainer.py checks it).
    (Cutting after a newline is not safe: a chunk ending in a blank line would end in one
    whitespace token where the full text has two.)"""
    encoder = get_tokenizer()
    chunks, start, target = [], 0, 1 << 20
    while start < len(text):
        cut = start + target
        while cut < len(text) and not (text[cut] in " \t\n" and not text[cut - 1].isspace()):
            cut += 1
        chunks.append(text[start:cut])
        start = cut
    encoded = encoder.encode_ordinary_batch(chunks, num_threads=os.cpu_count() or 1)
    return np.fromiter((t for chunk in encoded for t in chunk), dtype=np.uint16)


def cached_tokens(key_bytes: bytes, text_fn, cache_dir: Path, label: str) -> np.ndarray:
    """Tokens cached on disk under a hash of the source bytes; a corrupt cache is rebuilt."""
    key = hashlib.sha256(b"gpt2-encode_ordinary-v2\0" + key_bytes).hexdigest()[:24]
    path = cache_dir / f"tokens-{key}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except Exception as e:
            print(f"warning: token cache {path} is corrupt ({type(e).__name__}); rebuilding",
                  file=sys.stderr)
    text = text_fn()
    print(f"tokenizing {label}, {len(text) / 1e6:.0f}M characters (once: the tokens are cached in "
          f"{cache_dir})", flush=True)
    tokens = tokenize(text)
    if len(tokens) < 2:
        raise ConfigError(f"{label}: fewer than 2 tokens")
    atomic_write(path, lambda file: np.save(file, tokens))
    return tokens


def file_tokens(path: Path, cache_dir: Path, max_chars: int = 0) -> np.ndarray:
    """The file's tokens, or those of its first max_chars characters (0: all of it)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e})")
    if not max_chars:
        return cached_tokens(raw, lambda: read_text(path), cache_dir, str(path))
    return cached_tokens(raw + f"\0first {max_chars} characters".encode(), lambda: read_text(path)[:max_chars],
                         cache_dir, f"the first {max_chars:,} characters of {path}")


def load_data(args) -> dict[str, np.ndarray]:
    """{'train': tokens, 'valid': tokens, NAME: tokens for each --eval-data}."""
    if args.data_dir:
        data = {split: file_tokens(find_split(args.data_dir, split), args.cache_dir,
                                   args.train_chars if split == "train" else 0)
                for split in ("train", "valid")}
    else:
        texts = None

        def text_of(split):
            nonlocal texts
            texts = texts or download_wikitext(args.data, args.cache_dir)
            return texts[split][:args.train_chars or None] if split == "train" else texts[split]
        first = f":first {args.train_chars}" if args.train_chars else ""
        data = {split: cached_tokens(f"{args.data}:{split}{first if split == 'train' else ''}".encode(),
                                     lambda s=split: text_of(s),
                                     args.cache_dir, f"{args.data} {split}")
                for split in ("train", "valid")}
    for name, path in args.eval_data.items():
        data[name] = file_tokens(path, args.cache_dir)
    for name, tokens in data.items():
        if len(tokens) <= args.max_seq_len + 1:
            raise ConfigError(f"{name} split has {len(tokens)} tokens, not more than one "
                              f"sequence of --max-seq-len {args.max_seq_len}: lower --max-seq-len")
    return data


class TrainSampler:
    """Uniformly random windows of the training tokens (hlb-gpt's sampler). The start
    indices come from a CPU generator, so a run draws the same windows on any device and
    resumes exactly from the generator's saved state."""

    def __init__(self, tokens: torch.Tensor, seed: int):
        self.tokens = tokens
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, batch_size: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.tokens) - seq_len - 1, (batch_size,), generator=self.generator)
        if self.tokens.is_cuda:  # a blocking copy would wait for every step already queued
            starts = starts.pin_memory().to(self.tokens.device, non_blocking=True)
        index = starts.to(self.tokens.device).unsqueeze(1) + torch.arange(seq_len + 1, device=self.tokens.device)
        windows = self.tokens[index].long()
        return windows[:, :-1], windows[:, 1:]


def eval_windows(tokens: torch.Tensor, eval_tokens: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed windows spread evenly over a validation split: the same in every eval of every
    run with the same --eval-tokens and --max-seq-len, so curves compare point by point."""
    count = max(1, min(eval_tokens // seq_len, (len(tokens) - 1) // seq_len))
    starts = torch.linspace(0, len(tokens) - seq_len - 1, count).long()
    index = starts.unsqueeze(1) + torch.arange(seq_len + 1)
    windows = tokens.cpu()[index].long().to(tokens.device)
    return windows[:, :-1], windows[:, 1:]

